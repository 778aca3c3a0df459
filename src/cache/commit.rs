//! Putting content whose SHA-256 matched its digest into the store: a temporary file in
//! the cache folder's `tmp/` is renamed into `cacache`'s content layout (no copy), its
//! index entry written, and the in-memory index told. A temporary file not committed is
//! deleted when dropped (`tempfile`), so a failed or abandoned fill leaves nothing behind.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tempfile::TempPath;

use super::disk::{hashes_to, integrity_of, sha256_hex};
use super::entry::{Entry, FileId};
use super::memory::Memory;
use super::shared::Cache;
use crate::metrics::metrics;

/// Where an entry goes once committed: `cache.max_size` (eviction's bound) and
/// `cache.memory` (small objects also kept in memory) of the request that started it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    pub max_size: u64,
    pub memory: u64,
}

/// A new temporary file in `dir/tmp/` (created if needed, like `cacache`'s own), open for
/// writing and reading.
pub(super) fn temporary(dir: &Path) -> std::io::Result<(File, TempPath)> {
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp)?;
    Ok(tempfile::NamedTempFile::new_in(tmp)?.into_parts())
}

/// Renames `temp` (holding `digest`'s content, already hashed) into the content layout and
/// writes its index entry; blocking file work. Returns what identifies the committed file
/// (`file` is open on it), so it is trusted without hashing again.
pub(super) fn commit_file(
    dir: &Path,
    digest: &str,
    entry: &Entry,
    file: &File,
    temp: TempPath,
) -> Result<FileId, CommitError> {
    let (Some(hex), Some(integrity)) = (sha256_hex(digest), integrity_of(digest)) else {
        return Err(CommitError::NotSha256);
    };
    let target = super::store::content_path(dir, hex);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    temp.persist(&target).map_err(|e| e.error)?;
    let opts = cacache::WriteOpts::new()
        .integrity(integrity)
        .size(usize::try_from(entry.size).unwrap_or(usize::MAX))
        .metadata(entry.metadata());
    cacache::index::insert(dir, digest, opts)?;
    Ok(FileId::of(&file.metadata()?))
}

/// Why content could not be committed.
#[derive(Debug, thiserror::Error)]
pub(super) enum CommitError {
    #[error("not a sha256 digest")]
    NotSha256,
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Index(#[from] cacache::Error),
}

/// Adds a committed entry to the index (evicting down to `bounds.max_size`), trusted as
/// `id`, and a small one's `kept` bytes to the memory tier.
pub(super) fn index(
    cache: &Cache,
    digest: &str,
    entry: Entry,
    id: FileId,
    kept: Option<Bytes>,
    bounds: Bounds,
) {
    let size = entry.size;
    cache
        .store
        .insert(digest.to_string(), entry, bounds.max_size);
    cache.store.mark_verified(digest, id);
    if let Some(kept) = kept.filter(|_| Memory::wants(size, bounds.memory)) {
        cache.memory.put(digest, kept, bounds.memory);
    }
    metrics().cache_events.with_label_values(&["fill"]).inc();
}

/// Fills `digest` from a body already in memory (a manifest by tag): committed only when
/// its SHA-256 is the digest. Runs on Tokio's blocking pool.
pub(super) fn fill_from_memory(
    cache: std::sync::Arc<Cache>,
    digest: String,
    entry: Entry,
    body: Bytes,
    bounds: Bounds,
) {
    let work = move || {
        let matched = hashes_to(Sha256::new_with_prefix(&body), &digest);
        if !matched || body.len() as u64 != entry.size {
            metrics()
                .cache_events
                .with_label_values(&["mismatch"])
                .inc();
            tracing::warn!("cache: the registry's {digest} did not match its digest; not cached");
            return;
        }
        let dir = cache.store.dir().to_path_buf();
        let written = temporary(&dir).and_then(|(mut file, temp)| {
            file.write_all(&body)?;
            Ok((file, temp))
        });
        let committed = written
            .map_err(CommitError::from)
            .and_then(|(file, temp)| commit_file(&dir, &digest, &entry, &file, temp));
        match committed {
            Ok(id) => index(&cache, &digest, entry, id, Some(body), bounds),
            Err(e) => cache.fail("cannot write an entry", &e),
        }
    };
    drop(tokio::task::spawn_blocking(work));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::entry::Kind;
    use std::sync::Arc;

    fn digest(bytes: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
    }

    /// Waits (at most 5 s) for `done`.
    async fn settled(done: impl Fn() -> bool) -> bool {
        for _ in 0..500 {
            if done() {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        false
    }

    const BOUNDS: Bounds = Bounds {
        max_size: 1 << 20,
        memory: 1 << 20,
    };

    #[tokio::test]
    async fn a_matching_body_becomes_an_entry_that_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(Cache::for_tests(dir.path()));
        let body = Bytes::from(b"manifest bytes".repeat(100));
        let digest = digest(&body);
        let entry = Entry::new(body.len() as u64, Kind::Manifest, "application/json");
        fill_from_memory(Arc::clone(&cache), digest.clone(), entry, body, BOUNDS);
        assert!(settled(|| cache.store.contains(&digest)).await);
        let id = cache.store.verified(&digest).expect("trusted as committed");
        let file = cache.store.content_file(&digest).unwrap();
        assert_eq!(FileId::of(&std::fs::metadata(&file).unwrap()), id);
        let reopened = super::super::store::Store::open(dir.path(), 1 << 20).unwrap();
        let found = reopened.get(&digest).expect("indexed on disk");
        assert_eq!(found.content_type(Kind::Manifest), Some("application/json"));
        let leftovers = std::fs::read_dir(dir.path().join("tmp")).unwrap().count();
        assert_eq!(leftovers, 0, "the temporary file was renamed, not copied");
    }

    #[tokio::test]
    async fn a_body_that_is_not_its_digest_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(Cache::for_tests(dir.path()));
        let body = Bytes::from_static(b"the real content");
        let claimed = digest(b"other content!!!");
        let entry = Entry::new(body.len() as u64, Kind::Manifest, "application/json");
        let before = metrics()
            .cache_events
            .with_label_values(&["mismatch"])
            .get();
        fill_from_memory(Arc::clone(&cache), claimed.clone(), entry, body, BOUNDS);
        let counted = || {
            metrics()
                .cache_events
                .with_label_values(&["mismatch"])
                .get()
                > before
        };
        assert!(settled(counted).await);
        assert!(!cache.store.contains(&claimed));
        assert!(!cache.store.content_on_disk(&claimed));
    }
}
