//! Why the token store could not answer.

use std::path::PathBuf;

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: cannot set up the token store: {source}", dir.display())]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("the token store (Redis, shared_state.redis) is unavailable")]
    Unavailable,
    #[error("a stored token cannot be read: {0}")]
    Record(#[source] serde_json::Error),
    #[error(transparent)]
    Random(#[from] super::secret::RandomError),
    #[error("the token store's work was cancelled: {0}")]
    Blocking(#[from] tokio::task::JoinError),
}
