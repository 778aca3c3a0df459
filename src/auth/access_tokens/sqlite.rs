//! The embedded token store: `auth.access_tokens.state_dir/tokens.sqlite3` (SQLite
//! through `rusqlite`, as the policy's usage store, so the `token` commands write it while
//! the edge reads it; WAL, so their writes do not wait for the edge's reads).
//!
//! Logins read the tokens from memory while SQLite's `data_version` says nobody else wrote
//! (a few microseconds, not a query and a JSON parse each). The immutable part of a token
//! is one JSON column; what changes (revoked, last used)
//! has columns of its own, so a revoke and a login's last-used write never overwrite each
//! other.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};

use super::error::StoreError;
use super::record::TokenRecord;

pub(crate) const FILE: &str = "tokens.sqlite3";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tokens (
    name TEXT PRIMARY KEY, id TEXT NOT NULL UNIQUE, record TEXT NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0, last_used_at INTEGER, last_used_from TEXT);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
";

const SELECT: &str = "SELECT record, revoked, last_used_at, last_used_from FROM tokens";

/// The SQLite store of one folder.
pub(crate) struct SqliteTokens {
    path: PathBuf,
    connection: Mutex<Connection>,
    /// Every token as of a `PRAGMA data_version`: a login reads them from here while no
    /// other connection (a `token` command) has committed since, and this connection's own
    /// writes forget them.
    known: Mutex<Known>,
}

#[derive(Default)]
struct Known {
    version: Option<i64>,
    records: HashMap<String, Arc<TokenRecord>>,
}

impl SqliteTokens {
    /// Opens (or creates) the store in `dir`, creating `dir` private.
    pub(crate) fn open(dir: &Path) -> Result<SqliteTokens, StoreError> {
        crate::state_dir::create_private_dir(dir).map_err(|source| StoreError::Dir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(FILE);
        let opened = crate::state_dir::open_database(&path, SCHEMA);
        let connection = opened.map_err(|source| StoreError::Sqlite {
            path: path.clone(),
            source,
        })?;
        // Hashes and their key: for the service's user only (SQLite gives its -wal and -shm
        // files the database file's mode).
        use std::os::unix::fs::PermissionsExt;
        let private = std::fs::Permissions::from_mode(0o600);
        std::fs::set_permissions(&path, private).map_err(|source| StoreError::Dir {
            dir: path.clone(),
            source,
        })?;
        Ok(SqliteTokens {
            path,
            connection: Mutex::new(connection),
            known: Mutex::new(Known::default()),
        })
    }

    fn error(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The store's hash key (hex), made by whoever opens it first.
    pub(crate) fn hash_key(&self, fresh: &str) -> Result<String, StoreError> {
        let connection = self.lock();
        connection
            .execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('hash_key', ?1)",
                params![fresh],
            )
            .map_err(self.error())?;
        connection
            .query_row("SELECT value FROM meta WHERE key = 'hash_key'", [], |row| {
                row.get(0)
            })
            .map_err(self.error())
    }

    /// Adds `record`; `false` when its name is taken.
    pub(crate) fn insert(&self, record: &TokenRecord) -> Result<bool, StoreError> {
        let json = serde_json::to_string(record).map_err(StoreError::Record)?;
        // Forgotten under the connection's lock, so no login reads between the two.
        let connection = self.lock();
        let added = connection
            .execute(
                "INSERT OR IGNORE INTO tokens (name, id, record) VALUES (?1, ?2, ?3)",
                params![record.name, record.id, json],
            )
            .map_err(self.error())?;
        self.forget();
        Ok(added == 1)
    }

    /// The token named `name`: from memory unless another connection committed since
    /// they were read (`PRAGMA data_version`), so a revoke by the command holds at once.
    pub(crate) fn get(&self, name: &str) -> Result<Option<Arc<TokenRecord>>, StoreError> {
        let connection = self.lock();
        let version: i64 = connection
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut query| query.query_row([], |row| row.get(0)))
            .map_err(self.error())?;
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if known.version != Some(version) {
            let records = self.read_all(&connection)?;
            known.records = (records.into_iter())
                .map(|r| (r.name.clone(), Arc::new(r)))
                .collect();
            known.version = Some(version);
        }
        Ok(known.records.get(name).cloned())
    }

    /// Forgets what [`SqliteTokens::get`] keeps: this connection wrote.
    fn forget(&self) {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).version = None;
    }

    /// Every token, by name.
    pub(crate) fn all(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.read_all(&self.lock())
    }

    fn read_all(&self, connection: &Connection) -> Result<Vec<TokenRecord>, StoreError> {
        let mut query = connection
            .prepare(&format!("{SELECT} ORDER BY name"))
            .map_err(self.error())?;
        let rows = query.query_map([], read_row).map_err(self.error())?;
        let mut records = Vec::new();
        for row in rows {
            records.push(into_record(row.map_err(self.error())?)?);
        }
        Ok(records)
    }

    /// Marks the token with this id or name revoked; its name, `None` when there is none.
    pub(crate) fn revoke(&self, id_or_name: &str) -> Result<Option<String>, StoreError> {
        let connection = self.lock();
        // By id first: a name that looks like another token's id never revokes both.
        for column in ["id", "name"] {
            let name: Option<String> = connection
                .query_row(
                    &format!("UPDATE tokens SET revoked = 1 WHERE {column} = ?1 RETURNING name"),
                    params![id_or_name],
                    |row| row.get(0),
                )
                .optional()
                .map_err(self.error())?;
            if name.is_some() {
                self.forget();
                return Ok(name);
            }
        }
        Ok(None)
    }

    /// Records a use of the token named `name` at `at` from `from`, in the file and in
    /// what [`SqliteTokens::get`] keeps (not by forgetting it all: a busy fleet of tokens
    /// would then re-read every token about once a minute each).
    pub(crate) fn touch(&self, name: &str, at: u64, from: &str) -> Result<(), StoreError> {
        let connection = self.lock();
        connection
            .execute(
                "UPDATE tokens SET last_used_at = ?2, last_used_from = ?3 WHERE name = ?1",
                params![name, at as i64, from],
            )
            .map_err(self.error())?;
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(record) = known.records.get_mut(name) {
            let mut used = TokenRecord::clone(record);
            used.last_used_at = Some(at);
            used.last_used_from = Some(from.to_string());
            *record = Arc::new(used);
        }
        Ok(())
    }
}

type Row = (String, i64, Option<i64>, Option<String>);

fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
}

fn into_record((json, revoked, at, from): Row) -> Result<TokenRecord, StoreError> {
    let mut record: TokenRecord = serde_json::from_str(&json).map_err(StoreError::Record)?;
    record.revoked = revoked != 0;
    record.last_used_at = at.map(|t| t.max(0) as u64);
    record.last_used_from = from;
    Ok(record)
}
