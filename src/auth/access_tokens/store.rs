//! Where tokens are kept: the embedded SQLite store, or Redis in a fleet. Both take the
//! same calls; SQLite's run on Tokio's blocking pool (it blocks on the disk).

use std::sync::Arc;

pub use super::error::StoreError;
use super::record::TokenRecord;
use super::redis::RedisTokens;
use super::sqlite::SqliteTokens;
use crate::shared_state::SharedState;

/// The token store in force.
#[derive(Clone)]
pub(crate) enum Store {
    Local(Arc<SqliteTokens>),
    Shared(Arc<RedisTokens>),
}

impl Store {
    pub(crate) fn shared(shared: Arc<SharedState>) -> Store {
        Store::Shared(Arc::new(RedisTokens::new(shared)))
    }

    async fn local<T: Send + 'static>(
        store: &Arc<SqliteTokens>,
        work: impl FnOnce(&SqliteTokens) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = store.clone();
        tokio::task::spawn_blocking(move || work(&store)).await?
    }

    /// The store's hash key (hex); `fresh` becomes it if the store has none yet.
    pub(crate) async fn hash_key(&self, fresh: String) -> Result<String, StoreError> {
        match self {
            Store::Local(s) => Self::local(s, move |s| s.hash_key(&fresh)).await,
            Store::Shared(s) => s.hash_key(&fresh).await,
        }
    }

    /// Adds `record`; `false` when its name is taken.
    pub(crate) async fn insert(&self, record: TokenRecord) -> Result<bool, StoreError> {
        match self {
            Store::Local(s) => Self::local(s, move |s| s.insert(&record)).await,
            Store::Shared(s) => s.insert(&record).await,
        }
    }

    /// The token named `name`.
    pub(crate) async fn get(&self, name: &str) -> Result<Option<Arc<TokenRecord>>, StoreError> {
        match self {
            // A read under WAL never waits for a writer: cheaper here than a hop to the
            // blocking pool.
            Store::Local(s) => s.get(name),
            Store::Shared(s) => s.get(name).await,
        }
    }

    /// Every token, by name.
    pub(crate) async fn all(&self) -> Result<Vec<TokenRecord>, StoreError> {
        match self {
            Store::Local(s) => Self::local(s, |s| s.all()).await,
            Store::Shared(s) => s.all().await,
        }
    }

    /// Revokes the token with this id (or else this name); its name, `None` when none.
    pub(crate) async fn revoke(&self, id_or_name: &str) -> Result<Option<String>, StoreError> {
        match self {
            Store::Local(s) => {
                let id_or_name = id_or_name.to_string();
                Self::local(s, move |s| s.revoke(&id_or_name)).await
            }
            Store::Shared(s) => s.revoke(id_or_name).await,
        }
    }

    /// Records a use of `name` at `at` (Unix seconds) from the address `from`.
    pub(crate) async fn touch(&self, name: &str, at: u64, from: &str) -> Result<(), StoreError> {
        match self {
            Store::Local(s) => {
                let (name, from) = (name.to_string(), from.to_string());
                Self::local(s, move |s| s.touch(&name, at, &from)).await
            }
            Store::Shared(s) => s.touch(name, at, from).await,
        }
    }
}
