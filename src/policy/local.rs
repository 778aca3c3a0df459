//! The embedded store as the running edge uses it: opened (a broken file replaced), and
//! called off the async threads (`spawn_blocking`: SQLite blocks on the disk).

use std::path::Path;
use std::sync::Arc;

use super::error::PolicyError;
use super::manifest::Reference;
use super::store::{self, Store, StoreError};

/// The SQLite usage store of one edge instance.
pub(crate) struct LocalUsage(Arc<Store>);

impl LocalUsage {
    /// Opens the store in `dir`. With `repair` (the edge itself), a file that is not a
    /// usable database is moved aside (`usage.sqlite3.broken-<unix time>`) and a new one
    /// started: the edge keeps running (never refusing every push over a broken file) and
    /// logs that `registry-edge usage scan` should be run; a new store says the same. The
    /// commands (`usage show`, `usage scan`) never repair: the running edge holds the file.
    pub(crate) fn open(dir: &Path, repair: bool) -> Result<LocalUsage, PolicyError> {
        let fresh = !dir.join(store::FILE).exists();
        let store = match Store::open(dir) {
            Ok(store) => store,
            Err(e) if repair && e.is_broken() => {
                let path = e.path().map(Path::to_path_buf).unwrap_or_default();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let aside = path.with_extension(format!("sqlite3.broken-{now}"));
                tracing::error!(
                    "policy: the usage store cannot be opened ({e}); moved to {} and started \
                     empty: run `registry-edge usage scan` to count what the registry holds",
                    aside.display()
                );
                std::fs::rename(&path, &aside).map_err(|source| StoreError::Dir {
                    dir: dir.to_path_buf(),
                    source,
                })?;
                for suffix in ["-wal", "-shm"] {
                    let mut side = path.clone().into_os_string();
                    side.push(suffix);
                    let _ = std::fs::remove_file(side);
                }
                Store::open(dir)?
            }
            Err(e) => return Err(e.into()),
        };
        if fresh && repair {
            tracing::warn!(
                "policy: new usage store in {}: pushes made before it are not counted until \
                 `registry-edge usage scan` runs",
                dir.display()
            );
        }
        Ok(LocalUsage(Arc::new(store)))
    }

    /// Runs `work` on the store in Tokio's blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, PolicyError> {
        let store = self.0.clone();
        Ok(tokio::task::spawn_blocking(move || work(&store)).await??)
    }

    pub(crate) async fn usage_and_unheld(
        &self,
        namespace: &str,
        references: Arc<Vec<Reference>>,
    ) -> Result<(u64, Vec<Reference>), PolicyError> {
        let namespace = namespace.to_string();
        self.blocking(move |store| {
            Ok((
                store.usage(&namespace)?,
                store.unheld(&namespace, &references)?,
            ))
        })
        .await
    }

    pub(crate) async fn put(
        &self,
        namespace: &str,
        repository: &str,
        digest: &str,
        references: Arc<Vec<Reference>>,
    ) -> Result<u64, PolicyError> {
        let (namespace, repository, digest) = (
            namespace.to_string(),
            repository.to_string(),
            digest.to_string(),
        );
        self.blocking(move |store| {
            store.put(&namespace, &repository, &digest, &references)?;
            store.usage(&namespace)
        })
        .await
    }

    /// The namespace's usage after the deletion, when the manifest was known.
    pub(crate) async fn delete(
        &self,
        repository: &str,
        digest: &str,
    ) -> Result<Option<u64>, PolicyError> {
        let (repository, digest) = (repository.to_string(), digest.to_string());
        self.blocking(move |store| match store.delete(&repository, &digest)? {
            Some(namespace) => Ok(Some(store.usage(&namespace)?)),
            None => Ok(None),
        })
        .await
    }

    pub(crate) async fn all(&self) -> Result<Vec<(String, u64)>, PolicyError> {
        self.blocking(|store| store.all()).await
    }

    /// Replaces all usage with `manifests` in one transaction (`usage scan`).
    pub(crate) async fn replace_all(
        &self,
        manifests: Vec<(String, String, String, Vec<Reference>)>,
    ) -> Result<(), PolicyError> {
        self.blocking(move |store| store.replace_all(&manifests))
            .await
    }
}
