//! Rate limits, all on one core (`budget::Budget`): a keyed GCRA budget counted in Redis
//! first (`shared_state.redis`, so a fleet counts against one budget) and in this process
//! (the governor crate) while Redis is unavailable.
//!
//! - `budget`: the core — Redis first, governor fallback, the fallback metric, blocking after
//!   a refusal, purging idle keys.
//! - `push`: `rate_limits.push`, counted per push start; 429 with `Retry-After`; a push the
//!   edge refuses after counting it is given back.
//! - `pull`: `rate_limits.pull`, counted per manifest `GET` (Docker Hub's pull), per
//!   address or account, with Docker Hub's headers on every counted answer.
//! - `upload`: `rate_limits.upload_bytes`, holding request bodies back (never refusing).
//! - `logins`: `auth.failed_logins`, blocking a client IP or an account after failures.
//!
//! Every limiter survives a reload whose own settings did not change (`settings`), and all
//! are purged by the same minute task (`settings::LimiterPurge`).

pub(crate) mod budget;
pub mod logins;
pub mod pull;
pub mod push;
pub mod upload;

use std::time::Duration;

pub use logins::LoginThrottle;
pub use pull::{PullAdmission, PullLimiter, PullStanding};
pub use push::{Admission, Counted, PushLimiter};
pub use upload::UploadThrottle;

/// A `Retry-After` value: whole seconds, rounded up and at least 1 (a client told 0 would
/// retry at once).
pub(crate) fn retry_after_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_at_least_one_second() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_seconds(Duration::from_millis(2001)), 3);
    }
}
