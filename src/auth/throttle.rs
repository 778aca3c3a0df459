//! Failed-login throttling per client IP and per account, checked before any bcrypt work.
//!
//! Failures are counted with governor keyed limiters (GCRA). When a failure finds its
//! budget spent, the key is blocked until governor says a cell is free again; a blocked
//! key gets 429 without its password being checked. The per-account limit is looser
//! than the per-IP one, so one noisy client does not lock a user out for everyone,
//! while guesses spread over many addresses still hit the account limit.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

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
}

impl LoginThrottle {
    pub fn new(per_ip_per_minute: NonZeroU32, per_account_per_minute: NonZeroU32) -> Self {
        LoginThrottle {
            per_ip: Budget::new(per_ip_per_minute),
            per_account: Budget::new(per_account_per_minute),
        }
    }

    /// How long `ip` or `account` must wait before its credentials are checked again.
    pub fn blocked_for(&self, ip: IpAddr, account: &str) -> Option<Duration> {
        let now = Instant::now();
        let a = self.per_ip.blocked_for(&ip, now);
        let b = self.per_account.blocked_for(&account.to_string(), now);
        a.max(b)
    }

    pub fn record_failure(&self, ip: IpAddr, account: &str) {
        let now = Instant::now();
        self.per_ip.fail(&ip, now);
        self.per_account.fail(&account.to_string(), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_an_ip_after_its_budget_but_not_others() {
        let throttle =
            LoginThrottle::new(NonZeroU32::new(3).unwrap(), NonZeroU32::new(100).unwrap());
        let bad: IpAddr = "203.0.113.1".parse().unwrap();
        let good: IpAddr = "203.0.113.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(throttle.blocked_for(bad, "alice"), None);
            throttle.record_failure(bad, "alice");
        }
        assert_eq!(
            throttle.blocked_for(bad, "alice"),
            None,
            "the budget is 3 failures"
        );
        throttle.record_failure(bad, "alice");
        let wait = throttle
            .blocked_for(bad, "alice")
            .expect("blocked after the 4th failure");
        assert!(
            wait <= Duration::from_secs(20),
            "one cell frees in 60/3 s: {wait:?}"
        );
        assert_eq!(
            throttle.blocked_for(good, "alice"),
            None,
            "other clients of the account still log in"
        );
    }

    #[test]
    fn account_limit_spans_addresses() {
        let throttle =
            LoginThrottle::new(NonZeroU32::new(100).unwrap(), NonZeroU32::new(2).unwrap());
        for i in 0..3u8 {
            throttle.record_failure(IpAddr::from([198, 51, 100, i]), "bob");
        }
        assert!(throttle
            .blocked_for("192.0.2.9".parse().unwrap(), "bob")
            .is_some());
        assert!(throttle
            .blocked_for("192.0.2.9".parse().unwrap(), "carol")
            .is_none());
    }
}
