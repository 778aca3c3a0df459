//! The credential cache in front of every login backend (`auth.users.cache_ttl`).
//!
//! Only correct logins are kept, under an HMAC of user and password with a per-process
//! random key: a client's repeated token requests skip bcrypt and directory round trips,
//! and the cache holds nothing a memory dump could turn back into a password.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ring::hmac;

use crate::auth::identity::Identity;

/// Most cached logins kept; past it, expired entries go, and new ones wait for room.
const CAPACITY: usize = 10_000;

pub(crate) struct LoginCache {
    key: hmac::Key,
    entries: Mutex<HashMap<Vec<u8>, (Identity, Instant)>>,
    /// Zero disables the cache.
    ttl: Duration,
}

impl LoginCache {
    pub(crate) fn new(ttl: Duration) -> LoginCache {
        let rng = ring::rand::SystemRandom::new();
        // ring's system randomness failing means the OS has none to give: nothing the edge
        // could do with the error, and every other key it makes would fail the same way.
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).expect("system randomness");
        LoginCache {
            key,
            entries: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    fn tag(&self, user: &str, password: &str) -> Vec<u8> {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(user.as_bytes());
        ctx.update(&[0]);
        ctx.update(password.as_bytes());
        ctx.sign().as_ref().to_vec()
    }

    /// The identity a correct login of `user` with `password` proved, if still fresh.
    pub(crate) fn get(&self, user: &str, password: &str) -> Option<Identity> {
        if self.ttl.is_zero() {
            return None;
        }
        let tag = self.tag(user, password);
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (identity, expires) = entries.get(&tag)?;
        (*expires > Instant::now()).then(|| identity.clone())
    }

    /// Remembers a correct login for the TTL, or until the identity's proof runs out.
    pub(crate) fn insert(&self, user: &str, password: &str, identity: &Identity) {
        if self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut ttl = self.ttl;
        if let Some(end) = identity.not_after {
            let unix = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            ttl = ttl.min(Duration::from_secs(end.saturating_sub(unix)));
        }
        if ttl.is_zero() {
            return;
        }
        let tag = self.tag(user, password);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAPACITY {
            entries.retain(|_, (_, expires)| *expires > now);
            // Still full: the new login is not cached. Clearing instead would let anyone
            // with many valid credentials (tokens from a public OIDC issuer) flush everyone
            // else's cached logins, which are what keeps logins working while a backend is down.
            if entries.len() >= CAPACITY {
                return;
            }
        }
        entries.insert(tag, (identity.clone(), now + ttl));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::identity::Backend;

    #[test]
    fn keeps_only_what_was_inserted_and_only_while_fresh() {
        let cache = LoginCache::new(Duration::from_secs(60));
        let alice = Identity::new("alice", Backend::Ldap).with_groups(vec!["platform".into()]);
        assert_eq!(cache.get("alice", "pw"), None);
        cache.insert("alice", "pw", &alice);
        assert_eq!(cache.get("alice", "pw"), Some(alice.clone()));
        assert_eq!(cache.get("alice", "other"), None);
        assert_eq!(cache.get("alicepw", ""), None);

        let mut ending = Identity::new("ci", Backend::Http);
        ending.not_after = Some(1);
        cache.insert("ci", "token", &ending);
        assert_eq!(
            cache.get("ci", "token"),
            None,
            "a proof that ran out is not cached"
        );
    }

    #[test]
    fn zero_ttl_disables_the_cache() {
        let cache = LoginCache::new(Duration::ZERO);
        cache.insert("alice", "pw", &Identity::new("alice", Backend::Htpasswd));
        assert_eq!(cache.get("alice", "pw"), None);
    }
}
