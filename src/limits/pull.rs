//! Pull limits (`rate_limits.pull`), as Docker Hub counts pulls: manifest `GET`s (not
//! `HEAD`s, not blobs), anonymous ones per client address (IPv6 per /64, which one host
//! usually holds whole), logged-in ones per account.
//!
//! Every counted answer says where the client stands, in Docker Hub's documented headers
//! (`../shared/reference/observed-behaviour.md`): `RateLimit-Limit: 100;w=3600`,
//! `RateLimit-Remaining: 76;w=3600` and `Docker-RateLimit-Source` (the address or the
//! account). `w` is the seconds the budget takes to refill from empty (`burst` cells at
//! `per_hour`), so `RateLimit-Limit` is the burst. Over the limit: 429 `TOOMANYREQUESTS`
//! with `Retry-After`.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};

use super::budget::{Budget, Rate, Take};
use super::retry_after_seconds;
use crate::config::{PullBudget, PullLimit};
use crate::shared_state::SharedState;

/// Where a counted pull stands: what the headers say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullStanding {
    /// The budget's burst (`RateLimit-Limit`).
    pub limit: u32,
    /// Whole pulls left now (`RateLimit-Remaining`).
    pub remaining: u32,
    /// Seconds the budget takes to refill from empty (`w=`).
    pub window: u64,
    /// The address (IPv6: its /64) or the account counted (`Docker-RateLimit-Source`).
    pub source: String,
}

impl PullStanding {
    /// The answer headers, in Docker Hub's form.
    pub fn headers(&self) -> [(&'static str, String); 3] {
        let window = self.window;
        [
            ("RateLimit-Limit", format!("{};w={window}", self.limit)),
            (
                "RateLimit-Remaining",
                format!("{};w={window}", self.remaining),
            ),
            ("Docker-RateLimit-Source", self.source.clone()),
        ]
    }
}

/// The outcome for one manifest `GET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullAdmission {
    /// Not limited: an exempt account, or a class without a budget.
    Unlimited,
    Admitted(PullStanding),
    Limited {
        retry_after: u64,
        standing: PullStanding,
    },
}

/// One class's budget and how its headers describe it.
struct ClassBudget<C: Clock> {
    budget: Budget<C>,
    limit: u32,
    window: u64,
}

impl<C: Clock + Clone> ClassBudget<C> {
    fn new(
        prefix: &'static str,
        config: PullBudget,
        shared: Option<Arc<SharedState>>,
        clock: C,
    ) -> Self {
        let rate = Rate::Hour(config.per_hour);
        let budget = Budget::with_clock("pull", prefix, rate, config.burst, shared, clock);
        let window =
            (u64::from(config.burst.get()) * 3600).div_ceil(u64::from(config.per_hour.get()));
        ClassBudget {
            budget,
            limit: config.burst.get(),
            window,
        }
    }

    async fn admit(&self, source: String) -> PullAdmission {
        let standing = |remaining| PullStanding {
            limit: self.limit,
            remaining,
            window: self.window,
            source: source.clone(),
        };
        match self.budget.take(&source, NonZeroU32::MIN).await {
            Take::Admitted { remaining, .. } => PullAdmission::Admitted(standing(remaining)),
            Take::Refused { wait } => PullAdmission::Limited {
                retry_after: retry_after_seconds(wait),
                standing: standing(0),
            },
            // Pulls are never refused for want of Redis: this budget counts locally then.
            Take::Unavailable => PullAdmission::Unlimited,
        }
    }
}

/// `rate_limits.pull` in force.
pub struct PullLimiter<C: Clock = DefaultClock> {
    config: PullLimit,
    anonymous: Option<ClassBudget<C>>,
    authenticated: Option<ClassBudget<C>>,
}

impl PullLimiter<DefaultClock> {
    /// Counts in Redis first when `shared` is given (`shared_state.redis`), locally while
    /// it is unavailable (pulls are not refused for want of Redis, whatever
    /// `on_unavailable` says: it guards pushes).
    pub fn new(config: PullLimit, shared: Option<Arc<SharedState>>) -> Self {
        Self::with_clock(config, shared, DefaultClock::default())
    }
}

impl<C: Clock + Clone> PullLimiter<C> {
    /// Like [`PullLimiter::new`] with the local clock given (tests).
    pub(crate) fn with_clock(
        config: PullLimit,
        shared: Option<Arc<SharedState>>,
        clock: C,
    ) -> Self {
        let class = |prefix, budget: Option<PullBudget>| {
            budget.map(|b| ClassBudget::new(prefix, b, shared.clone(), clock.clone()))
        };
        PullLimiter {
            anonymous: class("pull-anonymous", config.anonymous),
            authenticated: class("pull-account", config.authenticated),
            config,
        }
    }

    pub(crate) fn config(&self) -> &PullLimit {
        &self.config
    }

    /// Counts one manifest `GET` by `account` (`None` or `""`: anonymous) from `client`.
    pub async fn admit(&self, account: Option<&str>, client: IpAddr) -> PullAdmission {
        match account.filter(|a| !a.is_empty()) {
            Some(account) if self.config.exempt_accounts.contains(account) => {
                PullAdmission::Unlimited
            }
            Some(account) => match &self.authenticated {
                Some(class) => class.admit(account.to_string()).await,
                None => PullAdmission::Unlimited,
            },
            None => match &self.anonymous {
                Some(class) => class.admit(address_key(client)).await,
                None => PullAdmission::Unlimited,
            },
        }
    }

    /// Drops keys whose budget has fully refilled.
    pub(crate) fn purge(&self) {
        for class in [&self.anonymous, &self.authenticated].into_iter().flatten() {
            class.budget.purge();
        }
    }
}

/// The key an anonymous client is counted under: its IPv4 address, or its IPv6 /64 as
/// `2001:db8:1:2::/64` (an IPv4-mapped IPv6 address counts as the IPv4 one).
pub(crate) fn address_key(client: IpAddr) -> String {
    match client {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                format!("{}/64", Ipv6Addr::from(prefix))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use std::time::Duration;

    fn limit() -> PullLimit {
        let budget = |per_hour, burst| PullBudget {
            per_hour: NonZeroU32::new(per_hour).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        };
        PullLimit {
            anonymous: Some(budget(100, 2)),
            authenticated: Some(budget(1000, 3)),
            exempt_accounts: ["ci-deploy".to_string()].into(),
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[tokio::test]
    async fn anonymous_by_address_and_slash_64_then_retry_after() {
        let clock = FakeRelativeClock::default();
        let limiter = PullLimiter::with_clock(limit(), None, clock.clone());
        let first = limiter.admit(None, ip("2001:db8:1:2::1")).await;
        let PullAdmission::Admitted(standing) = first else {
            panic!("{first:?}")
        };
        assert_eq!(
            standing.headers(),
            [
                ("RateLimit-Limit", "2;w=72".to_string()),
                ("RateLimit-Remaining", "1;w=72".to_string()),
                ("Docker-RateLimit-Source", "2001:db8:1:2::/64".to_string()),
            ]
        );
        // Another address of the same /64 shares the budget; `""` is anonymous too.
        let second = limiter.admit(Some(""), ip("2001:db8:1:2:ffff::9")).await;
        assert!(matches!(
            second,
            PullAdmission::Admitted(PullStanding { remaining: 0, .. })
        ));
        let third = limiter.admit(None, ip("2001:db8:1:2::1")).await;
        let PullAdmission::Limited {
            retry_after,
            standing,
        } = third
        else {
            panic!("{third:?}")
        };
        assert_eq!(retry_after, 36, "one pull per 36 s at 100 per hour");
        assert_eq!(standing.remaining, 0);
        // Another /64 and an IPv4 address have their own budgets.
        for other in ["2001:db8:1:3::1", "192.0.2.1"] {
            assert!(matches!(
                limiter.admit(None, ip(other)).await,
                PullAdmission::Admitted(_)
            ));
        }
        clock.advance(Duration::from_secs(36));
        assert!(matches!(
            limiter.admit(None, ip("2001:db8:1:2::1")).await,
            PullAdmission::Admitted(_)
        ));
    }

    #[tokio::test]
    async fn accounts_have_their_own_budget_and_exempt_ones_none() {
        let limiter = PullLimiter::with_clock(limit(), None, FakeRelativeClock::default());
        for remaining in [2, 1, 0] {
            let admitted = limiter.admit(Some("alice"), ip("192.0.2.1")).await;
            let PullAdmission::Admitted(standing) = admitted else {
                panic!("{admitted:?}")
            };
            assert_eq!(standing.remaining, remaining);
            assert_eq!(standing.source, "alice");
            assert_eq!(
                standing.window, 11,
                "3 pulls at 1000 per hour: 10.8 s, rounded up"
            );
        }
        assert!(matches!(
            limiter.admit(Some("alice"), ip("192.0.2.1")).await,
            PullAdmission::Limited { .. }
        ));
        // The address alice used still has its anonymous budget.
        assert!(matches!(
            limiter.admit(None, ip("192.0.2.1")).await,
            PullAdmission::Admitted(_)
        ));
        for _ in 0..10 {
            assert_eq!(
                limiter.admit(Some("ci-deploy"), ip("192.0.2.1")).await,
                PullAdmission::Unlimited
            );
        }
    }

    #[test]
    fn address_keys() {
        assert_eq!(address_key(ip("10.1.2.3")), "10.1.2.3");
        assert_eq!(address_key(ip("::ffff:10.1.2.3")), "10.1.2.3");
        assert_eq!(address_key(ip("fd00:1:2:3:4:5:6:7")), "fd00:1:2:3::/64");
        assert_eq!(address_key(ip("::1")), "::/64");
    }
}
