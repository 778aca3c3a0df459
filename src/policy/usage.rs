//! The running policy ([`Policy`]): namespaces' usage in the embedded store or in Redis,
//! and the bytes of manifest PUTs admitted and not yet answered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::error::PolicyError;
use super::local::LocalUsage;
use super::manifest::Reference;
use super::redis_usage::RedisUsage;
use super::reserve::{lock, Reservation, Reservations};
use super::store;
use crate::config::{OnUnavailable, PolicySettings};
use crate::metrics::metrics;
use crate::shared_state::SharedState;
use crate::upstream::RegistryClient;

/// The namespace of `repository`: its first `depth` path segments (all of them when it has
/// fewer). `team/app/x` at depth 1 is `team`, at depth 2 `team/app`.
pub(super) fn namespace_of(repository: &str, depth: usize) -> &str {
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
pub(crate) struct Policy {
    backend: Backend,
    /// For the registry lookups of immutability checks and blob sizes.
    registry: RegistryClient,
    /// `policy.namespace_depth` as opened: the store's keys depend on it, so a reload
    /// does not change it.
    namespace_depth: usize,
    /// Bytes of manifest PUTs admitted and not yet answered, per namespace.
    reservations: Reservations,
}

impl Policy {
    /// Opens the usage store: Redis when `shared` is given (`shared_state.redis`), else the
    /// embedded store in `settings.state_dir` ([`LocalUsage::open`]). `registry` asks the
    /// nodes (immutability checks, blob sizes).
    pub(crate) fn open(
        settings: &PolicySettings,
        shared: Option<Arc<SharedState>>,
        registry: RegistryClient,
    ) -> Result<Policy, PolicyError> {
        Self::open_with(settings, shared, registry, true)
    }

    /// [`Policy::open`] for the `usage` commands: a broken store file is reported, not
    /// moved aside under the running edge.
    pub(crate) fn open_for_command(
        settings: &PolicySettings,
        shared: Option<Arc<SharedState>>,
        registry: RegistryClient,
    ) -> Result<Policy, PolicyError> {
        Self::open_with(settings, shared, registry, false)
    }

    fn open_with(
        settings: &PolicySettings,
        shared: Option<Arc<SharedState>>,
        registry: RegistryClient,
        repair: bool,
    ) -> Result<Policy, PolicyError> {
        let backend = match shared {
            Some(shared) => Backend::Redis {
                usage: RedisUsage::new(shared),
                last_known: Mutex::default(),
            },
            None => Backend::Local(LocalUsage::open(&settings.state_dir, repair)?),
        };
        Ok(Policy {
            backend,
            registry,
            namespace_depth: settings.namespace_depth,
            reservations: Reservations::default(),
        })
    }

    /// The namespace of `repository` under the depth the store was opened with.
    pub(crate) fn namespace_of<'a>(&self, repository: &'a str) -> &'a str {
        namespace_of(repository, self.namespace_depth)
    }

    /// Admits `added` more bytes into `namespace` under `quota` unless its usage plus the
    /// bytes of PUTs admitted and not yet answered would go over: concurrent PUTs, each
    /// under the quota alone, cannot pass together. `Err((usage, pending))` when over.
    pub(crate) async fn reserve(
        &self,
        namespace: &str,
        added: u64,
        quota: u64,
    ) -> Result<Result<Reservation, (u64, u64)>, PolicyError> {
        let _one_at_a_time = self.reservations.checking.lock().await;
        let usage = self.usage(namespace).await?;
        let pending = self.reservations.pending(namespace);
        if usage.saturating_add(pending).saturating_add(added) > quota {
            return Ok(Err((usage, pending)));
        }
        Ok(Ok(self.reservations.take(namespace, added)))
    }

    /// The client for registry lookups.
    pub(super) fn registry(&self) -> &RegistryClient {
        &self.registry
    }

    /// Bytes `namespace` holds.
    pub(crate) async fn usage(&self, namespace: &str) -> Result<u64, PolicyError> {
        Ok(self.usage_and_unheld(namespace, Arc::default()).await?.0)
    }

    /// (bytes `namespace` holds, the references of `references` it does not hold yet).
    pub(crate) async fn usage_and_unheld(
        &self,
        namespace: &str,
        references: Arc<Vec<Reference>>,
    ) -> Result<(u64, Vec<Reference>), PolicyError> {
        match &self.backend {
            Backend::Local(local) => local.usage_and_unheld(namespace, references).await,
            Backend::Redis { usage, last_known } => {
                match usage.usage_and_unheld(namespace, &references).await {
                    Some(found) => {
                        lock(last_known).insert(namespace.to_string(), found.0);
                        Ok(found)
                    }
                    None => {
                        fallback(usage)?;
                        // Which blobs the namespace holds is Redis's to say: count them all.
                        let all = store::distinct(&references).cloned().collect();
                        let known = lock(last_known).get(namespace).copied().unwrap_or(0);
                        Ok((known, all))
                    }
                }
            }
        }
    }

    /// Records a manifest the registry stored (`added`: the bytes it was admitted with);
    /// returns the namespace's usage after it.
    pub(crate) async fn put(
        &self,
        namespace: &str,
        repository: &str,
        digest: &str,
        references: Arc<Vec<Reference>>,
        added: u64,
    ) -> Result<u64, PolicyError> {
        match &self.backend {
            Backend::Local(local) => local.put(namespace, repository, digest, references).await,
            Backend::Redis { usage, last_known } => {
                match usage.put(namespace, repository, digest, &references).await {
                    Some(after) => {
                        lock(last_known).insert(namespace.to_string(), after);
                        Ok(after)
                    }
                    None => {
                        // Not recorded in Redis: this instance still counts it, so a
                        // series of pushes during the outage cannot pass the quota.
                        let mut known = lock(last_known);
                        let entry = known.entry(namespace.to_string()).or_insert(0);
                        *entry = entry.saturating_add(added);
                        Err(PolicyError::NotShared)
                    }
                }
            }
        }
    }

    /// Records a manifest of `namespace` the registry deleted; returns the namespace's
    /// usage after it, when the manifest was known.
    pub(crate) async fn delete(
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
    pub(crate) async fn all(&self) -> Result<Vec<(String, u64)>, PolicyError> {
        match &self.backend {
            Backend::Local(local) => local.all().await,
            Backend::Redis { usage, .. } => usage.all().await.ok_or(PolicyError::NotShared),
        }
    }

    /// Replaces all usage with `manifests` (namespace, repository, digest, references):
    /// `usage scan`. One transaction in the embedded store; in Redis the old keys are
    /// deleted first, so other instances briefly see less usage.
    pub(crate) async fn replace_all(
        &self,
        manifests: Vec<(String, String, String, Vec<Reference>)>,
    ) -> Result<(), PolicyError> {
        match &self.backend {
            Backend::Local(local) => local.replace_all(manifests).await,
            Backend::Redis { usage, .. } => {
                usage.clear().await.ok_or(PolicyError::NotShared)?;
                for (namespace, repository, digest, references) in &manifests {
                    usage
                        .put(namespace, repository, digest, references)
                        .await
                        .ok_or(PolicyError::NotShared)?;
                }
                Ok(())
            }
        }
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
