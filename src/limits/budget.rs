//! The one limiter core: a keyed GCRA budget, Redis first, governor as the fallback.
//!
//! Failure modes: while Redis does not answer (`shared_state` marks it unavailable after its
//! timeout, and nobody waits for it until its probe succeeds) every decision is made in this
//! process and counted in `registry_edge_shared_state_fallbacks_total{limit}`; a fleet then
//! admits up to N times the budget. A budget built with `deny_when_unavailable` refuses
//! instead ([`Take::Unavailable`]): the push limiter under `on_unavailable: deny`.
//!
//! Memory: a key idle for longer than it takes its budget to refill is indistinguishable
//! from a new key, so [`Budget::purge`] (every minute) drops it, and drops expired blocks; a
//! flood of distinct keys costs memory for at most one refill period.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::metrics::metrics;
use crate::shared_state::{self, SharedState};

type Local<C> = RateLimiter<String, DashMapStateStore<String>, C, StateInformationMiddleware>;

/// How fast a budget refills: `n` cells per second or per minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rate {
    PerSecond(NonZeroU32),
    PerMinute(NonZeroU32),
}

/// What a budget said about some cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    /// Taken; `remaining` whole cells are left at once.
    Admitted { remaining: u32 },
    /// Not taken; they would be after `wait`.
    Refused { wait: Duration },
    /// No decision: Redis is unavailable and this budget refuses rather than count
    /// locally, or more cells were asked for than the burst holds.
    Unavailable,
}

/// A keyed GCRA budget. `name` labels its fallbacks; `prefix` starts its Redis keys
/// (`{prefix}:{key}`, after `shared_state.redis.key_prefix`).
pub(crate) struct Budget<C: Clock = DefaultClock> {
    name: &'static str,
    prefix: &'static str,
    shared_quota: shared_state::Quota,
    local: Local<C>,
    clock: C,
    shared: Option<Arc<SharedState>>,
    deny_when_unavailable: bool,
    /// Keys blocked by [`Budget::fail`] until the instant given (kept in this process).
    blocked: Mutex<HashMap<String, Instant>>,
}

impl Budget<DefaultClock> {
    /// A budget of `burst` cells refilling at `rate`, shared through `shared` when given.
    pub(crate) fn new(
        name: &'static str,
        prefix: &'static str,
        rate: Rate,
        burst: NonZeroU32,
        shared: Option<Arc<SharedState>>,
    ) -> Self {
        Self::with_clock(name, prefix, rate, burst, shared, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Budget<C> {
    /// Like [`Budget::new`] with the local clock given (tests).
    pub(crate) fn with_clock(
        name: &'static str,
        prefix: &'static str,
        rate: Rate,
        burst: NonZeroU32,
        shared: Option<Arc<SharedState>>,
        clock: C,
    ) -> Self {
        let (quota, per_cell) = match rate {
            Rate::PerSecond(n) => (Quota::per_second(n), Duration::from_secs(1) / n.get()),
            Rate::PerMinute(n) => (Quota::per_minute(n), Duration::from_secs(60) / n.get()),
        };
        let local = RateLimiter::dashmap_with_clock(quota.allow_burst(burst), clock.clone())
            .with_middleware::<StateInformationMiddleware>();
        Budget {
            name,
            prefix,
            shared_quota: shared_state::Quota {
                per_cell,
                burst: burst.get(),
            },
            local,
            clock,
            shared,
            deny_when_unavailable: false,
            blocked: Mutex::new(HashMap::new()),
        }
    }

    /// While Redis is unavailable, answer [`Take::Unavailable`] instead of counting locally.
    pub(crate) fn deny_when_unavailable(mut self, deny: bool) -> Self {
        self.deny_when_unavailable = deny;
        self
    }

    /// Whether decisions go to Redis (configured and answering).
    pub(crate) fn is_shared(&self) -> bool {
        self.shared.as_ref().is_some_and(|s| s.is_up())
    }

    /// Takes `cells` from `key`'s budget.
    pub(crate) async fn take(&self, key: &str, cells: NonZeroU32) -> Take {
        self.take_blocking(key, cells, false).await
    }

    /// Counts one failure against `key`; when it finds the budget spent, `key` is blocked
    /// for the wait ([`Budget::blocked_for`]).
    pub(crate) async fn fail(&self, key: &str) {
        if let Take::Refused { wait } = self.take_blocking(key, NonZeroU32::MIN, true).await {
            let until = Instant::now() + wait;
            self.blocked_map().insert(key.to_string(), until);
        }
    }

    /// How long `key` stays blocked after a [`Budget::fail`] that found its budget spent.
    pub(crate) async fn blocked_for(&self, key: &str) -> Option<Duration> {
        if let Some(shared) = &self.shared {
            match shared.blocked_for(&[&self.block_key(key)]).await {
                Some(wait) => return wait,
                None => self.record_fallback(),
            }
        }
        self.blocked_map()
            .get(key)
            .and_then(|until| until.checked_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }

    async fn take_blocking(&self, key: &str, cells: NonZeroU32, block: bool) -> Take {
        if let Some(shared) = &self.shared {
            let shared_key = format!("{}:{key}", self.prefix);
            let block_key = block.then(|| self.block_key(key));
            let decision = shared
                .check_blocking(
                    &shared_key,
                    block_key.as_deref(),
                    self.shared_quota,
                    cells.get(),
                )
                .await;
            match decision {
                Some(d) if d.admitted => {
                    return Take::Admitted {
                        remaining: d.remaining,
                    }
                }
                Some(d) => return Take::Refused { wait: d.wait },
                None => {
                    self.record_fallback();
                    if self.deny_when_unavailable {
                        return Take::Unavailable;
                    }
                }
            }
        }
        self.take_local(key, cells)
    }

    fn take_local(&self, key: &str, cells: NonZeroU32) -> Take {
        let key = key.to_string();
        match self.local.check_key_n(&key, cells) {
            Ok(Ok(snapshot)) => Take::Admitted {
                remaining: snapshot.remaining_burst_capacity(),
            },
            Ok(Err(not_until)) => Take::Refused {
                wait: not_until.wait_time_from(self.clock.now()),
            },
            // More cells than the burst can ever hold: no wait would help. Callers split
            // larger requests (the upload throttle takes at most `burst`), so this is not
            // reached; answering "cannot decide" keeps a stream from waiting forever.
            Err(_) => Take::Unavailable,
        }
    }

    /// Drops keys whose budget has fully refilled (they behave like new keys) and blocks
    /// that have expired.
    pub(crate) fn purge(&self) {
        self.local.retain_recent();
        self.local.shrink_to_fit();
        let now = Instant::now();
        self.blocked_map().retain(|_, until| *until > now);
    }

    /// Keys with local state (for tests and benches).
    pub(crate) fn tracked_keys(&self) -> usize {
        self.local.len()
    }

    fn block_key(&self, key: &str) -> String {
        format!("{}:{key}:blocked", self.prefix)
    }

    fn blocked_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        // A panic while holding this lock cannot leave the map inconsistent (single
        // inserts and retains), so a poisoned lock is used as is.
        self.blocked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one decision made locally because Redis was unavailable
    /// (`registry_edge_shared_state_fallbacks_total{limit}`).
    fn record_fallback(&self) {
        metrics()
            .shared_state_fallbacks
            .with_label_values(&[self.name])
            .inc();
    }
}
