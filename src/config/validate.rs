//! The validator every section's converter uses: it knows the file, so each error names
//! file and key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::ConfigError;

/// Collects the file path so every error names file and key.
pub(super) struct Validator<'a> {
    pub(super) path: &'a Path,
    /// Whether names in the file (registry nodes) are looked up in DNS.
    pub(super) names: Names,
}

/// What a load does with host names: look them up (`run`, `check`, a reload), or only
/// check their shape, for commands that never contact what they name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    Resolve,
    ShapeOnly,
}

impl<'a> Validator<'a> {
    /// A validator for the file at `path` that resolves names (unit tests).
    #[cfg(test)]
    pub(super) fn new(path: &'a Path) -> Validator<'a> {
        Validator {
            path,
            names: Names::Resolve,
        }
    }
}

impl Validator<'_> {
    pub(super) fn invalid(
        &self,
        key: impl Into<String>,
        problem: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            key: key.into(),
            problem: problem.into(),
        }
    }

    pub(super) fn duration(
        &self,
        key: &str,
        value: Option<&str>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(text) => humantime::parse_duration(text).map_err(|e| {
                self.invalid(
                    key,
                    format!("invalid duration {text:?} ({e}); use e.g. 900s or 5m"),
                )
            }),
        }
    }

    /// Like [`Validator::duration`], refusing zero.
    pub(super) fn nonzero_duration(
        &self,
        key: &str,
        value: Option<&str>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let d = self.duration(key, value, default)?;
        if d.is_zero() {
            return Err(self.invalid(key, "must be greater than 0"));
        }
        Ok(d)
    }

    pub(super) fn listen(
        &self,
        key: &str,
        values: &[String],
    ) -> Result<Vec<SocketAddr>, ConfigError> {
        values
            .iter()
            .enumerate()
            .map(|(i, text)| {
                text.parse::<SocketAddr>().map_err(|_| {
                    self.invalid(
                        format!("{key}[{i}]"),
                        format!("{text:?} is not an IP:port address"),
                    )
                })
            })
            .collect()
    }

    /// A size in bytes written as `50GiB`, `256MiB`, `500MB` or plain bytes (`bytesize`).
    pub(super) fn size(&self, key: &str, text: &str) -> Result<u64, ConfigError> {
        text.trim()
            .parse::<bytesize::ByteSize>()
            .map(|size| size.as_u64())
            .map_err(|e| {
                self.invalid(
                    key,
                    format!("invalid size {text:?} ({e}); use e.g. 20GiB, 256MiB or 500MB"),
                )
            })
    }

    /// Resolves relative paths against the config file's folder (`.` for a file named
    /// without one, `--config edge.yaml`).
    pub(super) fn file_path(&self, text: &str) -> PathBuf {
        let path = Path::new(text);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            let folder = self.path.parent().filter(|p| !p.as_os_str().is_empty());
            folder.unwrap_or(Path::new(".")).join(path)
        }
    }

    /// Checks that `dir` is a folder the edge can write in, or one it can create: the
    /// nearest existing ancestor must be a writable folder. What `run` would refuse at
    /// start, `check` refuses too (as the user running `check`).
    pub(super) fn writable_dir(&self, key: &str, dir: &Path) -> Result<(), ConfigError> {
        use nix::unistd::{access, AccessFlags};
        let mut existing = dir;
        while !existing.exists() {
            match existing.parent() {
                Some(parent) => existing = parent,
                None => break,
            }
        }
        let shown = dir.display();
        if !existing.is_dir() {
            let problem = match existing == dir {
                true => format!("{shown} exists and is not a directory"),
                false => format!(
                    "{shown} cannot be created: {} is not a directory",
                    existing.display()
                ),
            };
            return Err(self.invalid(key, problem));
        }
        if let Err(e) = access(existing, AccessFlags::W_OK | AccessFlags::X_OK) {
            let what = match existing == dir {
                true => format!("{shown} is not writable"),
                false => format!("{shown} cannot be created in {}", existing.display()),
            };
            return Err(self.invalid(key, format!("{what} ({e})")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_resolve_beside_a_config_named_without_a_folder() {
        let v = Validator::new(Path::new("edge.yaml"));
        assert_eq!(v.file_path("cache"), Path::new("./cache"));
        assert!(v
            .writable_dir("cache.dir", &v.file_path("no-such-cache"))
            .is_ok());
        let v = Validator::new(Path::new("/etc/registry-edge/edge.yaml"));
        assert_eq!(v.file_path("cache"), Path::new("/etc/registry-edge/cache"));
    }
}
