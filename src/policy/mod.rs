//! Storage quotas per namespace and immutable tags (`policy:`).
//!
//! - `manifest`: what a manifest body references (descriptors and sizes).
//! - `store`: the usage store (SQLite in `policy.state_dir`).
//! - `lookup`: what the registry holds now: a tag's digest, a repository's tags.
//! - `scan`: `registry-edge usage scan`, rebuilding usage from the registry's API.
//!
//! Usage of a namespace is the sum of the sizes of the distinct blobs (layers, configs,
//! child manifests) referenced by the manifests stored in its repositories. The edge learns
//! it from the manifest PUTs and DELETEs it proxies, committing each only after the
//! registry answered 2xx (`proxy::policy_check`).

pub mod lookup;
pub mod manifest;
pub mod scan;
pub mod store;

use std::sync::Arc;

use crate::config::PolicySettings;
use manifest::Reference;
use store::{Store, StoreError};

/// Why usage could not be read or recorded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the usage store task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("cannot make the registry client: {0}")]
    Client(String),
}

/// A client for the registry's API (plain HTTP to the nodes; no redirects followed).
pub(crate) fn registry_client() -> Result<reqwest::Client, PolicyError> {
    crate::auth::users::trust::http_client(None, std::time::Duration::from_secs(30))
        .map_err(|e| PolicyError::Client(e.to_string()))
}

/// The namespace of `repository`: its first `depth` path segments (all of them when it has
/// fewer). `team/app/x` at depth 1 is `team`, at depth 2 `team/app`.
pub fn namespace_of(repository: &str, depth: usize) -> &str {
    match repository.match_indices('/').nth(depth.saturating_sub(1)) {
        Some((end, _)) => &repository[..end],
        None => repository,
    }
}

/// The running policy: the usage store opened at start (the rules come with each request's
/// settings, so a reload changes them live).
pub struct Policy {
    store: Arc<Store>,
    /// For the registry lookups of immutability checks.
    client: reqwest::Client,
}

impl Policy {
    /// Opens the store in `settings.state_dir`. A file that cannot be opened as a store is
    /// moved aside and a new one started: the edge keeps running (never refusing every
    /// push over a broken file) and logs that `registry-edge usage scan` should be run.
    pub fn open(settings: &PolicySettings) -> Result<Policy, PolicyError> {
        let dir = &settings.state_dir;
        let fresh = !dir.join(store::FILE).exists();
        let store = match Store::open(dir) {
            Ok(store) => store,
            Err(StoreError::Open { path, source }) => {
                let aside = path.with_extension(format!(
                    "broken-{}",
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs())
                ));
                tracing::error!(
                    "policy: the usage store {} cannot be opened ({source}); moved to {} and started \
                     empty: run `registry-edge usage scan` to count what the registry holds",
                    path.display(),
                    aside.display()
                );
                std::fs::rename(&path, &aside).map_err(|source| StoreError::Dir {
                    dir: dir.clone(),
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
        if fresh {
            tracing::warn!(
                "policy: new usage store in {}: pushes made before it are not counted until \
                 `registry-edge usage scan` runs",
                dir.display()
            );
        }
        Ok(Policy {
            store: Arc::new(store),
            client: registry_client()?,
        })
    }

    /// The HTTP client for registry lookups.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Bytes `namespace` holds.
    pub async fn usage(&self, namespace: &str) -> Result<u64, PolicyError> {
        let (store, namespace) = (self.store.clone(), namespace.to_string());
        Ok(tokio::task::spawn_blocking(move || store.usage(&namespace)).await??)
    }

    /// Bytes a manifest referencing `references` would add to `namespace`.
    pub async fn added_by(
        &self,
        namespace: &str,
        references: Arc<Vec<Reference>>,
    ) -> Result<u64, PolicyError> {
        let (store, namespace) = (self.store.clone(), namespace.to_string());
        Ok(tokio::task::spawn_blocking(move || store.added_by(&namespace, &references)).await??)
    }

    /// Records a manifest the registry stored; returns the namespace's usage after it.
    pub async fn put(
        &self,
        namespace: &str,
        repository: &str,
        digest: &str,
        references: Arc<Vec<Reference>>,
    ) -> Result<u64, PolicyError> {
        let store = self.store.clone();
        let (namespace, repository, digest) = (
            namespace.to_string(),
            repository.to_string(),
            digest.to_string(),
        );
        Ok(tokio::task::spawn_blocking(move || {
            store.put(&namespace, &repository, &digest, &references)?;
            store.usage(&namespace)
        })
        .await??)
    }

    /// Records a manifest the registry deleted; returns its namespace and that namespace's
    /// usage after it, when the manifest was known.
    pub async fn delete(
        &self,
        repository: &str,
        digest: &str,
    ) -> Result<Option<(String, u64)>, PolicyError> {
        let store = self.store.clone();
        let (repository, digest) = (repository.to_string(), digest.to_string());
        Ok(tokio::task::spawn_blocking(move || {
            let Some(namespace) = store.delete(&repository, &digest)? else {
                return Ok(None);
            };
            let usage = store.usage(&namespace)?;
            Ok::<_, StoreError>(Some((namespace, usage)))
        })
        .await??)
    }

    /// Every namespace's usage (for the metrics at start).
    pub fn all(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.store.all()
    }
}

/// `usage show`: one line per namespace (those with usage and those with a quota listed),
/// `namespace  usage  quota  percent`, sizes in bytes and binary units; only `namespace`
/// when given.
pub fn report(settings: &PolicySettings, namespace: Option<&str>) -> Result<String, StoreError> {
    let store = Store::open(&settings.state_dir)?;
    let mut rows: std::collections::BTreeMap<String, u64> = store.all()?.into_iter().collect();
    for listed in settings.quotas.namespaces.keys() {
        rows.entry(listed.clone()).or_insert(0);
    }
    if let Some(only) = namespace {
        rows.retain(|name, _| name == only);
        rows.entry(only.to_string()).or_insert(0);
    }
    let mut text = format!(
        "{:<30} {:>22} {:>22} {:>7}\n",
        "NAMESPACE", "USAGE", "QUOTA", "USED"
    );
    for (name, usage) in rows {
        let quota = settings.quotas.of(&name);
        let shown = |n: u64| format!("{n} ({})", bytesize::ByteSize(n).display().iec());
        let (quota_text, percent) = match quota {
            Some(q) => (
                shown(q),
                format!("{:.0}%", usage as f64 * 100.0 / q.max(1) as f64),
            ),
            None => ("none".to_string(), "-".to_string()),
        };
        text.push_str(&format!(
            "{name:<30} {:>22} {quota_text:>22} {percent:>7}\n",
            shown(usage)
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_namespace_is_the_leading_segments() {
        assert_eq!(namespace_of("team/app/x", 1), "team");
        assert_eq!(namespace_of("team/app/x", 2), "team/app");
        assert_eq!(namespace_of("team/app/x", 5), "team/app/x");
        assert_eq!(namespace_of("alpine", 1), "alpine");
    }
}
