//! Remembered tags (`routes[].stale_if_error`): the digest of the last good answer a
//! route's pool gave for a manifest by tag, per name at the edge, so the edge can answer
//! that tag from the cache's manifest while the pool fails.
//!
//! Kept beside the cache's entries in `cache.dir/remembered-tags.sqlite` (SQLite through
//! `rusqlite`, as the policy's usage store), so they survive restarts, and all in memory
//! for the lookups on the request path. A tag seen again with the same digest is written at
//! most once per [`REWRITE_AFTER`], so a busy tag costs no write per pull (its age may be
//! read up to that much older than it is).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection};

const FILE: &str = "remembered-tags.sqlite";

/// A tag answered with the same digest again is written no more often than this.
const REWRITE_AFTER: Duration = Duration::from_secs(60);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tags (
    repository TEXT NOT NULL, tag TEXT NOT NULL, digest TEXT NOT NULL, seen INTEGER NOT NULL,
    PRIMARY KEY (repository, tag));
";

/// Why the remembered tags could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub(crate) struct TagsError {
    path: PathBuf,
    source: rusqlite::Error,
}

/// One remembered tag: its digest and when the pool last answered it (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Remembered {
    pub digest: String,
    pub seen: u64,
}

/// The remembered tags of every route, by (name at the edge, tag).
pub(crate) struct RememberedTags {
    connection: Arc<Mutex<Connection>>,
    known: Mutex<HashMap<(String, String), Remembered>>,
}

impl RememberedTags {
    /// Opens (or creates) the file in `dir` and reads every tag into memory.
    pub(crate) fn open(dir: &Path) -> Result<RememberedTags, TagsError> {
        let path = dir.join(FILE);
        let error = |source| TagsError {
            path: path.clone(),
            source,
        };
        let connection = Connection::open(&path).map_err(error)?;
        connection.execute_batch(SCHEMA).map_err(error)?;
        let mut known = HashMap::new();
        {
            let mut query = connection
                .prepare("SELECT repository, tag, digest, seen FROM tags")
                .map_err(error)?;
            let rows = query
                .query_map([], |row| {
                    let seen: i64 = row.get(3)?;
                    Ok((
                        (row.get(0)?, row.get(1)?),
                        Remembered {
                            digest: row.get(2)?,
                            seen: seen.max(0) as u64,
                        },
                    ))
                })
                .map_err(error)?;
            for row in rows {
                let (key, remembered) = row.map_err(error)?;
                known.insert(key, remembered);
            }
        }
        Ok(RememberedTags {
            connection: Arc::new(Mutex::new(connection)),
            known: Mutex::new(known),
        })
    }

    /// The tag's last good answer, if the pool gave one no longer than `max_age` ago.
    pub(crate) fn recall(
        &self,
        repository: &str,
        tag: &str,
        max_age: Duration,
    ) -> Option<Remembered> {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let remembered = known.get(&(repository.to_string(), tag.to_string()))?;
        let age = now().saturating_sub(remembered.seen);
        (age <= max_age.as_secs()).then(|| remembered.clone())
    }

    /// Records that the pool answered `tag` of `repository` (the name at the edge) with
    /// `digest` now. The write runs on the blocking pool; a failed write is logged (the
    /// tag is still remembered until a restart).
    pub(crate) fn remember(&self, repository: &str, tag: &str, digest: &str) {
        let seen = now();
        {
            let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            let key = (repository.to_string(), tag.to_string());
            if let Some(old) = known.get(&key) {
                if old.digest == digest && seen < old.seen + REWRITE_AFTER.as_secs() {
                    return;
                }
            }
            let remembered = Remembered {
                digest: digest.to_string(),
                seen,
            };
            known.insert(key, remembered);
        }
        let connection = self.connection.clone();
        let (repository, tag, digest) =
            (repository.to_string(), tag.to_string(), digest.to_string());
        tokio::task::spawn_blocking(move || {
            let connection = connection.lock().unwrap_or_else(|e| e.into_inner());
            let written = connection.execute(
                "INSERT INTO tags (repository, tag, digest, seen) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (repository, tag) DO UPDATE SET digest = ?3, seen = ?4",
                params![repository, tag, digest, seen as i64],
            );
            if let Err(e) = written {
                tracing::warn!("cache: tag {repository}:{tag} not written to {FILE}: {e}");
            }
        });
    }

    /// Writes what is waiting (for tests: `remember` writes in the background).
    #[cfg(test)]
    fn flush(&self) {
        drop(self.connection.lock());
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tags_are_remembered_across_opens_and_age_out() {
        let dir = tempfile::tempdir().unwrap();
        let tags = RememberedTags::open(dir.path()).unwrap();
        let hour = Duration::from_secs(3600);
        assert_eq!(tags.recall("hub/library/app", "1", hour), None);
        tags.remember("hub/library/app", "1", "sha256:aa");
        assert_eq!(
            tags.recall("hub/library/app", "1", hour).unwrap().digest,
            "sha256:aa"
        );
        // A moved tag replaces the old digest at once.
        tags.remember("hub/library/app", "1", "sha256:bb");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let reopened = loop {
            tags.flush();
            let reopened = RememberedTags::open(dir.path()).unwrap();
            let digest = reopened
                .recall("hub/library/app", "1", hour)
                .map(|r| r.digest);
            if digest.as_deref() == Some("sha256:bb") || std::time::Instant::now() > deadline {
                break reopened;
            }
            tokio::task::yield_now().await;
        };
        let found = reopened.recall("hub/library/app", "1", hour).unwrap();
        assert_eq!(found.digest, "sha256:bb");
        assert_eq!(reopened.recall("hub/library/app", "2", hour), None);
        // Older than max_age: not answered.
        reopened
            .known
            .lock()
            .unwrap()
            .values_mut()
            .for_each(|r| r.seen -= 7200);
        assert_eq!(reopened.recall("hub/library/app", "1", hour), None);
    }
}
