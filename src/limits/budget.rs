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

/// How fast a budget refills: `n` cells per second, minute or hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rate {
    Second(NonZeroU32),
    Minute(NonZeroU32),
    Hour(NonZeroU32),
}

/// What a budget said about some cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    /// Taken at `at` (in Redis when `shared`); `remaining` whole cells are left at once.
    Admitted {
        remaining: u32,
        shared: bool,
        at: Instant,
    },
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
    /// Keys blocked by a local [`Budget::fail_each`] until the instant given.
    blocked: Mutex<HashMap<String, Instant>>,
    /// Cells given back here ([`Budget::give_back`]) per key, each as its take said it:
    /// (when it was taken, `remaining` after it). The key's next local takes use them first.
    returned: Mutex<HashMap<String, Vec<(Instant, u32)>>>,
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
            Rate::Second(n) => (Quota::per_second(n), Duration::from_secs(1) / n.get()),
            Rate::Minute(n) => (Quota::per_minute(n), Duration::from_secs(60) / n.get()),
            Rate::Hour(n) => (Quota::per_hour(n), Duration::from_secs(3600) / n.get()),
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
            returned: Mutex::new(HashMap::new()),
        }
    }

    /// While Redis is unavailable, answer [`Take::Unavailable`] instead of counting locally.
    pub(crate) fn deny_when_unavailable(mut self, deny: bool) -> Self {
        self.deny_when_unavailable = deny;
        self
    }

    /// Whether Redis is configured for this budget (it may be unavailable right now).
    pub(crate) fn has_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Takes `cells` from `key`'s budget: in Redis, else (counted as a fallback) here.
    pub(crate) async fn take(&self, key: &str, cells: NonZeroU32) -> Take {
        match self.take_shared(key, cells).await {
            Some(take) => take,
            None if self.has_shared() && self.deny_when_unavailable => Take::Unavailable,
            None => self.take_local(key, cells),
        }
    }

    /// Takes `cells` in Redis; `None` when Redis is not configured or unavailable (the
    /// latter counted as one fallback).
    pub(crate) async fn take_shared(&self, key: &str, cells: NonZeroU32) -> Option<Take> {
        let shared = self.shared.as_ref()?;
        let decision = shared
            .check_blocking(&self.redis_key(key), None, self.shared_quota, cells.get())
            .await;
        let Some(decision) = decision else {
            self.record_fallback();
            return None;
        };
        Some(match decision.admitted {
            true => Take::Admitted {
                remaining: decision.remaining,
                shared: true,
                at: Instant::now(),
            },
            false => Take::Refused {
                wait: decision.wait,
            },
        })
    }

    /// Counts one failure against each `(budget, key)`; a key that finds its budget spent is
    /// blocked for the wait ([`Budget::blocked_for_any`]). In Redis when every budget's
    /// Redis answers; otherwise (one fallback counted, for the first budget's limit) every
    /// key is counted here, as each instance counts alone while Redis is away.
    pub(crate) async fn fail_each(entries: &[(&Budget<C>, &str)]) {
        let Some(((first, _), shared)) = entries
            .first()
            .and_then(|entry| Some((entry, entry.0.shared.as_ref()?)))
        else {
            entries
                .iter()
                .for_each(|(budget, key)| budget.fail_local(key));
            return;
        };
        let mut answered = true;
        for (budget, key) in entries {
            let block_key = budget.block_key(key);
            answered &= shared
                .check_blocking(
                    &budget.redis_key(key),
                    Some(&block_key),
                    budget.shared_quota,
                    1,
                )
                .await
                .is_some();
        }
        if answered {
            return;
        }
        first.record_fallback();
        entries
            .iter()
            .for_each(|(budget, key)| budget.fail_local(key));
    }

    /// The longest any `(budget, key)` stays blocked after [`Budget::fail_each`]: one Redis
    /// round trip for all of them, or (one fallback counted) the blocks kept here.
    pub(crate) async fn blocked_for_any(entries: &[(&Budget<C>, &str)]) -> Option<Duration> {
        let (first, _) = entries.first()?;
        if let Some(shared) = &first.shared {
            let block_keys: Vec<String> = entries.iter().map(|(b, k)| b.block_key(k)).collect();
            let block_keys: Vec<&str> = block_keys.iter().map(String::as_str).collect();
            match shared.blocked_for(&block_keys).await {
                Some(wait) => return wait,
                None => first.record_fallback(),
            }
        }
        let now = Instant::now();
        entries
            .iter()
            .filter_map(|(budget, key)| {
                budget
                    .blocked_map()
                    .get(*key)
                    .and_then(|until| until.checked_duration_since(now))
                    .filter(|d| !d.is_zero())
            })
            .max()
    }

    /// Counts one failure here; a refusal blocks `key` until a cell is free.
    fn fail_local(&self, key: &str) {
        if let Take::Refused { wait } = self.take_local(key, NonZeroU32::MIN) {
            self.blocked_map()
                .insert(key.to_string(), Instant::now() + wait);
        }
    }

    /// Gives back one cell that a [`Budget::take`] admitted for `key` and nothing used (a
    /// push the edge refused after counting it); `taken` is what the take said.
    ///
    /// In Redis the key's state moves back one cell. Here governor's state cannot be moved
    /// back, so the cell is kept for the key's next local take, and only until governor
    /// would have refilled it anyway ([`Budget::refilled_at`]): the cells given back and
    /// governor's own never add up to more than the burst, and a cell given back again
    /// keeps its first take's time (refusals cannot make credit outlive the window).
    pub(crate) async fn give_back(&self, key: &str, taken: Take) {
        let Take::Admitted {
            remaining,
            shared,
            at,
        } = taken
        else {
            return;
        };
        if shared {
            if let Some(redis) = &self.shared {
                let given = redis
                    .give_back(&self.redis_key(key), self.shared_quota, 1)
                    .await;
                if given.is_none() {
                    tracing::debug!("{}: Redis unavailable, a cell not given back", self.name);
                }
            }
            return;
        }
        let now = Instant::now();
        if self.refilled_at(at, remaining) <= now {
            return;
        }
        let mut returned = self.returned_map();
        let cells = returned.entry(key.to_string()).or_default();
        self.drop_refilled(cells, now);
        if cells.len() < self.shared_quota.burst as usize {
            cells.push((at, remaining));
        }
    }

    /// When governor has back a cell taken at `at` that left `remaining`: the cells used
    /// then refill one per `per_cell`, this one last.
    fn refilled_at(&self, at: Instant, remaining: u32) -> Instant {
        let used = self.shared_quota.burst.saturating_sub(remaining);
        at + self.shared_quota.per_cell * used
    }

    /// Forgets the given-back cells governor has refilled by `now`.
    fn drop_refilled(&self, cells: &mut Vec<(Instant, u32)>, now: Instant) {
        cells.retain(|&(at, remaining)| self.refilled_at(at, remaining) > now);
    }

    /// Takes one cell given back earlier for `key`, the one governor would refill first.
    fn take_returned(&self, key: &str, cells: NonZeroU32) -> Option<Take> {
        if cells != NonZeroU32::MIN {
            return None;
        }
        let mut returned = self.returned_map();
        let kept = returned.get_mut(key)?;
        self.drop_refilled(kept, Instant::now());
        let first = kept
            .iter()
            .enumerate()
            .min_by_key(|(_, &(at, remaining))| self.refilled_at(at, remaining))
            .map(|(index, _)| index);
        let take = first.map(|index| {
            let (at, remaining) = kept.swap_remove(index);
            Take::Admitted {
                remaining,
                shared: false,
                at,
            }
        });
        if kept.is_empty() {
            returned.remove(key);
        }
        take
    }

    /// Takes `cells` in this process only.
    pub(crate) fn take_local(&self, key: &str, cells: NonZeroU32) -> Take {
        if let Some(take) = self.take_returned(key, cells) {
            return take;
        }
        let key = key.to_string();
        match self.local.check_key_n(&key, cells) {
            Ok(Ok(snapshot)) => Take::Admitted {
                remaining: snapshot.remaining_burst_capacity(),
                shared: false,
                at: Instant::now(),
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
        self.returned_map().retain(|_, cells| {
            self.drop_refilled(cells, now);
            !cells.is_empty()
        });
    }

    /// Keys with local state (for tests).
    #[cfg(test)]
    pub(crate) fn tracked_keys(&self) -> usize {
        self.local.len()
    }

    fn redis_key(&self, key: &str) -> String {
        format!("{}:{key}", self.prefix)
    }

    fn block_key(&self, key: &str) -> String {
        format!("{}:{key}:blocked", self.prefix)
    }

    fn returned_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<(Instant, u32)>>> {
        // As `blocked_map`: single inserts, updates and retains.
        self.returned.lock().unwrap_or_else(|e| e.into_inner())
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
