//! Why the policy's usage could not be read or recorded.

use super::store::StoreError;

/// Why usage could not be read or recorded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the usage store task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("shared_state.redis does not answer")]
    NotShared,
}
