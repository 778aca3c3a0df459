//! Tokens this edge has already verified. Every request of a push or pull carries the
//! same token, so after the first one a request costs a SHA-256 and a map lookup
//! instead of a signature check. Only tokens that passed full verification are kept;
//! their validity period is still checked on every use (by the caller).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::claims::Claims;

/// A token's cache key: its SHA-256, so the map holds 32 bytes, not the token.
pub type TokenKey = [u8; 32];

pub fn key(token: &str) -> TokenKey {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

/// A bounded map of verified tokens. When full it starts over: simpler than LRU
/// bookkeeping on every hit, and a burst of misses only costs signature checks.
#[derive(Debug)]
pub struct VerifiedTokens {
    entries: Mutex<HashMap<TokenKey, Arc<Claims>>>,
    capacity: usize,
}

impl VerifiedTokens {
    pub fn new(capacity: usize) -> VerifiedTokens {
        VerifiedTokens {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    pub fn get(&self, key: &TokenKey) -> Option<Arc<Claims>> {
        self.lock().get(key).cloned()
    }

    pub fn insert(&self, key: TokenKey, claims: Arc<Claims>) {
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            entries.clear();
        }
        entries.insert(key, claims);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TokenKey, Arc<Claims>>> {
        // A panic while holding the lock cannot leave the map half-updated.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}
