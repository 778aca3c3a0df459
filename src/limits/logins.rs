//! Failed-login throttling (`auth.failed_logins`) per client IP and per account, checked
//! before any bcrypt work.
//!
//! When a failure finds its budget spent, the key is blocked until a cell is free again; a
//! blocked key gets 429 without its password being checked. The per-account limit is looser
//! than the per-IP one, so one noisy client does not lock a user out for everyone, while
//! guesses spread over many addresses still hit the account limit. With
//! `shared_state.redis`, failures and blocks are kept in Redis, so guesses spread over
//! several edge instances count against one budget; while Redis is unavailable each
//! instance counts its own (a login is never refused for want of Redis).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use super::budget::{Budget, Rate};
use crate::shared_state::SharedState;

/// The `limit` label of this throttle's shared-state fallbacks.
const FAILED_LOGINS: &str = "failed_logins";

/// `auth.failed_logins` in force.
pub struct LoginThrottle {
    per_ip: Budget,
    per_account: Budget,
    /// (per client IP, per account) failures per minute: what a reload compares.
    limits: (NonZeroU32, NonZeroU32),
}

impl LoginThrottle {
    /// Keeps failures in Redis first when `shared` is given (`shared_state.redis`), locally
    /// only as the fallback.
    pub fn new(
        per_ip_per_minute: NonZeroU32,
        per_account_per_minute: NonZeroU32,
        shared: Option<Arc<SharedState>>,
    ) -> Self {
        let budget = |per_minute, shared| {
            let rate = Rate::Minute(per_minute);
            Budget::new(FAILED_LOGINS, "login", rate, per_minute, shared)
        };
        LoginThrottle {
            per_ip: budget(per_ip_per_minute, shared.clone()),
            per_account: budget(per_account_per_minute, shared),
            limits: (per_ip_per_minute, per_account_per_minute),
        }
    }

    /// (per client IP, per account) failures allowed per minute.
    pub(crate) fn limits(&self) -> (NonZeroU32, NonZeroU32) {
        self.limits
    }

    /// How long `ip` or `account` must wait before its credentials are checked again.
    /// An empty `account` checks the client IP only.
    pub(crate) async fn blocked_for(&self, ip: IpAddr, account: &str) -> Option<Duration> {
        let ip = ip_key(ip);
        match account_key(account) {
            Some(account) => {
                Budget::blocked_for_any(&[(&self.per_ip, &ip), (&self.per_account, &account)]).await
            }
            None => Budget::blocked_for_any(&[(&self.per_ip, &ip)]).await,
        }
    }

    /// Counts a failed login for `ip` and `account`; an empty `account` (a malformed
    /// header, a refresh token, a login name many clients share such as an OIDC entry's
    /// `username`) counts against the client IP only, so nobody can lock out a name that
    /// is not one person's.
    pub(crate) async fn record_failure(&self, ip: IpAddr, account: &str) {
        let ip = ip_key(ip);
        match account_key(account) {
            Some(account) => {
                Budget::fail_each(&[(&self.per_ip, &ip), (&self.per_account, &account)]).await
            }
            None => Budget::fail_each(&[(&self.per_ip, &ip)]).await,
        }
    }

    /// Drops idle keys and expired blocks.
    pub(crate) fn purge(&self) {
        self.per_ip.purge();
        self.per_account.purge();
    }
}

/// Redis keys `login:ip:ADDR` and `login:account:NAME` (with `:blocked` for a block), as
/// before the limiters shared a core: a fleet mid-upgrade keeps one budget.
fn ip_key(ip: IpAddr) -> String {
    format!("ip:{ip}")
}

/// Trimmed and lower-cased: directories match names that way (`Alice` and `alice ` are
/// one LDAP user), so each spelling must not get a budget of its own.
fn account_key(account: &str) -> Option<String> {
    let account = account.trim();
    (!account.is_empty()).then(|| format!("account:{}", account.to_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spellings_share_an_account_budget_and_no_name_means_ip_only() {
        let throttle = LoginThrottle::new(
            NonZeroU32::new(100).unwrap(),
            NonZeroU32::new(2).unwrap(),
            None,
        );
        let ips: Vec<IpAddr> = (1..=4)
            .map(|i| format!("203.0.113.{i}").parse().unwrap())
            .collect();
        for (ip, name) in ips.iter().zip(["alice", "Alice", " ALICE"]) {
            throttle.record_failure(*ip, name).await;
        }
        assert!(throttle.blocked_for(ips[3], "alice").await.is_some());
        for _ in 0..5 {
            throttle.record_failure(ips[3], "").await;
        }
        assert_eq!(
            throttle.blocked_for(ips[0], "").await,
            None,
            "no shared \"\" account"
        );
        assert!(throttle.blocked_for(ips[3], "bob").await.is_none());
    }

    #[tokio::test]
    async fn blocks_an_ip_after_its_budget_but_not_others() {
        let throttle = LoginThrottle::new(
            NonZeroU32::new(3).unwrap(),
            NonZeroU32::new(100).unwrap(),
            None,
        );
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
        let throttle = LoginThrottle::new(
            NonZeroU32::new(100).unwrap(),
            NonZeroU32::new(2).unwrap(),
            None,
        );
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
