//! Limits shared by several edge instances through Redis (`shared_state.redis`).
//!
//! Each limit keeps the governor crate's GCRA state in one Redis key: the "theoretical
//! arrival time" in microseconds of Redis's own clock, so instances need no clock
//! agreement. One Lua script reads, decides and writes it atomically in one round trip
//! (`redis::Script`: EVALSHA, loading the script only when Redis does not have it);
//! keys expire when their state is back to "new".
//!
//! When Redis does not answer within `timeout` the state turns unavailable (logged once,
//! `registry_edge_shared_state_up` 0) and callers fall back; while unavailable nobody
//! waits for Redis, and a probe every second brings it back when it answers again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use crate::config::{OnUnavailable, RedisSettings};
use crate::metrics::metrics;

/// GCRA as the governor crate computes it (`tau` = `t` × (burst − 1), a new key's
/// arrival time is now). KEYS[1]: state; KEYS[2] (optional): a key set for the wait
/// when the cells are refused. ARGV: t (µs per cell), tau (µs), cells.
/// Returns {admitted 1|0, remaining whole cells, µs until the cells would be admitted}.
const GCRA: &str = r"
local t = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
local earliest = tat + t * (n - 1) - tau
if now < earliest then
  local wait = math.ceil(earliest - now)
  if KEYS[2] then
    redis.call('SET', KEYS[2], '1', 'PX', math.ceil(wait / 1000))
  end
  return {0, 0, wait}
end
local next = math.max(tat, now) + t * n
redis.call('SET', KEYS[1], string.format('%.0f', next), 'PX', math.ceil((next - now) / 1000) + 1)
local remaining = math.floor(math.min(now + tau + t - next, tau + t) / t)
return {1, remaining, 0}
";

/// Gives back cells a [`GCRA`] check admitted: the arrival time moves back by `t` per cell,
/// never below now (a budget is never more than full; at or below now the key is new).
/// KEYS[1]: state. ARGV: t (µs per cell), cells. Returns 1 when the key existed.
const GIVE_BACK: &str = r"
local t = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat then
  return 0
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local back = tat - t * n
if back <= now then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], string.format('%.0f', back), 'PX', math.ceil((back - now) / 1000) + 1)
end
return 1
";

/// How often an unavailable Redis is asked again.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// A GCRA quota: one cell per `per_cell`, `burst` cells at once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quota {
    pub per_cell: Duration,
    pub burst: u32,
}

/// Redis's answer for one GCRA check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    pub admitted: bool,
    pub remaining: u32,
    /// Until the refused cells would be admitted.
    pub wait: Duration,
}

pub struct SharedState {
    settings: RedisSettings,
    client: redis::Client,
    /// Made on first use: the manager spawns its tasks on the runtime it is made in.
    manager: OnceCell<ConnectionManager>,
    script: redis::Script,
    give_back: redis::Script,
    up: AtomicBool,
}

impl SharedState {
    pub fn new(settings: RedisSettings) -> Result<Arc<SharedState>, redis::RedisError> {
        let client = redis::Client::open(settings.url.as_str())?;
        metrics().shared_state_up.set(1);
        Ok(Arc::new(SharedState {
            settings,
            client,
            manager: OnceCell::new(),
            script: redis::Script::new(GCRA),
            give_back: redis::Script::new(GIVE_BACK),
            up: AtomicBool::new(true),
        }))
    }

    pub(crate) fn on_unavailable(&self) -> OnUnavailable {
        self.settings.on_unavailable
    }

    /// Whether the last exchange with Redis worked.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Counts `cells` against `key` (without the prefix); a refusal also sets `block_key`
    /// (when given) for the wait. `None` while Redis is unavailable.
    pub(crate) async fn check_blocking(
        &self,
        key: &str,
        block_key: Option<&str>,
        quota: Quota,
        cells: u32,
    ) -> Option<Decision> {
        if !self.is_up() {
            return None;
        }
        let t = quota.per_cell.as_secs_f64() * 1e6;
        let tau = t * f64::from(quota.burst.saturating_sub(1));
        let mut invocation = self.script.key(self.key(key));
        if let Some(block) = block_key {
            invocation.key(self.key(block));
        }
        invocation
            .arg(t.to_string())
            .arg(tau.to_string())
            .arg(cells);
        let reply: (i64, i64, i64) = self
            .call(|mut connection| async move { invocation.invoke_async(&mut connection).await })
            .await?;
        Some(Decision {
            admitted: reply.0 == 1,
            remaining: u32::try_from(reply.1.max(0)).unwrap_or(u32::MAX),
            wait: Duration::from_micros(reply.2.max(0) as u64),
        })
    }

    /// Gives back `cells` that [`SharedState::check_blocking`] admitted for `key` (without
    /// the prefix); `None` while Redis is unavailable (the cells stay spent).
    pub(crate) async fn give_back(&self, key: &str, quota: Quota, cells: u32) -> Option<()> {
        if !self.is_up() {
            return None;
        }
        let t = quota.per_cell.as_secs_f64() * 1e6;
        let mut invocation = self.give_back.key(self.key(key));
        invocation.arg(t.to_string()).arg(cells);
        let _: i64 = self
            .call(|mut connection| async move { invocation.invoke_async(&mut connection).await })
            .await?;
        Some(())
    }

    /// The longest time any of `keys` (without the prefix) is still set for; `None`
    /// while Redis is unavailable.
    pub(crate) async fn blocked_for(&self, keys: &[&str]) -> Option<Option<Duration>> {
        if !self.is_up() {
            return None;
        }
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("PTTL").arg(self.key(key));
        }
        let ttls: Vec<i64> = self
            .call(|mut connection| async move { pipe.query_async(&mut connection).await })
            .await?;
        let longest = ttls.into_iter().max().unwrap_or(-2);
        Some((longest > 0).then(|| Duration::from_millis(longest as u64)))
    }

    /// `key` under `shared_state.redis.key_prefix`.
    pub(crate) fn key(&self, key: &str) -> String {
        format!("{}{key}", self.settings.key_prefix)
    }

    /// One exchange with Redis for another user of the connection (the policy's usage
    /// store); `None` while Redis is unavailable or when the exchange fails.
    pub(crate) async fn exchange<T, F, Fut>(&self, exchange: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if !self.is_up() {
            return None;
        }
        self.call(exchange).await
    }

    /// [`SharedState::exchange`] of one command; `None` as there.
    pub(crate) async fn command<T: redis::FromRedisValue>(&self, command: redis::Cmd) -> Option<T> {
        self.exchange(|mut c| async move { command.query_async(&mut c).await })
            .await
    }

    /// [`SharedState::exchange`] of one pipeline (one round trip); `None` as there.
    pub(crate) async fn pipeline<T: redis::FromRedisValue>(
        &self,
        pipeline: redis::Pipeline,
    ) -> Option<T> {
        self.exchange(|mut c| async move { pipeline.query_async(&mut c).await })
            .await
    }

    /// Runs one exchange within the timeout; marks Redis unavailable on any failure.
    async fn call<T, F, Fut>(&self, exchange: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let timeout = self.settings.timeout;
        let result = tokio::time::timeout(timeout, async {
            let manager = self.manager().await?;
            exchange(manager).await
        })
        .await;
        match result {
            Ok(Ok(value)) => Some(value),
            Ok(Err(e)) => {
                self.set_up(false, &crate::report::chain(&e));
                None
            }
            Err(_) => {
                self.set_up(false, &format!("no answer within {timeout:?}"));
                None
            }
        }
    }

    async fn manager(&self) -> redis::RedisResult<ConnectionManager> {
        let timeout = self.settings.timeout;
        self.manager
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout.max(Duration::from_millis(500))))
                    // Ours (in `call`) fires first, with the clearer message.
                    .set_response_timeout(Some(timeout * 2))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(1));
                ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            })
            .await
            .cloned()
    }

    /// Records a transition, logging it once.
    fn set_up(&self, up: bool, why: &str) {
        if self.up.swap(up, Ordering::Relaxed) == up {
            return;
        }
        metrics().shared_state_up.set(i64::from(up));
        if up {
            tracing::warn!("shared_state.redis answers again: limits are shared again");
        } else {
            let meanwhile = match self.settings.on_unavailable {
                OnUnavailable::Local => "limits are counted per instance meanwhile",
                OnUnavailable::Deny => "push starts are refused (503) meanwhile",
            };
            tracing::error!("shared_state.redis unavailable ({why}); {meanwhile}");
        }
    }

    /// Asks an unavailable Redis whether it is back.
    async fn probe(&self) {
        if self.is_up() {
            return;
        }
        let timeout = self.settings.timeout.max(Duration::from_millis(500));
        let answered = tokio::time::timeout(timeout, async {
            let mut manager = self.manager().await?;
            redis::cmd("PING").query_async::<String>(&mut manager).await
        })
        .await;
        if let Ok(Ok(_)) = answered {
            self.set_up(true, "");
        }
    }
}

/// The background service that brings an unavailable Redis back.
pub(crate) struct SharedStateProbe(pub(crate) Arc<SharedState>);

#[async_trait]
impl BackgroundService for SharedStateProbe {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut every = tokio::time::interval(PROBE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => self.0.probe().await,
                _ = shutdown.changed() => return,
            }
        }
    }
}
