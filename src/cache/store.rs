//! The entries on disk and their in-memory index.
//!
//! Files are `cacache`'s: content under `content-v2/` named by its SHA-256, an index entry
//! per digest (key `sha256:<hex>`) holding the size and the registry's `Content-Type` per
//! endpoint (`{"types": {"blob": …, "manifest": …}}`). The
//! in-memory index (least recently used first) is rebuilt from those entries at start, so
//! there is no separate database to lose or corrupt; entries whose content file is gone are
//! skipped. Eviction removes least recently used entries until the total is within
//! `cache.max_size`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use lru::LruCache;

use super::disk::{integrity_of, sha256_hex, CacheError};
pub(crate) use super::entry::{Entry, FileId, Kind};
use crate::metrics::metrics;

struct Index {
    entries: LruCache<String, Entry>,
    /// Per entry, its file as last verified (`read`): empty after a start.
    verified: HashMap<String, FileId>,
    /// Sum of the entries' sizes.
    bytes: u64,
}

/// The cache folder and its index.
pub(crate) struct Store {
    dir: PathBuf,
    index: Mutex<Index>,
}

impl Store {
    /// Rebuilds the index from `dir`, oldest entries first, then evicts down to `max_size`.
    pub(crate) fn open(dir: &Path, max_size: u64) -> Result<Store, CacheError> {
        let mut found = Vec::new();
        for item in cacache::list_sync(dir) {
            let meta = match item {
                Ok(meta) => meta,
                // A new cache has no index folder yet.
                Err(cacache::Error::IoError(e, _)) if e.kind() == std::io::ErrorKind::NotFound => {
                    break;
                }
                Err(source) => {
                    return Err(CacheError::Index {
                        dir: dir.to_path_buf(),
                        source,
                    })
                }
            };
            // An index entry must name its own digest's content: one pointing elsewhere (or
            // at nothing) is not an entry.
            let names_itself =
                integrity_of(&meta.key).is_some_and(|own| own.matches(&meta.integrity).is_some());
            if !names_itself || !content_exists(dir, &meta.integrity) {
                continue;
            }
            let entry = Entry::from_metadata(meta.size as u64, &meta.metadata);
            found.push((meta.time, meta.key, entry));
        }
        found.sort_by_key(|(time, ..)| *time);
        let store = Store {
            dir: dir.to_path_buf(),
            index: Mutex::new(Index {
                entries: LruCache::unbounded(),
                verified: HashMap::new(),
                bytes: 0,
            }),
        };
        for (_, key, entry) in found {
            store.insert(key, entry, max_size);
        }
        tracing::info!(
            "cache {}: {} entries, {} bytes",
            dir.display(),
            store.len(),
            store.bytes()
        );
        Ok(store)
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry for `digest`, marked as just used.
    pub(crate) fn get(&self, digest: &str) -> Option<Entry> {
        self.lock().entries.get(digest).cloned()
    }

    /// The entry for `digest`, without marking it used.
    pub(crate) fn peek(&self, digest: &str) -> Option<Entry> {
        self.lock().entries.peek(digest).cloned()
    }

    /// The file holding `digest`'s content (`cacache`'s layout), for a SHA-256 digest.
    pub(crate) fn content_file(&self, digest: &str) -> Option<PathBuf> {
        sha256_hex(digest).map(|hex| content_path(&self.dir, hex))
    }

    /// The file of `digest` as it was when last verified.
    pub(crate) fn verified(&self, digest: &str) -> Option<FileId> {
        self.lock().verified.get(digest).copied()
    }

    /// Records that `digest`'s file, as `id` identifies it, matched the digest.
    pub(crate) fn mark_verified(&self, digest: &str, id: FileId) {
        let mut index = self.lock();
        if index.entries.contains(digest) {
            index.verified.insert(digest.to_string(), id);
        }
    }

    /// Whether the content file of `digest` is still on disk: one `stat`, no open. An
    /// object kept in memory is served only while its file exists, so a purge by another
    /// process (`registry-edge cache purge`) reaches the memory tier too.
    pub(crate) fn content_on_disk(&self, digest: &str) -> bool {
        self.content_file(digest)
            .is_some_and(|path| std::fs::symlink_metadata(path).is_ok())
    }

    /// Whether `digest` is cached, without marking it used.
    pub(crate) fn contains(&self, digest: &str) -> bool {
        self.lock().entries.contains(digest)
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Adds a committed entry, then evicts least recently used ones over `max_size`.
    pub(crate) fn insert(&self, digest: String, entry: Entry, max_size: u64) {
        let evicted = {
            let mut index = self.lock();
            index.verified.remove(&digest);
            index.bytes += entry.size;
            if let Some(old) = index.entries.put(digest, entry) {
                index.bytes -= old.size;
            }
            let mut evicted = Vec::new();
            while index.bytes > max_size {
                let Some((key, old)) = index.entries.pop_lru() else {
                    break;
                };
                index.bytes -= old.size;
                index.verified.remove(&key);
                evicted.push(key);
            }
            metrics().cache_size.set(index.bytes as i64);
            evicted
        };
        for key in evicted {
            metrics()
                .cache_events
                .with_label_values(&["eviction"])
                .inc();
            self.delete_files(&key);
        }
    }

    /// Records the registry's `Content-Type` for `digest` on `kind` (an answer on an endpoint
    /// the entry had not seen), in the index and on disk.
    pub(crate) fn learn_type(&self, digest: &str, kind: Kind, content_type: &str) {
        let learned = {
            let mut index = self.lock();
            let Some(entry) = index.entries.peek_mut(digest) else {
                return;
            };
            if entry.content_type(kind) == Some(content_type) {
                return;
            }
            entry.learn(kind, content_type);
            entry.clone()
        };
        let (dir, digest) = (self.dir.clone(), digest.to_string());
        let Some(integrity) = integrity_of(&digest) else {
            return;
        };
        let write = move || {
            let opts = cacache::WriteOpts::new()
                .integrity(integrity)
                .size(learned.size as usize)
                .metadata(learned.metadata());
            if let Err(e) = cacache::index::insert(&dir, &digest, opts) {
                tracing::warn!("cache: cannot record a content type of {digest}: {e}");
            }
        };
        off_the_runtime(write);
    }

    /// Forgets `digest` and deletes its files (a failed verification, a purge).
    pub(crate) fn remove(&self, digest: &str) {
        let removed = {
            let mut index = self.lock();
            let removed = index.entries.pop(digest);
            index.verified.remove(digest);
            if let Some(old) = &removed {
                index.bytes -= old.size;
            }
            metrics().cache_size.set(index.bytes as i64);
            removed.is_some()
        };
        if removed {
            self.delete_files(digest);
        }
    }

    /// Every cached digest.
    pub(crate) fn digests(&self) -> Vec<String> {
        self.lock().entries.iter().map(|(k, _)| k.clone()).collect()
    }

    /// Forgets `digest` whose files are already gone (purged by `registry-edge cache purge`).
    pub(crate) fn forget(&self, digest: &str) {
        let mut index = self.lock();
        index.verified.remove(digest);
        if let Some(old) = index.entries.pop(digest) {
            index.bytes -= old.size;
        }
        metrics().cache_size.set(index.bytes as i64);
    }

    /// Removes the index entry and the content. Content is shared by nothing else: the key
    /// is the content's own digest. Unlinking a large file can take a while, so inside the
    /// runtime it goes to the blocking pool.
    fn delete_files(&self, digest: &str) {
        let (dir, digest) = (self.dir.clone(), digest.to_string());
        let delete = move || {
            if let Ok(Some(meta)) = cacache::index::find(&dir, &digest) {
                let _ = cacache::remove_hash_sync(&dir, &meta.integrity);
            }
            let _ = cacache::RemoveOpts::new()
                .remove_fully(true)
                .remove_sync(&dir, &digest);
        };
        off_the_runtime(delete);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        // A panic while holding the lock leaves a consistent index (every update is a
        // few arithmetic steps), so a poisoned lock is still usable.
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs file work on Tokio's blocking pool when inside the runtime (an unlink or an index
/// write may take a while), else here (start-up, the `cache purge` command).
fn off_the_runtime(work: impl FnOnce() + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(work)),
        Err(_) => work(),
    }
}

/// Where `cacache` keeps content of SHA-256 `hex` (its `content-v2` layout, checked by
/// the tests against what it writes).
pub(super) fn content_path(dir: &Path, hex: &str) -> PathBuf {
    dir.join("content-v2/sha256")
        .join(&hex[..2])
        .join(&hex[2..4])
        .join(&hex[4..])
}

fn content_exists(dir: &Path, integrity: &cacache::Integrity) -> bool {
    cacache::SyncReader::open_hash(dir, integrity.clone()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(size: u64) -> Entry {
        Entry::new(size, Kind::Blob, "application/octet-stream")
    }

    fn put(dir: &Path, bytes: &[u8]) -> String {
        use sha2::Digest;
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)));
        let opts = cacache::WriteOpts::new()
            .algorithm(cacache::Algorithm::Sha256)
            .size(bytes.len())
            .metadata(serde_json::json!({ "types": { "blob": "text/plain" } }));
        let mut writer = opts.open_sync(dir, &digest).unwrap();
        std::io::Write::write_all(&mut writer, bytes).unwrap();
        writer.commit().unwrap();
        digest
    }

    #[test]
    fn the_index_is_rebuilt_from_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let a = put(dir.path(), b"first");
        let b = put(dir.path(), b"second!");
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.len(), 2);
        assert_eq!(store.bytes(), 12);
        assert_eq!(store.get(&a), Some(Entry::new(5, Kind::Blob, "text/plain")));
        assert!(store.contains(&b));
        assert!(
            store.content_on_disk(&a),
            "content_path differs from cacache's layout"
        );
        cacache::remove_hash_sync(dir.path(), &integrity_of(&a).unwrap()).unwrap();
        assert!(!store.content_on_disk(&a));
    }

    #[test]
    fn least_recently_used_entries_go_first_and_their_files_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let a = put(dir.path(), b"aaaa");
        let b = put(dir.path(), b"bbbb");
        let store = Store::open(dir.path(), 8).unwrap();
        store.get(&a);
        let c = put(dir.path(), b"cccc");
        store.insert(c.clone(), entry(4), 8);
        assert!(store.contains(&a) && store.contains(&c));
        assert!(!store.contains(&b), "b was the least recently used");
        assert_eq!(store.bytes(), 8);
        // Gone from disk too: a restart does not bring it back.
        let reopened = Store::open(dir.path(), 8).unwrap();
        assert!(!reopened.contains(&b));
        assert_eq!(reopened.len(), 2);
    }

    #[test]
    fn an_index_entry_naming_other_content_is_not_an_entry() {
        use sha2::Digest;
        let dir = tempfile::tempdir().unwrap();
        let other = put(dir.path(), b"what is really there");
        let claimed = format!("sha256:{}", hex::encode(sha2::Sha256::digest(b"wanted")));
        let integrity = cacache::index::find(dir.path(), &other)
            .unwrap()
            .unwrap()
            .integrity;
        let opts = cacache::WriteOpts::new().integrity(integrity).size(20);
        cacache::index::insert(dir.path(), &claimed, opts).unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert!(
            !store.contains(&claimed),
            "an entry pointing at another digest's content"
        );
        assert!(store.contains(&other));
    }

    #[test]
    fn a_removed_entry_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let a = put(dir.path(), b"gone");
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        store.remove(&a);
        assert_eq!((store.len(), store.bytes()), (0, 0));
        assert_eq!(Store::open(dir.path(), 1 << 20).unwrap().len(), 0);
    }

    #[test]
    fn an_entry_learns_each_endpoint_s_type_and_keeps_it_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let a = put(dir.path(), b"manifest bytes");
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let entry = store.get(&a).unwrap();
        assert_eq!(entry.content_type(Kind::Blob), Some("text/plain"));
        assert_eq!(
            entry.content_type(Kind::Manifest),
            None,
            "not seen on /manifests/"
        );
        store.learn_type(
            &a,
            Kind::Manifest,
            "application/vnd.oci.image.manifest.v1+json",
        );
        let reopened = Store::open(dir.path(), 1 << 20).unwrap().get(&a).unwrap();
        assert_eq!(
            reopened.content_type(Kind::Manifest),
            Some("application/vnd.oci.image.manifest.v1+json")
        );
        assert_eq!(reopened.content_type(Kind::Blob), Some("text/plain"));
    }

    #[test]
    fn an_entry_from_before_endpoints_were_kept_knows_none() {
        let legacy = serde_json::json!({ "content_type": "application/octet-stream" });
        let entry = Entry::from_metadata(3, &legacy);
        assert_eq!(entry.content_type(Kind::Blob), None);
        assert_eq!(entry.content_type(Kind::Manifest), None);
    }
}
