//! `cache:`: the edge's content-addressed cache of blobs and manifests pulled by digest.
//!
//! Sizes are written as operators write them (`50GiB`, `256MiB`, `500MB`, or plain bytes),
//! parsed by the `bytesize` crate: binary units (`KiB`, `MiB`, `GiB`, `TiB`) are powers of
//! 1024, decimal ones (`KB`, `MB`, `GB`) powers of 1000.

use std::path::PathBuf;

use super::error::ConfigError;
use super::file::CacheFile;
use super::keys::{key_table, Changes};
use super::validate::Validator;

/// `max_object` when the file sets none: blobs above it are passed through uncached.
const DEFAULT_MAX_OBJECT: u64 = 20 << 30;
/// `memory` when the file sets none.
const DEFAULT_MEMORY: u64 = 64 << 20;

/// The validated `cache:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// Where entries live (created 0700 at start; survives restarts). Needs a restart to move.
    pub dir: PathBuf,
    /// Bytes on disk before the least recently used entries are evicted. Live on reload.
    pub max_size: u64,
    /// Bytes of small hot objects also kept in memory. Live on reload.
    pub memory: u64,
    /// Largest object cached, in bytes; larger blobs are passed through, never cached.
    pub max_object: u64,
}

key_table! {
    // The cache is opened at start; removing `cache:` stops answers from it at once
    // (admission reads the new settings).
    DIR = AtRestartUnlessRemoved("cache.dir");
    // Its budgets are read per request.
    MAX_SIZE = Live("cache.max_size");
    MEMORY = Live("cache.memory");
    MAX_OBJECT = Live("cache.max_object");
}

/// Notes which `cache` keys differ. Turning the cache on or off is a change of `cache.dir`.
pub(super) fn cache_changes(
    old: &Option<CacheSettings>,
    new: &Option<CacheSettings>,
    changes: &mut Changes,
) {
    let dir = |c: &Option<CacheSettings>| c.as_ref().map(|c| c.dir.clone());
    changes.note_optional(DIR, &dir(old), &dir(new));
    let (Some(old), Some(new)) = (old, new) else {
        return;
    };
    let CacheSettings {
        dir: _,
        max_size,
        memory,
        max_object,
    } = old;
    changes.note(MAX_SIZE, max_size, &new.max_size);
    changes.note(MEMORY, memory, &new.memory);
    changes.note(MAX_OBJECT, max_object, &new.max_object);
}

pub(super) fn cache_settings(v: &Validator, file: CacheFile) -> Result<CacheSettings, ConfigError> {
    let CacheFile {
        dir,
        max_size,
        memory,
        max_object,
    } = file;
    if dir.trim().is_empty() {
        return Err(v.invalid("cache.dir", "must name a directory"));
    }
    let max_size = v.size("cache.max_size", &max_size)?;
    if max_size == 0 {
        return Err(v.invalid("cache.max_size", "must be greater than 0"));
    }
    let memory = match memory {
        Some(text) => v.size("cache.memory", &text)?,
        None => DEFAULT_MEMORY.min(max_size),
    };
    let max_object = match max_object {
        Some(text) => v.size("cache.max_object", &text)?,
        None => DEFAULT_MAX_OBJECT.min(max_size),
    };
    if max_object == 0 {
        return Err(v.invalid("cache.max_object", "must be greater than 0"));
    }
    if memory > max_size {
        return Err(v.invalid(
            "cache.memory",
            format!("{memory} bytes is more than cache.max_size ({max_size} bytes): the memory tier holds only entries also on disk"),
        ));
    }
    if max_object > max_size {
        return Err(v.invalid(
            "cache.max_object",
            format!("{max_object} bytes is more than cache.max_size ({max_size} bytes): such an object could never be kept"),
        ));
    }
    let dir = v.file_path(&dir);
    v.writable_dir("cache.dir", &dir)?;
    Ok(CacheSettings {
        dir,
        max_size,
        memory,
        max_object,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(yaml: &str) -> Result<CacheSettings, ConfigError> {
        let file: CacheFile = serde_yaml::from_str(yaml).unwrap();
        let path = std::path::Path::new("/etc/registry-edge/edge.yaml");
        cache_settings(&Validator::new(path), file)
    }

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        let s = settings(
            "{ dir: /tmp/edge-cache, max_size: 50GiB, memory: 256MiB, max_object: 500MB }",
        )
        .unwrap();
        assert_eq!(s.dir, PathBuf::from("/tmp/edge-cache"));
        assert_eq!(
            (s.max_size, s.memory, s.max_object),
            (50 << 30, 256 << 20, 500_000_000)
        );
        let s = settings("{ dir: /tmp/edge-cache, max_size: \"1048576\" }").unwrap();
        assert_eq!(
            (s.max_size, s.memory, s.max_object),
            (1 << 20, 1 << 20, 1 << 20)
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        for (yaml, key) in [
            ("{ dir: c, max_size: lots }", "cache.max_size"),
            ("{ dir: c, max_size: 0 }", "cache.max_size"),
            ("{ dir: c, max_size: 1GiB, memory: 12XB }", "cache.memory"),
            (
                "{ dir: c, max_size: 1GiB, max_object: 2GiB }",
                "cache.max_object",
            ),
            ("{ dir: \" \", max_size: 1GiB }", "cache.dir"),
            ("{ dir: c, max_size: 1MiB, memory: 2MiB }", "cache.memory"),
            ("{ dir: /dev/null, max_size: 1GiB }", "cache.dir"),
            ("{ dir: /dev/null/cache, max_size: 1GiB }", "cache.dir"),
        ] {
            let error = settings(yaml).unwrap_err().to_string();
            assert!(error.contains(key), "{yaml}: {error}");
        }
    }
}
