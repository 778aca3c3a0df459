//! The digests claimed right now: by a fill (one per digest) and by a leading fetch (one
//! registry fetch per digest, `inflight`).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::watch;

/// The digests being filled now: one fill per digest at a time.
#[derive(Default)]
pub(super) struct Filling(Mutex<HashSet<String>>);

impl Filling {
    /// Claims `digest` for a fill; `false` when another fill has it.
    pub(super) fn claim(&self, digest: &str) -> bool {
        self.lock().insert(digest.to_string())
    }

    pub(super) fn release(&self, digest: &str) {
        self.lock().remove(digest);
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The digests being fetched by a leader now, with the signal its followers wait on.
#[derive(Default)]
pub(super) struct Inflight(Mutex<HashMap<String, watch::Receiver<bool>>>);

impl Inflight {
    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<String, watch::Receiver<bool>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
