//! Upload byte budgets (`rate_limits.upload_bytes`): cells are bytes. Over budget a stream
//! is held — the edge stops reading, so TCP/h2 flow control slows the client — never failed:
//! it was already admitted. Shared budgets are never refused for want of Redis either.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use super::budget::{Budget, Rate, Take};
use crate::config::UploadBytesLimit;
use crate::shared_state::SharedState;

/// Bytes taken from a shared (Redis) upload budget at a time; a stream may end holding up
/// to this much unused.
const SHARED_BLOCK: u32 = 1 << 20;

/// `rate_limits.upload_bytes` in force.
pub struct UploadThrottle {
    config: UploadBytesLimit,
    budget: Budget,
}

impl UploadThrottle {
    /// Budgets in Redis first when `shared` is given (`shared_state.redis`); while it is
    /// unavailable, streams are throttled per instance.
    pub fn new(config: UploadBytesLimit, shared: Option<Arc<SharedState>>) -> Self {
        let rate = Rate::Second(config.per_second);
        let budget = Budget::new("upload_bytes", "upload", rate, config.burst, shared);
        UploadThrottle { config, budget }
    }

    pub(crate) fn config(&self) -> &UploadBytesLimit {
        &self.config
    }

    /// Waits until `key` may send `bytes` more; returns how long it waited. `credit`:
    /// bytes this stream has already taken from the shared budget and not yet sent.
    pub(crate) async fn throttle(&self, key: &str, bytes: usize, credit: &mut u64) -> Duration {
        let burst = self.config.burst.get();
        let mut waited = Duration::ZERO;
        let mut left = bytes as u64;
        let prepaid = left.min(*credit);
        *credit -= prepaid;
        left -= prepaid;
        // A chunk larger than the burst is taken in burst-sized pieces.
        while left > 0 {
            let piece = left.min(u64::from(burst)) as u32;
            let mut local = !self.budget.has_shared();
            if !local {
                // Shared budgets are taken a block at a time: one Redis round trip per MiB
                // of upload rather than one per chunk; the rest is the stream's credit.
                let block = piece.max(SHARED_BLOCK.min(burst));
                loop {
                    match self.budget.take_shared(key, cells(block)).await {
                        Some(Take::Admitted { .. }) => {
                            *credit += u64::from(block - piece);
                            break;
                        }
                        Some(Take::Refused { wait }) => {
                            tokio::time::sleep(wait).await;
                            waited += wait;
                        }
                        // Redis is unavailable (one fallback counted): this piece is
                        // taken here, without credit.
                        Some(Take::Unavailable) | None => {
                            local = true;
                            break;
                        }
                    }
                }
            }
            while local {
                match self.budget.take_local(key, cells(piece)) {
                    Take::Admitted { .. } | Take::Unavailable => local = false,
                    Take::Refused { wait } => {
                        tokio::time::sleep(wait).await;
                        waited += wait;
                    }
                }
            }
            left -= u64::from(piece);
        }
        waited
    }

    /// Drops keys whose budget has fully refilled.
    pub(crate) fn purge(&self) {
        self.budget.purge();
    }
}

/// At least one cell: a piece is never empty, but a zero must not reach governor.
fn cells(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LimitKey;

    #[tokio::test]
    async fn upload_throttle_holds_streams_over_budget() {
        let limit = UploadBytesLimit {
            key: LimitKey::Account,
            per_second: NonZeroU32::new(1 << 20).unwrap(),
            burst: NonZeroU32::new(1 << 20).unwrap(),
        };
        let throttle = UploadThrottle::new(limit, None);
        assert_eq!(
            throttle.throttle("k", 1 << 20, &mut 0).await,
            Duration::ZERO,
            "the burst passes at once"
        );
        let waited = throttle.throttle("k", 256 << 10, &mut 0).await;
        assert!(waited > Duration::ZERO, "over budget, the stream is held");
        assert_eq!(
            throttle.throttle("other", 64 << 10, &mut 0).await,
            Duration::ZERO,
            "keys are independent"
        );
    }
}
