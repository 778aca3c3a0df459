//! Push-start rate limits (`rate_limits.push`): governor GCRA limiters keyed by account
//! (the token subject; anonymous requests fall back to the client IP) or by client IP.
//!
//! Only push STARTS count (`POST …/blobs/uploads/`, `PUT …/manifests/…`), so a limit
//! never cuts a body stream already admitted and pulls are never counted. Refusals are
//! 429 `TOOMANYREQUESTS` with `Retry-After` (whole seconds until a cell is free) and
//! Docker Hub style `RateLimit-Limit` / `RateLimit-Remaining` (`600;w=60`).
//!
//! Memory: a key idle for longer than it takes its budget to refill is indistinguishable
//! from a new key, so [`PushLimiter::purge`] (run every minute) drops it; a flood of
//! distinct client addresses costs memory for at most one refill period.
//!
//! With `shared_state.redis` the same GCRA runs in Redis (`shared_state`), so every
//! instance counts against one budget; the local limiters are the fallback while Redis
//! is unavailable.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::config::OnUnavailable;
use crate::shared_state::{self, SharedState};

/// What a push limit is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKey {
    /// The token subject; anonymous requests use the client IP.
    Account,
    ClientIp,
}

impl LimitKey {
    /// The limiter key for a request: `account:NAME`, or `ip:ADDR` (also for anonymous).
    pub fn key_for(self, subject: Option<&str>, client_ip: &str) -> String {
        match (self, subject) {
            (LimitKey::Account, Some(account)) if !account.is_empty() => {
                format!("account:{account}")
            }
            _ => format!("ip:{client_ip}"),
        }
    }
}

/// `rate_limits.push`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushLimit {
    pub key: LimitKey,
    pub per_minute: NonZeroU32,
    pub burst: NonZeroU32,
    pub exempt_accounts: HashSet<String>,
}

/// The outcome for one push start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Exempt,
    Admitted {
        remaining: u32,
    },
    Limited {
        retry_after: u64,
    },
    /// The shared budget cannot be asked and `on_unavailable: deny` is set.
    Unavailable,
}

type Limiter<C> = RateLimiter<String, DashMapStateStore<String>, C, StateInformationMiddleware>;

pub struct PushLimiter<C: Clock = DefaultClock> {
    config: PushLimit,
    limiter: Limiter<C>,
    clock: C,
    shared: Option<Arc<SharedState>>,
}

impl PushLimiter<DefaultClock> {
    pub fn new(config: PushLimit) -> Self {
        Self::with_clock(config, DefaultClock::default())
    }
}

impl<C: Clock + Clone> PushLimiter<C> {
    pub fn with_clock(config: PushLimit, clock: C) -> Self {
        let quota = Quota::per_minute(config.per_minute).allow_burst(config.burst);
        let limiter = RateLimiter::dashmap_with_clock(quota, clock.clone())
            .with_middleware::<StateInformationMiddleware>();
        PushLimiter {
            config,
            limiter,
            clock,
            shared: None,
        }
    }

    /// Counts in Redis first (`shared_state.redis`), locally only as the fallback.
    pub fn shared(mut self, shared: Option<Arc<SharedState>>) -> Self {
        self.shared = shared;
        self
    }

    pub fn config(&self) -> &PushLimit {
        &self.config
    }

    /// The key a request is counted under.
    pub fn key_for(&self, subject: Option<&str>, client_ip: &str) -> String {
        self.config.key.key_for(subject, client_ip)
    }

    /// Counts one push start.
    pub async fn admit(&self, subject: Option<&str>, client_ip: &str) -> Admission {
        if subject.is_some_and(|s| self.config.exempt_accounts.contains(s)) {
            return Admission::Exempt;
        }
        let key = self.key_for(subject, client_ip);
        if let Some(shared) = &self.shared {
            let quota = shared_state::Quota {
                per_cell: Duration::from_secs(60) / self.config.per_minute.get(),
                burst: self.config.burst.get(),
            };
            match shared.check(&format!("push:{key}"), quota, 1).await {
                Some(decision) if decision.admitted => {
                    return Admission::Admitted {
                        remaining: decision.remaining,
                    }
                }
                Some(decision) => {
                    return Admission::Limited {
                        retry_after: whole_seconds(decision.wait),
                    }
                }
                None => {
                    shared_state::record_fallback("push");
                    if shared.on_unavailable() == OnUnavailable::Deny {
                        return Admission::Unavailable;
                    }
                }
            }
        }
        match self.limiter.check_key(&key) {
            Ok(snapshot) => Admission::Admitted {
                remaining: snapshot.remaining_burst_capacity(),
            },
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Admission::Limited {
                    retry_after: whole_seconds(wait),
                }
            }
        }
    }

    /// `RateLimit-Limit` value: `600;w=60`.
    pub fn limit_header(&self) -> String {
        format!("{};w=60", self.config.per_minute)
    }

    /// Drops keys whose budget has fully refilled (they behave like new keys).
    pub fn purge(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    pub fn tracked_keys(&self) -> usize {
        self.limiter.len()
    }
}

/// `rate_limits.upload_bytes`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadBytesLimit {
    pub key: LimitKey,
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

/// Bytes taken from a shared (Redis) upload budget at a time; a stream may end holding up
/// to this much unused.
const SHARED_BLOCK: u32 = 1 << 20;

/// A per-key byte budget for request bodies (cells are bytes). Over budget, the stream
/// is held — the edge stops reading, so TCP/h2 flow control slows the client — never failed.
pub struct UploadThrottle {
    config: UploadBytesLimit,
    limiter: RateLimiter<String, DashMapStateStore<String>, DefaultClock>,
    shared: Option<Arc<SharedState>>,
}

impl UploadThrottle {
    pub fn new(config: UploadBytesLimit) -> Self {
        let quota = Quota::per_second(config.per_second).allow_burst(config.burst);
        UploadThrottle {
            limiter: RateLimiter::dashmap_with_clock(quota, DefaultClock::default()),
            config,
            shared: None,
        }
    }

    /// Budgets in Redis first (`shared_state.redis`); while it is unavailable, streams
    /// are throttled per instance (never refused: they are already admitted).
    pub fn shared(mut self, shared: Option<Arc<SharedState>>) -> Self {
        self.shared = shared;
        self
    }

    /// Takes `cells` bytes from the shared budget, waiting as Redis says;
    /// `None` when Redis is unavailable.
    async fn take_shared(&self, key: &str, cells: u32) -> Option<Duration> {
        let shared = self.shared.as_ref()?;
        let quota = shared_state::Quota {
            per_cell: Duration::from_secs(1) / self.config.per_second.get(),
            burst: self.config.burst.get(),
        };
        let mut waited = Duration::ZERO;
        loop {
            let decision = shared.check(&format!("upload:{key}"), quota, cells).await?;
            if decision.admitted {
                return Some(waited);
            }
            tokio::time::sleep(decision.wait).await;
            waited += decision.wait;
        }
    }

    pub fn config(&self) -> &UploadBytesLimit {
        &self.config
    }

    /// Waits until `key` may send `bytes` more; returns how long it waited. `credit`:
    /// bytes this stream has already taken from the shared budget and not yet sent.
    pub async fn throttle(&self, key: &str, bytes: usize, credit: &mut u64) -> Duration {
        let burst = u64::from(self.config.burst.get());
        let local_key = key.to_string();
        let mut waited = Duration::ZERO;
        let mut left = bytes as u64;
        let prepaid = left.min(*credit);
        *credit -= prepaid;
        left -= prepaid;
        // A chunk larger than the burst is taken in burst-sized pieces.
        while left > 0 {
            let piece = left.min(burst) as u32;
            if self.shared.is_some() {
                // Shared budgets are taken a block at a time: one Redis round trip per MiB
                // of upload rather than one per chunk.
                let block = piece.max(SHARED_BLOCK.min(burst as u32));
                if let Some(shared_wait) = self.take_shared(key, block).await {
                    waited += shared_wait;
                    *credit += u64::from(block - piece);
                    left -= u64::from(piece);
                    continue;
                }
                shared_state::record_fallback("upload_bytes");
            }
            let cells = NonZeroU32::new(piece).unwrap_or(NonZeroU32::MIN);
            loop {
                match self.limiter.check_key_n(&local_key, cells) {
                    Ok(Ok(())) => break,
                    Ok(Err(not_until)) => {
                        let wait = not_until.wait_time_from(DefaultClock::default().now());
                        tokio::time::sleep(wait).await;
                        waited += wait;
                    }
                    // Cannot happen: pieces never exceed the burst.
                    Err(_) => break,
                }
            }
            left -= u64::from(piece);
        }
        waited
    }

    pub fn purge(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// Rounded up, and at least 1: a client told 0 would retry at once.
fn whole_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn limit(per_minute: u32, burst: u32, key: LimitKey) -> PushLimit {
        PushLimit {
            key,
            per_minute: NonZeroU32::new(per_minute).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
            exempt_accounts: ["ci-bot".to_string()].into(),
        }
    }

    #[tokio::test]
    async fn burst_then_retry_after_then_refill() {
        let clock = FakeRelativeClock::default();
        let limiter = PushLimiter::with_clock(limit(60, 3, LimitKey::Account), clock.clone());
        let mut admitted = Vec::new();
        for _ in 0..3 {
            admitted.push(limiter.admit(Some("alice"), "10.0.0.1").await);
        }
        assert_eq!(
            admitted,
            [
                Admission::Admitted { remaining: 2 },
                Admission::Admitted { remaining: 1 },
                Admission::Admitted { remaining: 0 }
            ]
        );
        assert_eq!(
            limiter.admit(Some("alice"), "10.0.0.1").await,
            Admission::Limited { retry_after: 1 }
        );
        assert!(
            matches!(
                limiter.admit(Some("bob"), "10.0.0.1").await,
                Admission::Admitted { .. }
            ),
            "other accounts are independent"
        );
        assert_eq!(
            limiter.admit(Some("ci-bot"), "10.0.0.1").await,
            Admission::Exempt
        );
        clock.advance(Duration::from_secs(1));
        assert!(matches!(
            limiter.admit(Some("alice"), "10.0.0.1").await,
            Admission::Admitted { .. }
        ));
        assert_eq!(limiter.limit_header(), "60;w=60");
    }

    #[test]
    fn anonymous_falls_back_to_the_client_ip() {
        let limiter = PushLimiter::new(limit(60, 1, LimitKey::Account));
        assert_eq!(limiter.key_for(Some(""), "1.2.3.4"), "ip:1.2.3.4");
        assert_eq!(limiter.key_for(None, "1.2.3.4"), "ip:1.2.3.4");
        assert_eq!(limiter.key_for(Some("alice"), "1.2.3.4"), "account:alice");
        let by_ip = PushLimiter::new(limit(60, 1, LimitKey::ClientIp));
        assert_eq!(by_ip.key_for(Some("alice"), "1.2.3.4"), "ip:1.2.3.4");
    }

    #[tokio::test]
    async fn upload_throttle_holds_streams_over_budget() {
        let throttle = UploadThrottle::new(UploadBytesLimit {
            key: LimitKey::Account,
            per_second: NonZeroU32::new(1 << 20).unwrap(),
            burst: NonZeroU32::new(1 << 20).unwrap(),
        });
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

    #[tokio::test]
    async fn memory_is_bounded_by_purging_idle_keys() {
        let clock = FakeRelativeClock::default();
        let limiter = PushLimiter::with_clock(limit(600, 100, LimitKey::ClientIp), clock.clone());
        for i in 0..100_000u32 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string();
            assert!(matches!(
                limiter.admit(None, &ip).await,
                Admission::Admitted { .. }
            ));
        }
        assert_eq!(limiter.tracked_keys(), 100_000);
        limiter.purge();
        assert_eq!(
            limiter.tracked_keys(),
            100_000,
            "keys still inside their window stay"
        );
        // After a full refill period (burst / rate = 100 / 10 per second), every key is idle.
        clock.advance(Duration::from_secs(10));
        limiter.purge();
        assert_eq!(limiter.tracked_keys(), 0);
    }
}
