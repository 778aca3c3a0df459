//! `limits` and `rate_limits`: body size, push starts, upload bytes.

use std::collections::HashSet;
use std::num::NonZeroU32;

use super::choices::LimitKey;
use super::error::ConfigError;
use super::file;
use super::keys::{key_table, Changes};
use super::validate::Validator;

/// `limits`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// `None` = unlimited.
    pub max_body_size: Option<u64>,
}

key_table! {
    // Read per request.
    LIMITS = Live("limits");
    // A changed limit gets a new limiter on reload (`Settings::new` compares whole values).
    pub(super) PUSH = Live("rate_limits.push");
    pub(super) UPLOAD_BYTES = Live("rate_limits.upload_bytes");
    pub(super) PULL = Live("rate_limits.pull");
}

/// Notes whether `limits` differs.
pub(super) fn limits_changes(old: &Limits, new: &Limits, changes: &mut Changes) {
    let Limits { max_body_size } = old;
    changes.note(LIMITS, max_body_size, &new.max_body_size);
}

/// `rate_limits`, each limit `None` when not set.
pub(super) struct RateLimitSettings {
    pub push: Option<PushLimit>,
    pub upload_bytes: Option<UploadBytesLimit>,
    pub pull: Option<PullLimit>,
}

/// `rate_limits`: the push, upload-byte and pull limits.
pub(super) fn rate_limit_settings(
    v: &Validator,
    rate_limits: file::RateLimitsFile,
) -> Result<RateLimitSettings, ConfigError> {
    let file::RateLimitsFile {
        push,
        upload_bytes,
        pull,
    } = rate_limits;
    Ok(RateLimitSettings {
        push: push.map(|p| push_limit(v, p)).transpose()?,
        upload_bytes: upload_bytes.map(|u| upload_limit(v, u)).transpose()?,
        pull: pull.map(|p| pull_limit(v, p)).transpose()?,
    })
}

fn pull_limit(v: &Validator, pull: file::PullLimitFile) -> Result<PullLimit, ConfigError> {
    let file::PullLimitFile {
        anonymous,
        authenticated,
        exempt_accounts,
    } = pull;
    let budget = |class: &str, budget: Option<file::PullBudgetFile>| {
        let Some(file::PullBudgetFile { per_hour, burst }) = budget else {
            return Ok(None);
        };
        let key = |field: &str| format!("rate_limits.pull.{class}.{field}");
        let per_hour = NonZeroU32::new(per_hour)
            .ok_or_else(|| v.invalid(key("per_hour"), "must be at least 1"))?;
        let burst = match burst {
            None => per_hour,
            Some(b) => {
                NonZeroU32::new(b).ok_or_else(|| v.invalid(key("burst"), "must be at least 1"))?
            }
        };
        // The refill time must stay well inside the limiter's arithmetic (nanoseconds in
        // a u64): a year is more than any operator means.
        let refill = u64::from(burst.get()) * 3600 / u64::from(per_hour.get());
        if refill > 365 * 24 * 3600 {
            return Err(v.invalid(
                key("burst"),
                format!("{burst} at {per_hour} per hour takes over a year to refill; lower burst"),
            ));
        }
        Ok(Some(PullBudget { per_hour, burst }))
    };
    if let Some(empty) = exempt_accounts.iter().find(|a| a.is_empty()) {
        return Err(v.invalid(
            "rate_limits.pull.exempt_accounts",
            format!(
                "{empty:?}: an account name must not be empty (anonymous pulls are never exempt)"
            ),
        ));
    }
    Ok(PullLimit {
        anonymous: budget("anonymous", anonymous)?,
        authenticated: budget("authenticated", authenticated)?,
        exempt_accounts: exempt_accounts.into_iter().collect(),
    })
}

fn upload_limit(
    v: &Validator,
    upload: file::UploadBytesFile,
) -> Result<UploadBytesLimit, ConfigError> {
    let file::UploadBytesFile {
        key,
        per_second,
        burst,
    } = upload;
    let key = key.unwrap_or_default();
    let per_second = NonZeroU32::new(per_second)
        .ok_or_else(|| v.invalid("rate_limits.upload_bytes.per_second", "must be at least 1"))?;
    let burst = match burst {
        None => per_second,
        Some(b) => NonZeroU32::new(b)
            .ok_or_else(|| v.invalid("rate_limits.upload_bytes.burst", "must be at least 1"))?,
    };
    Ok(UploadBytesLimit {
        key,
        per_second,
        burst,
    })
}

fn push_limit(v: &Validator, push: file::PushLimitFile) -> Result<PushLimit, ConfigError> {
    let file::PushLimitFile {
        key,
        per_minute,
        burst,
        exempt_accounts,
    } = push;
    let key = key.unwrap_or_default();
    let per_minute = NonZeroU32::new(per_minute)
        .ok_or_else(|| v.invalid("rate_limits.push.per_minute", "must be at least 1"))?;
    let burst = match burst {
        None => per_minute,
        Some(b) => NonZeroU32::new(b)
            .ok_or_else(|| v.invalid("rate_limits.push.burst", "must be at least 1"))?,
    };
    Ok(PushLimit {
        key,
        per_minute,
        burst,
        exempt_accounts: exempt_accounts.into_iter().collect(),
    })
}

/// `rate_limits.push`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushLimit {
    pub key: LimitKey,
    pub per_minute: NonZeroU32,
    pub burst: NonZeroU32,
    pub exempt_accounts: HashSet<String>,
}

/// `rate_limits.upload_bytes`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadBytesLimit {
    pub key: LimitKey,
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

/// `rate_limits.pull`, validated: a budget per class, `None` = that class unlimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullLimit {
    /// Anonymous manifest `GET`s, per client address (IPv6 per /64).
    pub anonymous: Option<PullBudget>,
    /// Logged-in manifest `GET`s, per account.
    pub authenticated: Option<PullBudget>,
    pub exempt_accounts: HashSet<String>,
}

/// One class's pull budget: `burst` at once, refilling at `per_hour`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullBudget {
    pub per_hour: NonZeroU32,
    pub burst: NonZeroU32,
}
