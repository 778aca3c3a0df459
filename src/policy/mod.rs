//! Storage quotas per namespace and immutable tags (`policy:`).
//!
//! - `manifest`: what a manifest body references (descriptors and sizes).
//! - `store`: the embedded usage store (SQLite in `policy.state_dir`); `local` runs it off
//!   the async threads and replaces a broken file.
//! - `redis_usage`: usage shared through Redis instead (`shared_state.redis`).
//! - `lookup`: what the registry holds now: a tag's digest, a repository's tags.
//! - `scan`: `registry-edge usage scan` (rebuilding usage from the registry's API) and
//!   `usage show`.
//!
//! Usage of a namespace is the sum of the sizes of the distinct blobs (layers, configs,
//! child manifests) referenced by the manifests stored in its repositories. The edge learns
//! it from the manifest PUTs and DELETEs it proxies, committing each only after the
//! registry answered 2xx (`proxy::policy_check`).

mod local;
pub mod lookup;
pub mod manifest;
mod redis_usage;
pub mod scan;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::{OnUnavailable, PolicySettings};
use crate::metrics::metrics;
use crate::shared_state::SharedState;
use local::LocalUsage;
use manifest::Reference;
use redis_usage::RedisUsage;
use store::StoreError;

/// Why usage could not be read or recorded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the usage store task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("cannot make the registry client: {0}")]
    Client(String),
    #[error("shared_state.redis does not answer")]
    NotShared,
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

/// Where usage lives: the embedded store, or Redis shared with other instances.
enum Backend {
    Local(LocalUsage),
    Redis {
        usage: RedisUsage,
        /// Each namespace's usage as Redis last told it: what `on_unavailable: local`
        /// enforces from while Redis does not answer.
        last_known: Mutex<HashMap<String, u64>>,
    },
}

/// The running policy: the usage store opened at start (the rules come with each request's
/// settings, so a reload changes them live).
pub struct Policy {
    backend: Backend,
    /// For the registry lookups of immutability checks.
    client: reqwest::Client,
}

impl Policy {
    /// Opens the usage store: Redis when `shared` is given (`shared_state.redis`), else the
    /// embedded store in `settings.state_dir` ([`LocalUsage::open`]).
    pub fn open(
        settings: &PolicySettings,
        shared: Option<Arc<SharedState>>,
    ) -> Result<Policy, PolicyError> {
        let backend = match shared {
            Some(shared) => Backend::Redis {
                usage: RedisUsage::new(shared),
                last_known: Mutex::default(),
            },
            None => Backend::Local(LocalUsage::open(&settings.state_dir)?),
        };
        Ok(Policy {
            backend,
            client: registry_client()?,
        })
    }

    /// The HTTP client for registry lookups.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Bytes `namespace` holds.
    pub async fn usage(&self, namespace: &str) -> Result<u64, PolicyError> {
        Ok(self.usage_and_added(namespace, Arc::default()).await?.0)
    }

    /// (bytes `namespace` holds, bytes a manifest referencing `references` would add).
    pub async fn usage_and_added(
        &self,
        namespace: &str,
        references: Arc<Vec<Reference>>,
    ) -> Result<(u64, u64), PolicyError> {
        match &self.backend {
            Backend::Local(local) => local.usage_and_added(namespace, references).await,
            Backend::Redis { usage, last_known } => {
                match usage.usage_and_added(namespace, &references).await {
                    Some(found) => {
                        lock(last_known).insert(namespace.to_string(), found.0);
                        Ok(found)
                    }
                    None => {
                        fallback(usage)?;
                        // Which blobs the namespace holds is Redis's to say: count them all.
                        let added = references.iter().map(|r| r.size).sum();
                        let known = lock(last_known).get(namespace).copied().unwrap_or(0);
                        Ok((known, added))
                    }
                }
            }
        }
    }

    /// Records a manifest the registry stored; returns the namespace's usage after it.
    pub async fn put(
        &self,
        namespace: &str,
        repository: &str,
        digest: &str,
        references: Arc<Vec<Reference>>,
    ) -> Result<u64, PolicyError> {
        match &self.backend {
            Backend::Local(local) => local.put(namespace, repository, digest, references).await,
            Backend::Redis { usage, last_known } => {
                let after = usage
                    .put(namespace, repository, digest, &references)
                    .await
                    .ok_or(PolicyError::NotShared)?;
                lock(last_known).insert(namespace.to_string(), after);
                Ok(after)
            }
        }
    }

    /// Records a manifest of `namespace` the registry deleted; returns the namespace's
    /// usage after it, when the manifest was known.
    pub async fn delete(
        &self,
        namespace: &str,
        repository: &str,
        digest: &str,
    ) -> Result<Option<u64>, PolicyError> {
        match &self.backend {
            Backend::Local(local) => local.delete(repository, digest).await,
            Backend::Redis { usage, last_known } => {
                let after = usage
                    .delete(namespace, repository, digest)
                    .await
                    .ok_or(PolicyError::NotShared)?;
                if let Some(after) = after {
                    lock(last_known).insert(namespace.to_string(), after);
                }
                Ok(after)
            }
        }
    }

    /// Every namespace's usage, by name.
    pub async fn all(&self) -> Result<Vec<(String, u64)>, PolicyError> {
        match &self.backend {
            Backend::Local(local) => local.all().await,
            Backend::Redis { usage, .. } => usage.all().await.ok_or(PolicyError::NotShared),
        }
    }

    /// Forgets all usage (`usage scan` records what the registry holds after it).
    pub async fn clear(&self) -> Result<(), PolicyError> {
        match &self.backend {
            Backend::Local(local) => local.clear().await,
            Backend::Redis { usage, .. } => usage.clear().await.ok_or(PolicyError::NotShared),
        }
    }
}

/// Publishes every namespace's usage and quota (`registry_edge_policy_*` gauges) at start
/// and every [`GAUGES_EVERY`]: with Redis, other instances' pushes show up too.
pub(crate) struct UsageGauges {
    pub policy: Arc<Policy>,
    pub settings: crate::settings::SharedSettings,
}

/// How often [`UsageGauges`] reads all usage.
const GAUGES_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for UsageGauges {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let mut every = tokio::time::interval(GAUGES_EVERY);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = shutdown.changed() => return,
            }
            let settings = self.settings.load();
            let Some(rules) = settings.policy.as_ref() else {
                continue;
            };
            match self.policy.all().await {
                Ok(all) => {
                    for (namespace, usage) in all {
                        set_gauges(&namespace, usage, rules);
                    }
                }
                Err(e) => tracing::warn!("policy: usage cannot be read for the metrics: {e}"),
            }
            for namespace in rules.quotas.namespaces.keys() {
                set_gauges(
                    namespace,
                    self.policy.usage(namespace).await.unwrap_or(0),
                    rules,
                );
            }
        }
    }
}

/// Sets the usage and (when it has one) quota gauges of `namespace`.
pub(crate) fn set_gauges(namespace: &str, usage: u64, rules: &PolicySettings) {
    let m = metrics();
    let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    m.policy_usage
        .with_label_values(&[namespace])
        .set(clamp(usage));
    if let Some(quota) = rules.quotas.of(namespace) {
        m.policy_quota
            .with_label_values(&[namespace])
            .set(clamp(quota));
    }
}

/// Redis did not answer: `deny` refuses, `local` goes on from the last known usage.
fn fallback(usage: &RedisUsage) -> Result<(), PolicyError> {
    metrics()
        .shared_state_fallbacks
        .with_label_values(&["policy"])
        .inc();
    match usage.shared().on_unavailable() {
        OnUnavailable::Deny => Err(PolicyError::NotShared),
        OnUnavailable::Local => Ok(()),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
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
