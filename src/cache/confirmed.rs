//! The repository+digest pairs the registry confirmed, per endpoint: a cached digest is
//! served for a repository only after the registry answered 200 for that repository and
//! digest on that endpoint (`/blobs/` or `/manifests/`, through the edge), so content cached
//! for one repository never leaks to another that does not hold it, and a manifest is never
//! served on `/blobs/` where the registry has no such blob. A registry 404 for the pair, or
//! a DELETE of it through the edge, forgets it.
//!
//! Bounded: the least recently confirmed pairs are forgotten first, which costs only a
//! registry round trip on their next pull.

use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;

use super::store::Kind;

/// Repository, digest, endpoint.
type Pair = (String, String, Kind);

/// Pairs remembered at most (about 200 bytes each).
const CAPACITY: usize = 1_000_000;

pub(crate) struct Confirmed {
    pairs: Mutex<LruCache<Pair, ()>>,
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

    /// The registry answered 200 for `digest` in `repository` on `kind`.
    pub(crate) fn confirm(&self, repository: &str, digest: &str, kind: Kind) {
        self.lock().put(pair(repository, digest, kind), ());
    }

    /// The registry answered 404, or the pair was deleted through the edge.
    pub(crate) fn forget(&self, repository: &str, digest: &str, kind: Kind) {
        self.lock().pop(&pair(repository, digest, kind));
    }

    pub(crate) fn holds(&self, repository: &str, digest: &str, kind: Kind) -> bool {
        self.lock().get(&pair(repository, digest, kind)).is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<Pair, ()>> {
        self.pairs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn pair(repository: &str, digest: &str, kind: Kind) -> Pair {
    (repository.to_string(), digest.to_string(), kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOB: Kind = Kind::Blob;

    #[test]
    fn a_pair_is_held_per_repository_and_endpoint_until_forgotten() {
        let confirmed = Confirmed::new();
        confirmed.confirm("team/a", "sha256:1", BLOB);
        assert!(confirmed.holds("team/a", "sha256:1", BLOB));
        assert!(
            !confirmed.holds("team/b", "sha256:1", BLOB),
            "another repository"
        );
        assert!(
            !confirmed.holds("team/a", "sha256:1", Kind::Manifest),
            "another endpoint"
        );
        confirmed.forget("team/a", "sha256:1", BLOB);
        assert!(!confirmed.holds("team/a", "sha256:1", BLOB));
    }

    #[test]
    fn the_least_recently_confirmed_pair_goes_first() {
        let confirmed = Confirmed::with_capacity(2);
        confirmed.confirm("a", "d1", BLOB);
        confirmed.confirm("a", "d2", BLOB);
        assert!(confirmed.holds("a", "d1", BLOB));
        confirmed.confirm("a", "d3", BLOB);
        assert!(!confirmed.holds("a", "d2", BLOB));
        assert!(confirmed.holds("a", "d1", BLOB) && confirmed.holds("a", "d3", BLOB));
    }
}
