//! The repository+digest pairs the registry confirmed: a cached digest is served for a
//! repository only after the registry answered 200 for that repository and digest (through
//! the edge), so content cached for one repository never leaks to another that does not
//! hold it. A registry 404 for the pair, or a DELETE of it through the edge, forgets it.
//!
//! Bounded: the least recently confirmed pairs are forgotten first, which costs only a
//! registry round trip on their next pull.

use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;

/// Pairs remembered at most (about 200 bytes each).
const CAPACITY: usize = 1_000_000;

pub(crate) struct Confirmed {
    pairs: Mutex<LruCache<(String, String), ()>>,
}

impl Confirmed {
    pub(crate) fn new() -> Confirmed {
        Self::with_capacity(CAPACITY)
    }

    fn with_capacity(capacity: usize) -> Confirmed {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Confirmed {
            pairs: Mutex::new(LruCache::new(capacity)),
        }
    }

    /// The registry answered 200 for `digest` in `repository`.
    pub(crate) fn confirm(&self, repository: &str, digest: &str) {
        self.lock()
            .put((repository.to_string(), digest.to_string()), ());
    }

    /// The registry answered 404, or the pair was deleted through the edge.
    pub(crate) fn forget(&self, repository: &str, digest: &str) {
        self.lock()
            .pop(&(repository.to_string(), digest.to_string()));
    }

    pub(crate) fn holds(&self, repository: &str, digest: &str) -> bool {
        self.lock()
            .get(&(repository.to_string(), digest.to_string()))
            .is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<(String, String), ()>> {
        self.pairs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_is_held_per_repository_until_forgotten() {
        let confirmed = Confirmed::new();
        confirmed.confirm("team/a", "sha256:1");
        assert!(confirmed.holds("team/a", "sha256:1"));
        assert!(!confirmed.holds("team/b", "sha256:1"), "another repository");
        confirmed.forget("team/a", "sha256:1");
        assert!(!confirmed.holds("team/a", "sha256:1"));
    }

    #[test]
    fn the_least_recently_confirmed_pair_goes_first() {
        let confirmed = Confirmed::with_capacity(2);
        confirmed.confirm("a", "d1");
        confirmed.confirm("a", "d2");
        assert!(confirmed.holds("a", "d1"));
        confirmed.confirm("a", "d3");
        assert!(!confirmed.holds("a", "d2"));
        assert!(confirmed.holds("a", "d1") && confirmed.holds("a", "d3"));
    }
}
