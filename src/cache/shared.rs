//! The cache every request shares: its store, the confirmed pairs, the memory tier, the
//! digests being fetched, and whether caching still works.

use std::sync::atomic::{AtomicBool, Ordering};

use super::confirmed::Confirmed;
use super::disk::CacheError;
use super::fetch::Fetches;
use super::memory::Memory;
use super::store::Store;
use super::tags::RememberedTags;
use crate::config::CacheSettings;
use crate::metrics::metrics;
use crate::state_dir::create_private_dir;
use crate::upstream::RegistryClient;

/// Range answers read from the disk at once.
const RANGE_READS: usize = 2;

/// The cache: its store, the confirmed pairs, and whether caching still works. Its parts
/// are the cache folder's own (`pub(super)`): the proxy reaches them only through the hooks.
pub(crate) struct Cache {
    pub(super) store: Store,
    pub(super) confirmed: Confirmed,
    /// Verified small objects, served without reading a file.
    pub(super) memory: Memory,
    /// The registry fetches running now, one per digest.
    pub(super) fetches: Fetches,
    /// Fetches from registry nodes, and asks them whether a client may pull a digest.
    pub(super) registry: RegistryClient,
    /// Range answers read (and hash) the whole entry: at most this many at once, so small
    /// ranges on huge entries cannot take every core and the disk.
    pub(super) range_reads: tokio::sync::Semaphore,
    /// Remembered tags of routes with `stale_if_error`; `None` when their file could not
    /// be opened (logged: the routes then answer no stale tags).
    pub(super) tags: Option<RememberedTags>,
    /// Set after an I/O error: nothing more is written (already cached entries are still
    /// served; reading verifies them).
    broken: AtomicBool,
}

impl Cache {
    /// Creates `settings.dir` (0700) if needed and rebuilds the index from it; `registry`
    /// asks the nodes for confirmations (the client the edge shares for its own lookups).
    pub(crate) fn open(
        settings: &CacheSettings,
        registry: RegistryClient,
    ) -> Result<Cache, CacheError> {
        create_private_dir(&settings.dir).map_err(|source| CacheError::Dir {
            dir: settings.dir.clone(),
            source,
        })?;
        super::disk::sweep_temporary(&settings.dir);
        let store = Store::open(&settings.dir, settings.max_size)?;
        let tags = RememberedTags::open(&settings.dir)
            .map_err(|e| {
                tracing::error!("cache: remembered tags unavailable, no stale answers: {e}")
            })
            .ok();
        Ok(Cache {
            tags,
            store,
            confirmed: Confirmed::new(),
            memory: Memory::default(),
            fetches: Fetches::default(),
            range_reads: tokio::sync::Semaphore::new(RANGE_READS),
            registry,
            broken: AtomicBool::new(false),
        })
    }

    /// A 1 MiB cache in `dir` with no memory tier, for unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests(dir: &std::path::Path) -> Cache {
        let settings = CacheSettings {
            dir: dir.to_path_buf(),
            max_size: 1 << 20,
            memory: 0,
            max_object: 1 << 20,
        };
        let registry = RegistryClient::new().expect("the system's TLS roots");
        Cache::open(&settings, registry).expect("a cache in a fresh folder")
    }

    /// Whether new entries may be written.
    pub(super) fn writable(&self) -> bool {
        !self.broken.load(Ordering::Relaxed)
    }

    /// Stops caching after an I/O error (a full disk, a folder gone), logging it once.
    pub(super) fn fail(&self, what: &str, error: &dyn std::fmt::Display) {
        metrics().cache_events.with_label_values(&["error"]).inc();
        if !self.broken.swap(true, Ordering::Relaxed) {
            tracing::error!(
                "cache: {what}: {error}; caching stops until restart, pulls go to the registry"
            );
        }
    }
}
