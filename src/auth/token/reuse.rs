//! Tokens the edge signs for itself (its lookups, the requests it sends a route's pool),
//! reused while more than half their lifetime is left: a pool sees one request per pull
//! step, and signing each (an RSA key takes milliseconds) would cost more than the request.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use lru::LruCache;

/// Distinct (subject, scopes) kept: repositories pulled through routes at once.
const CAPACITY: usize = 4096;

/// Signed tokens by (subject, scopes), with when they stop being reused.
#[derive(Debug)]
pub(crate) struct ReusedTokens {
    tokens: Mutex<LruCache<String, (String, SystemTime)>>,
}

impl Default for ReusedTokens {
    fn default() -> Self {
        let capacity = NonZeroUsize::new(CAPACITY).unwrap_or(NonZeroUsize::MIN);
        ReusedTokens {
            tokens: Mutex::new(LruCache::new(capacity)),
        }
    }
}

impl ReusedTokens {
    /// The token kept under `key` while `now` is before its reuse limit, else the one
    /// `sign` makes (valid `lifetime`), kept for half of that.
    pub(crate) fn get_or_sign(
        &self,
        key: String,
        lifetime: Duration,
        now: SystemTime,
        sign: impl FnOnce() -> String,
    ) -> String {
        {
            let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((token, until)) = tokens.get(&key) {
                if now < *until {
                    return token.clone();
                }
            }
        }
        let token = sign();
        let until = now + lifetime / 2;
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.put(key, (token.clone(), until));
        token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_reused_for_half_its_lifetime() {
        let reused = ReusedTokens::default();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let minute = Duration::from_secs(60);
        let mut signed = 0;
        let mut get = |at: SystemTime, key: &str| {
            reused.get_or_sign(key.to_string(), minute, at, || {
                signed += 1;
                format!("t{signed}")
            })
        };
        assert_eq!(get(start, "a"), "t1");
        assert_eq!(get(start + Duration::from_secs(29), "a"), "t1");
        assert_eq!(get(start + Duration::from_secs(29), "b"), "t2");
        assert_eq!(get(start + Duration::from_secs(30), "a"), "t3");
    }
}
