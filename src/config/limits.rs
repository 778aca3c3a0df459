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
}

/// Notes whether `limits` differs.
pub(super) fn limits_changes(old: &Limits, new: &Limits, changes: &mut Changes) {
    let Limits { max_body_size } = old;
    changes.note(LIMITS, max_body_size, &new.max_body_size);
}

/// `rate_limits`: the push and upload-byte limits, each `None` when not set.
pub(super) fn rate_limit_settings(
    v: &Validator,
    rate_limits: file::RateLimitsFile,
) -> Result<(Option<PushLimit>, Option<UploadBytesLimit>), ConfigError> {
    let file::RateLimitsFile { push, upload_bytes } = rate_limits;
    Ok((
        push.map(|p| push_limit(v, p)).transpose()?,
        upload_bytes.map(|u| upload_limit(v, u)).transpose()?,
    ))
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
