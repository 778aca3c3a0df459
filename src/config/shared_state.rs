//! `shared_state`: Redis for limits shared by several edge instances.

use std::time::Duration;

use super::choices::OnUnavailable;
use super::error::ConfigError;
use super::file;
use super::keys::key_table;
use super::validate::Validator;

/// `shared_state.redis`: limits kept in Redis so several instances act as one.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// May carry a password: never printed (see the `Debug` impl).
    pub url: String,
    pub key_prefix: String,
    pub timeout: Duration,
    pub on_unavailable: OnUnavailable,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &"<redacted>")
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("on_unavailable", &self.on_unavailable)
            .finish()
    }
}

key_table! {
    // The Redis connection is opened at start.
    pub(super) SHARED_STATE = AtRestart("shared_state");
}

pub(super) fn redis_settings(
    v: &Validator,
    redis: file::RedisFile,
) -> Result<RedisSettings, ConfigError> {
    let file::RedisFile {
        url,
        key_prefix,
        timeout,
        on_unavailable,
    } = redis;
    if let Err(e) = redis::IntoConnectionInfo::into_connection_info(url.as_str()) {
        // The error text never includes the URL, which may hold a password.
        return Err(v.invalid(
            "shared_state.redis.url",
            format!("not a redis:// or rediss:// URL ({e})"),
        ));
    }
    let timeout = v.nonzero_duration(
        "shared_state.redis.timeout",
        timeout.as_deref(),
        Duration::from_millis(50),
    )?;
    let on_unavailable = on_unavailable.unwrap_or_default();
    Ok(RedisSettings {
        url,
        key_prefix: key_prefix.unwrap_or_else(|| "registry-edge:".to_string()),
        timeout,
        on_unavailable,
    })
}
