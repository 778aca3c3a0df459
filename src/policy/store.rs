//! The embedded usage store: one SQLite file in `policy.state_dir`.
//!
//! Tables:
//! - `manifests(repository, digest, namespace)`: the manifests the edge saw stored.
//! - `refs(repository, manifest, blob, size)`: what each of them references.
//! - `blobs(namespace, digest, size, refs)`: each distinct blob of a namespace with the
//!   number of manifests referencing it; usage is the sum of their sizes, each counted once.
//!
//! A manifest PUT adds a manifest (a second PUT of the same manifest to the same
//! repository changes nothing); a DELETE removes it and every blob no other manifest of
//! the namespace references. Each change is one transaction. SQLite (not redb or sled)
//! because `registry-edge usage show` and `usage scan` open the file while the edge runs.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use super::manifest::Reference;

/// The file's name in `policy.state_dir`.
pub(super) const FILE: &str = "usage.sqlite3";

/// Why the store cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{}: {source}", dir.display())]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: damaged ({detail})", path.display())]
    Damaged { path: PathBuf, detail: String },
    #[error("usage store: {0}")]
    Query(#[from] rusqlite::Error),
}

impl StoreError {
    /// Whether the file is not a usable database (as opposed to busy, unreadable, or a
    /// full disk): the only case the edge moves it aside and starts anew.
    pub fn is_broken(&self) -> bool {
        use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
        match self {
            StoreError::Damaged { .. } => true,
            StoreError::Open { source, .. } => {
                matches!(
                    source.sqlite_error_code(),
                    Some(NotADatabase | DatabaseCorrupt)
                )
            }
            _ => false,
        }
    }

    /// The store file the error is about, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            StoreError::Open { path, .. } | StoreError::Damaged { path, .. } => Some(path),
            _ => None,
        }
    }
}

/// The usage store (blocking: call from `spawn_blocking` on a request path).
pub(super) struct Store {
    connection: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS manifests (
    repository TEXT NOT NULL, digest TEXT NOT NULL, namespace TEXT NOT NULL,
    PRIMARY KEY (repository, digest));
CREATE TABLE IF NOT EXISTS refs (
    repository TEXT NOT NULL, manifest TEXT NOT NULL, blob TEXT NOT NULL, size INTEGER NOT NULL,
    PRIMARY KEY (repository, manifest, blob));
CREATE TABLE IF NOT EXISTS blobs (
    namespace TEXT NOT NULL, digest TEXT NOT NULL, size INTEGER NOT NULL, refs INTEGER NOT NULL,
    PRIMARY KEY (namespace, digest));
";

impl Store {
    /// Opens (or creates, 0700 folder) the store in `dir`. A file that is not a usable
    /// SQLite database is an error: the caller decides whether to start without it.
    pub(super) fn open(dir: &Path) -> Result<Store, StoreError> {
        crate::state_dir::create_private_dir(dir).map_err(|source| StoreError::Dir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(FILE);
        // WAL: readers (`usage show`) do not block the edge's writes.
        let opened = crate::state_dir::open_database(&path, SCHEMA);
        let connection = opened.map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        // A file with a valid header but damaged pages opens; it must not fail every
        // later query instead.
        let check: String = connection
            .query_row("PRAGMA quick_check", [], |row| row.get(0))
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?;
        if check != "ok" {
            return Err(StoreError::Damaged {
                path,
                detail: check,
            });
        }
        Ok(Store {
            connection: Mutex::new(connection),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes `namespace` holds.
    pub(super) fn usage(&self, namespace: &str) -> Result<u64, StoreError> {
        let connection = self.lock();
        // TOTAL (a float) cannot overflow where SUM would fail: sizes are the client's
        // word for exempt accounts.
        let total: f64 = connection.query_row(
            "SELECT TOTAL(size) FROM blobs WHERE namespace = ?1",
            params![namespace],
            |row| row.get(0),
        )?;
        Ok(total.max(0.0) as u64)
    }

    /// Every namespace with its usage, by name.
    pub(super) fn all(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let connection = self.lock();
        let mut statement = connection.prepare(
            "SELECT namespace, TOTAL(size) FROM blobs GROUP BY namespace ORDER BY namespace",
        )?;
        let rows = statement.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, f64>(1)?.max(0.0) as u64,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The references `namespace` does not hold yet, each once: what storing a manifest
    /// with `references` would add.
    pub(super) fn unheld(
        &self,
        namespace: &str,
        references: &[Reference],
    ) -> Result<Vec<Reference>, StoreError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare_cached("SELECT 1 FROM blobs WHERE namespace = ?1 AND digest = ?2")?;
        let mut unheld = Vec::new();
        for reference in distinct(references) {
            let held = statement
                .query_row(params![namespace, reference.digest], |_| Ok(()))
                .optional()?
                .is_some();
            if !held {
                unheld.push(reference.clone());
            }
        }
        Ok(unheld)
    }

    /// Records that the registry stored manifest `digest` in `repository` (of `namespace`).
    pub(super) fn put(
        &self,
        namespace: &str,
        repository: &str,
        digest: &str,
        references: &[Reference],
    ) -> Result<(), StoreError> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        put_in(&tx, namespace, repository, digest, references)?;
        tx.commit()?;
        Ok(())
    }

    /// Replaces everything with `manifests` (namespace, repository, digest, references) in
    /// one transaction: `usage scan`, so the running edge never reads a half-built store.
    pub(super) fn replace_all(
        &self,
        manifests: &[(String, String, String, Vec<Reference>)],
    ) -> Result<(), StoreError> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        tx.execute_batch("DELETE FROM refs; DELETE FROM blobs; DELETE FROM manifests;")?;
        for (namespace, repository, digest, references) in manifests {
            put_in(&tx, namespace, repository, digest, references)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records that the registry deleted manifest `digest` of `repository`; its blobs no
    /// other manifest of the namespace references stop counting. Returns the namespace,
    /// if the manifest was known.
    pub(super) fn delete(
        &self,
        repository: &str,
        digest: &str,
    ) -> Result<Option<String>, StoreError> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        let namespace: Option<String> = tx
            .query_row(
                "SELECT namespace FROM manifests WHERE repository = ?1 AND digest = ?2",
                params![repository, digest],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(namespace) = &namespace {
            tx.execute(
                "UPDATE blobs SET refs = refs - 1 WHERE namespace = ?1 AND digest IN
                 (SELECT blob FROM refs WHERE repository = ?2 AND manifest = ?3)",
                params![namespace, repository, digest],
            )?;
            tx.execute(
                "DELETE FROM blobs WHERE namespace = ?1 AND refs <= 0",
                params![namespace],
            )?;
            tx.execute(
                "DELETE FROM refs WHERE repository = ?1 AND manifest = ?2",
                params![repository, digest],
            )?;
            tx.execute(
                "DELETE FROM manifests WHERE repository = ?1 AND digest = ?2",
                params![repository, digest],
            )?;
        }
        tx.commit()?;
        Ok(namespace)
    }
}

fn put_in(
    tx: &rusqlite::Transaction<'_>,
    namespace: &str,
    repository: &str,
    digest: &str,
    references: &[Reference],
) -> Result<(), StoreError> {
    let new = tx.execute(
        "INSERT OR IGNORE INTO manifests (repository, digest, namespace) VALUES (?1, ?2, ?3)",
        params![repository, digest, namespace],
    )? == 1;
    if new {
        for reference in distinct(references) {
            let size = i64::try_from(reference.size).unwrap_or(i64::MAX);
            tx.execute(
                "INSERT INTO refs (repository, manifest, blob, size) VALUES (?1, ?2, ?3, ?4)",
                params![repository, digest, reference.digest, size],
            )?;
            tx.execute(
                "INSERT INTO blobs (namespace, digest, size, refs) VALUES (?1, ?2, ?3, 1)
                 ON CONFLICT (namespace, digest) DO UPDATE SET refs = refs + 1",
                params![namespace, reference.digest, size],
            )?;
        }
    }
    Ok(())
}

/// `references` without repeats (a manifest may list one blob twice; it is stored once).
pub(crate) fn distinct(references: &[Reference]) -> impl Iterator<Item = &Reference> {
    let mut seen = std::collections::HashSet::new();
    references
        .iter()
        .filter(move |r| seen.insert(r.digest.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(digest: &str, size: u64) -> Reference {
        Reference {
            digest: digest.into(),
            size,
            child_manifest: false,
        }
    }

    #[test]
    fn shared_blobs_count_once_and_a_delete_frees_only_unshared_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("policy")).unwrap();
        let (a, b, c) = (reference("a", 100), reference("b", 10), reference("c", 1));
        store
            .put("team", "team/x", "m1", &[a.clone(), b.clone()])
            .unwrap();
        let unheld = store.unheld("team", &[a.clone(), c.clone()]).unwrap();
        assert_eq!(unheld, std::slice::from_ref(&c));
        store
            .put("team", "team/y", "m2", &[a.clone(), c.clone(), c.clone()])
            .unwrap();
        // Re-pushing the same manifest changes nothing.
        store
            .put("team", "team/y", "m2", &[a.clone(), c.clone()])
            .unwrap();
        assert_eq!(store.usage("team").unwrap(), 111);
        assert_eq!(store.usage("other").unwrap(), 0);
        assert_eq!(
            store.delete("team/x", "m1").unwrap().as_deref(),
            Some("team")
        );
        assert_eq!(
            store.usage("team").unwrap(),
            101,
            "a is still referenced by m2"
        );
        assert_eq!(store.delete("team/x", "m1").unwrap(), None);
        // Survives a reopen.
        drop(store);
        let store = Store::open(&dir.path().join("policy")).unwrap();
        assert_eq!(store.all().unwrap(), vec![("team".to_string(), 101)]);
    }

    #[test]
    fn a_file_that_is_not_a_database_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE),
            b"not sqlite at all, just bytes".repeat(100),
        )
        .unwrap();
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::Open { .. })
        ));
    }
}
