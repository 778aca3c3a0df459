//! `registry-edge cache purge`: deleting entries from the cache folder, all or one.

use super::disk::{sha256_hex, CacheError};
use super::store::Store;
use crate::config::CacheSettings;

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
