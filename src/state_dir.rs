//! The folders the edge keeps state in (`cache.dir`, `policy.state_dir`,
//! `auth.access_tokens.state_dir`), created private as they hold private images, usage and
//! token hashes; and how the SQLite stores in them are opened.

use std::path::Path;

/// Creates `dir` (and its parents) with mode 0700 (private images, private usage) unless it
/// is a folder already; an existing file of that name is an error.
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

/// Opens (or creates) the SQLite database at `path` as the stores in these folders keep
/// theirs (the policy's usage, the access tokens): a 5 s busy timeout, WAL (so the commands
/// read and write it while the edge runs without blocking each other), then `schema`.
pub(crate) fn open_database(path: &Path, schema: &str) -> rusqlite::Result<rusqlite::Connection> {
    let connection = rusqlite::Connection::open(path)?;
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.execute_batch(schema)?;
    Ok(connection)
}

#[cfg(test)]
mod tests {
    use super::*;

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
