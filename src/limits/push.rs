//! Push-start rate limits (`rate_limits.push`), keyed by account (the token subject;
//! anonymous requests fall back to the client IP) or by client IP.
//!
//! Only push STARTS count (`POST …/blobs/uploads/`, `PUT …/manifests/…`), so a limit
//! never cuts a body stream already admitted and pulls are never counted. Refusals are
//! 429 `TOOMANYREQUESTS` with `Retry-After` and Docker Hub style `RateLimit-Limit` /
//! `RateLimit-Remaining` (`600;w=60`).

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};

use super::budget::{Budget, Rate, Take};
use super::retry_after_seconds;
use crate::config::{OnUnavailable, PushLimit};
use crate::shared_state::SharedState;

/// The outcome for one push start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Exempt,
    Admitted {
        remaining: u32,
        /// What to give back if the edge refuses the push after all.
        counted: Counted,
    },
    Limited {
        retry_after: u64,
    },
    /// The shared budget cannot be asked and `on_unavailable: deny` is set.
    Unavailable,
}

/// One push start counted against a key ([`PushLimiter::give_back`] returns it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    key: String,
    /// What the budget said when it counted it.
    taken: Take,
}

/// `rate_limits.push` in force.
pub struct PushLimiter<C: Clock = DefaultClock> {
    config: PushLimit,
    budget: Budget<C>,
}

impl PushLimiter<DefaultClock> {
    /// Counts in Redis first when `shared` is given (`shared_state.redis`), locally only as
    /// the fallback (or not at all under `on_unavailable: deny`).
    pub fn new(config: PushLimit, shared: Option<Arc<SharedState>>) -> Self {
        Self::with_clock(config, shared, DefaultClock::default())
    }
}

impl<C: Clock + Clone> PushLimiter<C> {
    /// Like [`PushLimiter::new`] with the local clock given (tests).
    pub(crate) fn with_clock(
        config: PushLimit,
        shared: Option<Arc<SharedState>>,
        clock: C,
    ) -> Self {
        let deny = shared
            .as_ref()
            .is_some_and(|s| s.on_unavailable() == OnUnavailable::Deny);
        let rate = Rate::Minute(config.per_minute);
        let budget = Budget::with_clock("push", "push", rate, config.burst, shared, clock)
            .deny_when_unavailable(deny);
        PushLimiter { config, budget }
    }

    pub(crate) fn config(&self) -> &PushLimit {
        &self.config
    }

    /// The key a request is counted under.
    pub(crate) fn key_for(&self, subject: Option<&str>, client_ip: &str) -> String {
        self.config.key.key_for(subject, client_ip)
    }

    /// Counts one push start.
    pub async fn admit(&self, subject: Option<&str>, client_ip: &str) -> Admission {
        if subject.is_some_and(|s| self.config.exempt_accounts.contains(s)) {
            return Admission::Exempt;
        }
        let key = self.key_for(subject, client_ip);
        match self.budget.take(&key, NonZeroU32::MIN).await {
            taken @ Take::Admitted { remaining, .. } => Admission::Admitted {
                remaining,
                counted: Counted { key, taken },
            },
            Take::Refused { wait } => Admission::Limited {
                retry_after: retry_after_seconds(wait),
            },
            Take::Unavailable => Admission::Unavailable,
        }
    }

    /// Gives back a push start the edge refused after counting it (a manifest refused by
    /// `policy` once its body arrived, a body over a limit, a node that could not be
    /// reached): only pushes the registry answered use the budget.
    pub(crate) async fn give_back(&self, counted: &Counted) {
        self.budget.give_back(&counted.key, counted.taken).await;
    }

    /// `RateLimit-Limit` value: `600;w=60`.
    pub(crate) fn limit_header(&self) -> String {
        format!("{};w=60", self.config.per_minute)
    }

    /// Drops keys whose budget has fully refilled.
    pub(crate) fn purge(&self) {
        self.budget.purge();
    }

    #[cfg(test)]
    pub(crate) fn tracked_keys(&self) -> usize {
        self.budget.tracked_keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LimitKey;
    use governor::clock::FakeRelativeClock;
    use std::time::Duration;

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
        let limiter = PushLimiter::with_clock(limit(60, 3, LimitKey::Account), None, clock.clone());
        let mut admitted = Vec::new();
        for _ in 0..3 {
            match limiter.admit(Some("alice"), "10.0.0.1").await {
                Admission::Admitted { remaining, .. } => admitted.push(remaining),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(admitted, [2, 1, 0]);
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

    #[tokio::test]
    async fn a_push_given_back_is_not_counted() {
        let clock = FakeRelativeClock::default();
        let limiter = PushLimiter::with_clock(limit(60, 2, LimitKey::Account), None, clock);
        let counted = |admission| match admission {
            Admission::Admitted { remaining, counted } => (remaining, counted),
            other => panic!("{other:?}"),
        };
        let (first, refused) = counted(limiter.admit(Some("alice"), "10.0.0.1").await);
        assert_eq!(first, 1);
        limiter.give_back(&refused).await;
        // The budget is as if the refused push never happened: two more pass, not one.
        let (second, _) = counted(limiter.admit(Some("alice"), "10.0.0.1").await);
        assert_eq!(second, 1, "the given-back cell is used first");
        let (third, _) = counted(limiter.admit(Some("alice"), "10.0.0.1").await);
        assert_eq!(third, 0);
        assert!(matches!(
            limiter.admit(Some("alice"), "10.0.0.1").await,
            Admission::Limited { .. }
        ));
    }

    #[tokio::test]
    async fn refusals_given_back_never_add_up_to_more_than_the_burst() {
        let clock = FakeRelativeClock::default();
        let limiter = PushLimiter::with_clock(limit(1, 2, LimitKey::Account), None, clock);
        let admit = || limiter.admit(Some("mallory"), "10.0.0.9");
        // Push, be refused, get it back; again and again, two at a time.
        for _ in 0..5 {
            let (first, second) = (admit().await, admit().await);
            for admission in [first, second] {
                match admission {
                    Admission::Admitted { counted, .. } => limiter.give_back(&counted).await,
                    other => panic!("{other:?}"),
                }
            }
        }
        // Still only the burst of two, then the limit.
        assert!(matches!(admit().await, Admission::Admitted { .. }));
        assert!(matches!(admit().await, Admission::Admitted { .. }));
        assert!(matches!(admit().await, Admission::Limited { .. }));
    }

    #[test]
    fn anonymous_falls_back_to_the_client_ip() {
        let limiter = PushLimiter::new(limit(60, 1, LimitKey::Account), None);
        assert_eq!(limiter.key_for(Some(""), "1.2.3.4"), "ip:1.2.3.4");
        assert_eq!(limiter.key_for(None, "1.2.3.4"), "ip:1.2.3.4");
        assert_eq!(limiter.key_for(Some("alice"), "1.2.3.4"), "account:alice");
        let by_ip = PushLimiter::new(limit(60, 1, LimitKey::ClientIp), None);
        assert_eq!(by_ip.key_for(Some("alice"), "1.2.3.4"), "ip:1.2.3.4");
    }

    #[tokio::test]
    async fn memory_is_bounded_by_purging_idle_keys() {
        let clock = FakeRelativeClock::default();
        let limiter =
            PushLimiter::with_clock(limit(600, 100, LimitKey::ClientIp), None, clock.clone());
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
