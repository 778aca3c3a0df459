//! The cache of blobs and manifests pulled by digest (`cache:`).
//!
//! Content is addressed by its SHA-256, so one entry serves every repository that holds
//! it; who may be answered from it is decided per request (`proxy::cache_answer`): the edge
//! granted pull on the repository, and the registry confirmed that this repository holds
//! this digest ([`confirmed`]).
//!
//! - [`store`]: the entries on disk (the `cacache` crate: content-addressed files checked
//!   against their SHA-256 when written and while read) and the in-memory index (size,
//!   content type, least recently used first) rebuilt from the folder at start.
//! - [`fill`]: an entry written while the registry's answer streams to the client; visible
//!   only once its SHA-256 matched the digest.
//! - [`confirmed`]: the repository+digest pairs the registry answered 200 for.
//! - [`inflight`]: one registry fetch per digest when many pull it cold at once.
//! - [`memory`]: small hot objects (manifests, configs) also kept in memory.
//!
//! A full disk or an I/O error stops caching (logged once, counted) and every request goes
//! to the registry as before.

pub(crate) mod confirmed;
pub(crate) mod fill;
pub(crate) mod inflight;
pub(crate) mod memory;
pub(crate) mod store;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::CacheSettings;
use crate::metrics::metrics;

pub(crate) use confirmed::Confirmed;
pub(crate) use store::{Entry, Store};

/// How long a proxy-only mode `HEAD` to the registry may take before the request is sent
/// on to the registry as usual.
const REGISTRY_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Bytes all fills together may have queued for the disk (each fill also has its own
/// bound, `fill::MAX_QUEUED`); past it, chunks are not queued and their fills are given up.
const FILL_BUDGET: u64 = 256 << 20;

/// Range answers read from the disk at once.
const RANGE_READS: usize = 2;

/// Why the cache could not be opened at start.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache.dir {}: {source}", dir.display())]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot build the client that asks the registry")]
    Client(#[from] crate::upstream::RegistryClientError),
    #[error("{0:?} is not a digest the cache keeps (sha256:<64 lowercase hex>)")]
    Digest(String),
    #[error("cache.dir {}: cannot read its entries: {source}", dir.display())]
    Index {
        dir: PathBuf,
        source: cacache::Error,
    },
}

/// The cache: its store, the confirmed pairs, and whether caching still works.
pub(crate) struct Cache {
    pub store: Store,
    pub confirmed: Confirmed,
    /// Verified small objects, served without reading a file.
    pub memory: memory::Memory,
    /// Digests being filled now (one fill per digest).
    filling: fill::Filling,
    /// Digests a leading request is fetching now.
    inflight: inflight::Inflight,
    /// Asks a registry node whether a client may pull a digest (proxy-only mode).
    pub registry_client: reqwest::Client,
    /// Bytes all fills together have queued for the disk, and the most they may.
    pub(crate) fill_backlog: std::sync::atomic::AtomicU64,
    pub(crate) fill_budget: u64,
    /// Range answers read (and hash) the whole entry: at most this many at once, so small
    /// ranges on huge entries cannot take every core and the disk.
    pub(crate) range_reads: tokio::sync::Semaphore,
    /// Set after an I/O error: nothing more is written (already cached entries are still
    /// served; reading verifies them).
    broken: AtomicBool,
}

impl Cache {
    /// Creates `settings.dir` (0700) if needed and rebuilds the index from it.
    pub(crate) fn open(settings: &CacheSettings) -> Result<Cache, CacheError> {
        create_private_dir(&settings.dir).map_err(|source| CacheError::Dir {
            dir: settings.dir.clone(),
            source,
        })?;
        let store = Store::open(&settings.dir, settings.max_size)?;
        Ok(Cache {
            store,
            confirmed: Confirmed::new(),
            memory: memory::Memory::default(),
            filling: fill::Filling::default(),
            inflight: inflight::Inflight::default(),
            fill_backlog: std::sync::atomic::AtomicU64::new(0),
            fill_budget: FILL_BUDGET,
            range_reads: tokio::sync::Semaphore::new(RANGE_READS),
            registry_client: crate::upstream::registry_client(REGISTRY_CHECK_TIMEOUT)?,
            broken: AtomicBool::new(false),
        })
    }

    /// A 1 MiB cache in `dir` with no memory tier, for unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests(dir: &Path) -> Cache {
        let settings = CacheSettings {
            dir: dir.to_path_buf(),
            max_size: 1 << 20,
            memory: 0,
            max_object: 1 << 20,
        };
        Cache::open(&settings).expect("a cache in a fresh folder")
    }

    /// Whether new entries may be written.
    pub(crate) fn writable(&self) -> bool {
        !self.broken.load(Ordering::Relaxed)
    }

    /// Stops caching after an I/O error (a full disk, a folder gone), logging it once.
    pub(crate) fn fail(&self, what: &str, error: &dyn std::fmt::Display) {
        metrics().cache_events.with_label_values(&["error"]).inc();
        if !self.broken.swap(true, Ordering::Relaxed) {
            tracing::error!(
                "cache: {what}: {error}; caching stops until restart, pulls go to the registry"
            );
        }
    }
}

/// What `registry-edge cache purge` removed: entries and their bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub entries: usize,
    pub bytes: u64,
}

/// Deletes every entry under `settings.dir`, or only `digest` (`sha256:<hex>`).
///
/// A running edge notices on the next GET of a purged entry (its file is gone) and asks
/// the registry instead; a HEAD may still be answered from its index until then.
///
/// # Errors
/// The folder cannot be read, or `digest` is not a SHA-256 digest.
pub fn purge(settings: &CacheSettings, digest: Option<&str>) -> Result<Purged, CacheError> {
    let dir = &settings.dir;
    let store = Store::open(dir, u64::MAX)?;
    let digests: Vec<String> = match digest {
        Some(digest) => {
            if sha256_hex(digest).is_none() {
                return Err(CacheError::Digest(digest.to_string()));
            }
            store
                .get(digest)
                .map(|_| vec![digest.to_string()])
                .unwrap_or_default()
        }
        None => store.digests(),
    };
    let mut purged = Purged {
        entries: 0,
        bytes: 0,
    };
    for digest in digests {
        if let Some(entry) = store.get(&digest) {
            store.remove(&digest);
            purged.entries += 1;
            purged.bytes += entry.size;
        }
    }
    Ok(purged)
}

/// Creates `dir` (and its parents) with mode 0700 (private images, private usage) unless it
/// is a folder already; an existing file of that name is an error. Shared with the policy
/// store.
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(std::io::Error::other("exists and is not a folder")),
        Err(_) => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir),
    }
}

/// The `cacache` integrity a digest names, if it is a SHA-256 digest.
pub(crate) fn integrity_of(digest: &str) -> Option<cacache::Integrity> {
    cacache::Integrity::from_hex(sha256_hex(digest)?, cacache::Algorithm::Sha256).ok()
}

/// Opens `digest`'s content for a read that checks it against the digest itself.
pub(crate) async fn open_content(
    dir: &Path,
    digest: &str,
) -> Result<cacache::Reader, cacache::Error> {
    let integrity = integrity_of(digest)
        .ok_or_else(|| cacache::Error::EntryNotFound(dir.to_path_buf(), digest.to_string()))?;
    cacache::Reader::open_hash(dir, integrity).await
}

/// Whether a `cacache` error says the content is not there (purged, removed by hand).
pub(crate) fn is_not_found(error: &cacache::Error) -> bool {
    match error {
        cacache::Error::EntryNotFound(..) => true,
        cacache::Error::IoError(e, _) => e.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}

/// The hex part of `sha256:<64 hex>`, or `None` for any other digest (only SHA-256
/// content is cached: it is what the registry and the `cacache` store both verify).
pub(crate) fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lowercase_sha256_digests_are_cacheable() {
        let hex = "a".repeat(64);
        assert_eq!(sha256_hex(&format!("sha256:{hex}")), Some(hex.as_str()));
        for other in [
            format!("sha512:{hex}"),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}", "a".repeat(63)),
            "latest".to_string(),
        ] {
            assert_eq!(sha256_hex(&other), None, "{other}");
        }
    }

    #[test]
    fn the_folder_is_created_private() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/cache");
        create_private_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::write(root.path().join("file"), b"x").unwrap();
        assert!(create_private_dir(&root.path().join("file")).is_err());
    }
}
