//! Failed-login throttling per client IP and per account, checked before any bcrypt work.
//!
//! Failures are counted with governor keyed limiters (GCRA). When a failure finds its
//! budget spent, the key is blocked until governor says a cell is free again; a blocked
//! key gets 429 without its password being checked. The per-account limit is looser
//! than the per-IP one, so one noisy client does not lock a user out for everyone,
//! while guesses spread over many addresses still hit the account limit.
//!
//! With `shared_state.redis`, failures and blocks are kept in Redis, so guesses spread
//! over several edge instances count against one budget; while Redis is unavailable
//! each instance counts its own (a login is never refused for want of Redis).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::shared_state::{self, SharedState};

/// The `limit` label of this throttle's shared-state fallbacks.
const FAILED_LOGINS: &str = "failed_logins";

/// Past this many blocked keys, expired ones are dropped on insert.
const PURGE_AT: usize = 1024;

struct Budget<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    blocked: Mutex<HashMap<K, Instant>>,
}

impl<K: Hash + Eq + Clone> Budget<K> {
    fn new(per_minute: NonZeroU32) -> Self {
        Budget {
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
            blocked: Mutex::new(HashMap::new()),
        }
    }

    fn blocked_for(&self, key: &K, now: Instant) -> Option<Duration> {
        let blocked = self.blocked.lock().expect("throttle lock");
        blocked
            .get(key)
            .and_then(|until| until.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    fn fail(&self, key: &K, now: Instant) {
        if let Err(not_until) = self.limiter.check_key(key) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let mut blocked = self.blocked.lock().expect("throttle lock");
            if blocked.len() >= PURGE_AT {
                blocked.retain(|_, until| *until > now);
                self.limiter.retain_recent();
            }
            blocked.insert(key.clone(), now + wait);
        }
    }
}

pub struct LoginThrottle {
    per_ip: Budget<IpAddr>,
    per_account: Budget<String>,
    per_ip_per_minute: NonZeroU32,
    per_account_per_minute: NonZeroU32,
    shared: Option<Arc<SharedState>>,
}

impl LoginThrottle {
    pub fn new(per_ip_per_minute: NonZeroU32, per_account_per_minute: NonZeroU32) -> Self {
        LoginThrottle {
            per_ip: Budget::new(per_ip_per_minute),
            per_account: Budget::new(per_account_per_minute),
            per_ip_per_minute,
            per_account_per_minute,
            shared: None,
        }
    }

    /// Keeps failures in Redis first (`shared_state.redis`), locally only as the fallback.
    pub fn set_shared(&mut self, shared: Option<Arc<SharedState>>) {
        self.shared = shared;
    }

    /// How long `ip` or `account` must wait before its credentials are checked again.
    pub async fn blocked_for(&self, ip: IpAddr, account: &str) -> Option<Duration> {
        if let Some(shared) = &self.shared {
            let keys = [blocked_key(&ip_key(ip)), blocked_key(&account_key(account))];
            match shared.blocked_for(&[&keys[0], &keys[1]]).await {
                Some(wait) => return wait,
                None => shared_state::record_fallback(FAILED_LOGINS),
            }
        }
        let now = Instant::now();
        let a = self.per_ip.blocked_for(&ip, now);
        let b = self.per_account.blocked_for(&account.to_string(), now);
        a.max(b)
    }

    pub async fn record_failure(&self, ip: IpAddr, account: &str) {
        if let Some(shared) = &self.shared {
            let ip_key = ip_key(ip);
            let account_key = account_key(account);
            let counted = [
                (ip_key, self.per_ip_per_minute),
                (account_key, self.per_account_per_minute),
            ];
            let mut all = true;
            for (key, per_minute) in &counted {
                let quota = shared_state::Quota {
                    per_cell: Duration::from_secs(60) / per_minute.get(),
                    burst: per_minute.get(),
                };
                let blocked = blocked_key(key);
                all &= shared
                    .check_blocking(key, Some(&blocked), quota, 1)
                    .await
                    .is_some();
            }
            if all {
                return;
            }
            shared_state::record_fallback(FAILED_LOGINS);
        }
        let now = Instant::now();
        self.per_ip.fail(&ip, now);
        self.per_account.fail(&account.to_string(), now);
    }
}

fn ip_key(ip: IpAddr) -> String {
    format!("login:ip:{ip}")
}

fn account_key(account: &str) -> String {
    format!("login:account:{account}")
}

fn blocked_key(key: &str) -> String {
    format!("{key}:blocked")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blocks_an_ip_after_its_budget_but_not_others() {
        let throttle =
            LoginThrottle::new(NonZeroU32::new(3).unwrap(), NonZeroU32::new(100).unwrap());
        let bad: IpAddr = "203.0.113.1".parse().unwrap();
        let good: IpAddr = "203.0.113.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(throttle.blocked_for(bad, "alice").await, None);
            throttle.record_failure(bad, "alice").await;
        }
        assert_eq!(
            throttle.blocked_for(bad, "alice").await,
            None,
            "the budget is 3 failures"
        );
        throttle.record_failure(bad, "alice").await;
        let wait = throttle
            .blocked_for(bad, "alice")
            .await
            .expect("blocked after the 4th failure");
        assert!(
            wait <= Duration::from_secs(20),
            "one cell frees in 60/3 s: {wait:?}"
        );
        assert_eq!(
            throttle.blocked_for(good, "alice").await,
            None,
            "other clients of the account still log in"
        );
    }

    #[tokio::test]
    async fn account_limit_spans_addresses() {
        let throttle =
            LoginThrottle::new(NonZeroU32::new(100).unwrap(), NonZeroU32::new(2).unwrap());
        for i in 0..3u8 {
            throttle
                .record_failure(IpAddr::from([198, 51, 100, i]), "bob")
                .await;
        }
        assert!(throttle
            .blocked_for("192.0.2.9".parse().unwrap(), "bob")
            .await
            .is_some());
        assert!(throttle
            .blocked_for("192.0.2.9".parse().unwrap(), "carol")
            .await
            .is_none());
    }
}
