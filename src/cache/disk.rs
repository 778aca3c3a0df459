//! The cache folder and the digests it keeps: why the cache could not be opened, and which
//! digests it keeps (SHA-256 only).

use std::path::PathBuf;

/// Why the cache could not be opened at start.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache.dir {}: {source}", dir.display())]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{0:?} is not a digest the cache keeps (sha256:<64 lowercase hex>)")]
    Digest(String),
    #[error("cache.dir {}: cannot read its entries: {source}", dir.display())]
    Index {
        dir: PathBuf,
        source: cacache::Error,
    },
}

/// The `cacache` integrity a digest names, if it is a SHA-256 digest.
pub(crate) fn integrity_of(digest: &str) -> Option<cacache::Integrity> {
    cacache::Integrity::from_hex(sha256_hex(digest)?, cacache::Algorithm::Sha256).ok()
}

/// The hex part of `sha256:<64 hex>`, or `None` for any other digest (only SHA-256
/// content is cached: it is what the registry and the `cacache` store both verify).
pub(crate) fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(hex)
}

/// Whether `hasher`, fed some content, says it is `digest`'s: the one check every path
/// that hashes content (a fill, a verifying read) makes before trusting it.
pub(crate) fn hashes_to(hasher: sha2::Sha256, digest: &str) -> bool {
    use sha2::Digest;
    let hex = format!("{:x}", hasher.finalize());
    sha256_hex(digest) == Some(hex.as_str())
}

/// Removes the temporary files a fill left in `dir/tmp/` when the edge stopped mid-way (a
/// crash, a kill): at start no fill runs. `registry-edge cache purge` never calls this, as
/// it runs beside a live edge. Errors are logged; nothing depends on it.
pub(crate) fn sweep_temporary(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir.join("tmp")) else {
        return;
    };
    for entry in entries.flatten() {
        if let Err(e) = std::fs::remove_file(entry.path()) {
            tracing::warn!("cache: cannot remove {}: {e}", entry.path().display());
        }
    }
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
}
