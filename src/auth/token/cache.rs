//! Tokens this edge has already verified. Every request of a push or pull carries the
//! same token, so after the first one a request costs a SHA-256 and a map lookup
//! instead of a signature check. Only tokens that passed full verification are kept;
//! their validity period is still checked on every use (by the caller).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::claims::Claims;

/// A token's cache key: its SHA-256, so the map holds 32 bytes, not the token.
pub(crate) type TokenKey = [u8; 32];

pub(crate) fn key(token: &str) -> TokenKey {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

/// Bytes of claims (names, actions, subject) the cache holds at most. Tokens carry up to
/// hundreds of scopes, so the entry count alone does not bound memory: 8192 tokens of 50 KB
/// would hold 400 MB.
const MAX_BYTES: usize = 16 << 20;

/// Claims larger than this are not cached (verified every time): one such token costs a
/// signature check per request, and the cache stays for the common small tokens.
const MAX_ENTRY_BYTES: usize = 64 << 10;

/// A bounded map of verified tokens: at most `capacity` entries and [`MAX_BYTES`] of claims.
/// When full it starts over: simpler than LRU bookkeeping on every hit, and a burst of misses
/// only costs signature checks.
#[derive(Debug)]
pub(crate) struct VerifiedTokens {
    entries: Mutex<Entries>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<TokenKey, Arc<Claims>>,
    /// The claims' approximate size, summed.
    bytes: usize,
}

impl VerifiedTokens {
    pub(crate) fn new(capacity: usize) -> VerifiedTokens {
        VerifiedTokens {
            entries: Mutex::new(Entries::default()),
            capacity,
        }
    }

    pub(crate) fn get(&self, key: &TokenKey) -> Option<Arc<Claims>> {
        self.lock().map.get(key).cloned()
    }

    pub(crate) fn insert(&self, key: TokenKey, claims: Arc<Claims>) {
        let size = approximate_size(&claims);
        if size > MAX_ENTRY_BYTES {
            return;
        }
        let mut entries = self.lock();
        if entries.map.len() >= self.capacity || entries.bytes + size > MAX_BYTES {
            *entries = Entries::default();
        }
        if entries.map.insert(key, claims).is_none() {
            entries.bytes += size;
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().map.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding the lock cannot leave the map half-updated.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What one entry costs, roughly: its strings plus a fixed overhead per entry and per
/// access entry.
fn approximate_size(claims: &Claims) -> usize {
    let access: usize = claims
        .access
        .iter()
        .map(|entry| {
            64 + entry.kind.len()
                + entry.name.len()
                + entry.actions.iter().map(|a| 24 + a.len()).sum::<usize>()
        })
        .sum();
    128 + claims.iss.len() + claims.sub.len() + claims.aud.len() + claims.jti.len() + access
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::token::claims::AccessEntry;

    /// Claims for `sub` with `scopes` access entries of 100-character names.
    fn claims(sub: usize, scopes: usize) -> Arc<Claims> {
        let access = (0..scopes)
            .map(|i| AccessEntry {
                kind: "repository".into(),
                name: format!("{i:0100}"),
                actions: vec!["pull".into(), "push".into()],
                from: Vec::new(),
            })
            .collect();
        Arc::new(Claims {
            iss: "issuer".into(),
            sub: sub.to_string(),
            aud: "registry".into(),
            exp: 0,
            nbf: 0,
            iat: 0,
            jti: sub.to_string(),
            access,
            identity: None,
        })
    }

    #[test]
    fn memory_is_bounded_by_bytes_not_only_entries() {
        let cache = VerifiedTokens::new(8192);
        let big = claims(0, 150);
        let size = approximate_size(&big);
        assert!((16 << 10..MAX_ENTRY_BYTES).contains(&size), "{size}");
        for i in 0..4000 {
            cache.insert(key(&i.to_string()), big.clone());
            assert!(cache.lock().bytes <= MAX_BYTES);
        }
        assert!(cache.len() <= MAX_BYTES / size, "{}", cache.len());
        // Huge claims are verified every time instead of cached.
        cache.insert(key("huge"), claims(1, 1000));
        assert!(cache.get(&key("huge")).is_none());
        // Small tokens: bounded by the entry count.
        let small = VerifiedTokens::new(100);
        for i in 0..1000 {
            small.insert(key(&i.to_string()), claims(i, 1));
        }
        assert!(small.len() <= 100);
    }
}
