//! The error every config load returns: it names the file, and the key when one is wrong.
//!
//! Its own file so that the sections (which build it) and `mod.rs` (which re-exports
//! them) do not import each other.

use std::path::PathBuf;

/// Why a configuration could not be loaded; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// YAML syntax, wrong types and unknown keys (serde_yaml names the key and line).
    #[error("{}: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("{}: {key}: {problem}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        problem: String,
    },
}
