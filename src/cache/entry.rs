//! What the cache knows of one digest without reading it: its size, per registry
//! endpoint the `Content-Type` the registry answered there, and what identifies its file
//! as verified.

use std::os::unix::fs::MetadataExt;

/// The endpoint a digest was asked on. The registry answers each differently (distribution
/// 2.8 has no `/blobs/` answer for a manifest; 3.x serves it as `application/octet-stream`),
/// so an entry is served only on the endpoints whose answer it has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// `/v2/<name>/blobs/<digest>`
    Blob,
    /// `/v2/<name>/manifests/<digest>`
    Manifest,
}

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::Blob => "blob",
            Kind::Manifest => "manifest",
        }
    }
}

/// What the registry answered for one digest, enough to answer a HEAD without the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Content length in bytes.
    pub size: u64,
    /// The registry's `Content-Type` on `/blobs/`, once seen.
    blob_type: Option<String>,
    /// The registry's `Content-Type` on `/manifests/`, once seen.
    manifest_type: Option<String>,
}

impl Entry {
    /// An entry the registry answered on `kind` with `content_type`.
    pub(crate) fn new(size: u64, kind: Kind, content_type: &str) -> Entry {
        let mut entry = Entry {
            size,
            blob_type: None,
            manifest_type: None,
        };
        entry.learn(kind, content_type);
        entry
    }

    /// The registry's `Content-Type` for this content on `kind`; `None` until an answer on
    /// that endpoint was seen (the cache then lets the registry answer).
    pub(crate) fn content_type(&self, kind: Kind) -> Option<&str> {
        match kind {
            Kind::Blob => self.blob_type.as_deref(),
            Kind::Manifest => self.manifest_type.as_deref(),
        }
    }

    pub(super) fn learn(&mut self, kind: Kind, content_type: &str) {
        let slot = match kind {
            Kind::Blob => &mut self.blob_type,
            Kind::Manifest => &mut self.manifest_type,
        };
        *slot = Some(content_type.to_string());
    }

    /// The index entry's metadata.
    pub(crate) fn metadata(&self) -> serde_json::Value {
        let mut types = serde_json::Map::new();
        for kind in [Kind::Blob, Kind::Manifest] {
            if let Some(content_type) = self.content_type(kind) {
                types.insert(kind.key().into(), content_type.into());
            }
        }
        serde_json::json!({ "types": types })
    }

    /// The entry an index entry describes. Entries written before the endpoint was kept
    /// (`{"content_type": …}`) know none: each endpoint learns its type from the registry's
    /// next answer there.
    pub(super) fn from_metadata(size: u64, metadata: &serde_json::Value) -> Entry {
        let kind_type = |kind: Kind| metadata["types"][kind.key()].as_str().map(str::to_string);
        Entry {
            size,
            blob_type: kind_type(Kind::Blob),
            manifest_type: kind_type(Kind::Manifest),
        }
    }
}

/// What identifies a file's content on disk: any write changes `ctime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    /// The file's size in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn of(meta: &std::fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}
