//! The folders the edge keeps state in (`cache.dir`, `policy.state_dir`): created private,
//! as they hold private images and usage.

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
