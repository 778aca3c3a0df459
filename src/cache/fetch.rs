//! A registry fetch of one digest as the requests asking for it see it (`fill` runs it):
//! where it is ([`Stage`], bytes written), what arrived, and the fetches running now.

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::sync::watch;

use super::entry::{FileId, Kind};
use super::window::Window;

/// Where a fetch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// Waiting for the registry's answer.
    Asking,
    /// The body is being written; `Progress::written` bytes are in the file.
    Arriving,
    /// Every byte written, and their SHA-256 matched: the file is the entry.
    Complete,
    /// The body did not arrive whole or could not be written (the registry's connection
    /// cut, a full disk): answers from it finish from the registry (`resume`).
    Failed,
    /// The body is longer than said, or its SHA-256 is not the digest: answers from it are
    /// cut short (the client sees a failed transfer, never bytes known to be wrong).
    Mismatched,
    /// The registry's answer is not one the cache keeps: the requests go to the registry.
    NotFilled,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Progress {
    pub stage: Stage,
    /// Bytes written to the file so far.
    pub written: u64,
}

/// What the registry answered, once its head arrived with a body the cache keeps.
pub(super) struct Arrived {
    pub size: u64,
    pub content_type: String,
    /// The growing file (renamed into the store on completion; readers keep this handle).
    pub file: Arc<File>,
    /// The committed file's identity, set before [`Stage::Complete`].
    pub committed: OnceLock<FileId>,
}

/// One registry fetch, shared by every request for its digest while it runs.
pub(super) struct Fetch {
    pub digest: String,
    pub kind: Kind,
    arrived: OnceLock<Arrived>,
    progress: watch::Sender<Progress>,
    /// The last bytes written, for the answers keeping up.
    pub window: Window,
}

/// Fetches running at once. A fetch goes on after its clients left (up to
/// `cache.max_object`), so a client asking for many cold digests and leaving would otherwise
/// start as many downloads; past this bound a cold pull is proxied and fills nothing.
/// Memory: each fetch holds its window and two batches (about 6 MiB).
pub(super) const MAX_FETCHES: usize = 32;

/// The fetches running now, by digest.
#[derive(Default)]
pub(super) struct Fetches(Mutex<HashMap<String, Arc<Fetch>>>);

impl Fetches {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Fetch>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The running fetch of `digest`, or a new one on `kind`; `true` when new (the caller
    /// runs it, then calls [`Fetches::end`]).
    /// `None` when `cached()` says it was committed meanwhile (asked under the lock, and a
    /// fetch commits before it ends, so no second fetch of a cached digest starts), or
    /// when [`MAX_FETCHES`] run already.
    pub(super) fn join(
        &self,
        digest: &str,
        kind: Kind,
        cached: impl FnOnce() -> bool,
    ) -> Option<(Arc<Fetch>, bool)> {
        let mut fetches = self.lock();
        if let Some(fetch) = fetches.get(digest) {
            return Some((Arc::clone(fetch), false));
        }
        if fetches.len() >= MAX_FETCHES || cached() {
            return None;
        }
        let fetch = Arc::new(Fetch::new(digest, kind));
        fetches.insert(digest.to_string(), Arc::clone(&fetch));
        Some((fetch, true))
    }

    /// `fetch` is no longer running: the next request for its digest finds the entry, or
    /// starts another.
    pub(super) fn end(&self, fetch: &Arc<Fetch>) {
        let mut fetches = self.lock();
        if fetches
            .get(&fetch.digest)
            .is_some_and(|f| Arc::ptr_eq(f, fetch))
        {
            fetches.remove(&fetch.digest);
        }
    }
}

impl Fetch {
    /// A fetch of `digest` on `kind`, asking.
    fn new(digest: &str, kind: Kind) -> Fetch {
        Fetch {
            digest: digest.to_string(),
            kind,
            arrived: OnceLock::new(),
            progress: watch::Sender::new(Progress {
                stage: Stage::Asking,
                written: 0,
            }),
            window: Window::default(),
        }
    }

    /// Waits (at most `limit`) for the registry's answer: what arrived when it is a body
    /// the cache keeps, `None` otherwise (the request then goes to the registry).
    pub(super) async fn arrived(&self, limit: Duration) -> Option<&Arrived> {
        let mut progress = self.progress.subscribe();
        let asked = progress.wait_for(|p| p.stage != Stage::Asking);
        let stage = tokio::time::timeout(limit, asked).await.ok()?.ok()?.stage;
        match stage {
            Stage::Arriving | Stage::Complete => self.arrived.get(),
            // Ended without an entry before this request joined: it goes to the registry.
            _ => None,
        }
    }

    /// Follows the fetch's progress.
    pub(super) fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    pub(super) fn set(&self, stage: Stage) {
        self.progress.send_modify(|p| p.stage = stage);
    }

    /// Records that `written` bytes are in the file.
    pub(super) fn wrote(&self, written: u64) {
        self.progress.send_modify(|p| p.written = written);
    }

    /// Records what arrived; `false` if something had already.
    pub(super) fn arrive(&self, arrived: Arrived) -> bool {
        self.arrived.set(arrived).is_ok()
    }

    /// What arrived, without waiting.
    pub(super) fn arrived_now(&self) -> Option<&Arrived> {
        self.arrived.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_fetch_per_digest_none_for_a_cached_one_and_no_more_than_the_bound() {
        let fetches = Fetches::default();
        let (first, started) = fetches.join("sha256:a", Kind::Blob, || false).unwrap();
        assert!(started);
        let (again, started) = fetches.join("sha256:a", Kind::Blob, || false).unwrap();
        assert!(
            !started && Arc::ptr_eq(&first, &again),
            "one fetch per digest"
        );
        assert!(
            fetches.join("sha256:b", Kind::Blob, || true).is_none(),
            "cached"
        );
        for i in 1..MAX_FETCHES {
            assert!(fetches
                .join(&format!("sha256:{i}"), Kind::Blob, || false)
                .is_some());
        }
        assert!(
            fetches.join("sha256:over", Kind::Blob, || false).is_none(),
            "over the bound"
        );
        fetches.end(&first);
        assert!(fetches.join("sha256:over", Kind::Blob, || false).is_some());
    }
}
