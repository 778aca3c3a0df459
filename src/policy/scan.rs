//! `registry-edge usage scan`: rebuilds usage from what the registry's API lists.
//!
//! Walks the catalog, each repository's tags and each tag's manifest (and, for an index,
//! its child manifests), asking the first `upstream.nodes` entry with a short-lived token
//! the edge signs for itself (`auth.token`), or with none when the registry is open.
//! Manifests no tag points to are not listed by the API, so they are not counted until a
//! PUT through the edge shows them.

use std::time::{Duration, SystemTime};

use super::lookup::{LookupError, RegistryApi};
use super::manifest::{self, Reference};
use super::namespace_of;
use super::store::{Store, StoreError};
use crate::config::PolicySettings;
use crate::load::Loaded;
use crate::registry::Scope;

/// What a scan found.
#[derive(Debug, Default)]
pub struct Scanned {
    pub repositories: usize,
    pub manifests: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("no policy section in the configuration")]
    NoPolicy,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Registry(#[from] LookupError),
    #[error("cannot start the scan: {0}")]
    Runtime(#[from] std::io::Error),
    #[error(transparent)]
    Policy(#[from] super::PolicyError),
}

/// Runs the scan for `loaded`'s configuration, replacing the usage in its store.
pub fn run(loaded: &Loaded) -> Result<Scanned, ScanError> {
    let config = &loaded.config;
    let settings = config.policy.as_ref().ok_or(ScanError::NoPolicy)?;
    let node = config.upstream.nodes[0];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = super::registry_client()?;
    let sign = |scopes: Vec<Scope>| {
        loaded.auth.as_ref().map(|auth| {
            let issued = auth
                .tokens
                .issue("registry-edge", &scopes, SystemTime::now());
            format!("Bearer {}", issued.token)
        })
    };
    let api = |authorization| RegistryApi {
        client: &client,
        base: format!("http://{node}"),
        authorization,
        timeout: config.upstream.read_timeout.max(Duration::from_secs(30)),
    };
    runtime.block_on(async {
        let store = Store::open(&settings.state_dir)?;
        let repositories = api(sign(vec![Scope::catalog()])).catalog().await?;
        let mut found = Vec::new();
        for repository in &repositories {
            let api = api(sign(vec![Scope::repository(repository, &["pull"])]));
            found.extend(manifests_of(&api, repository).await?);
        }
        record(&store, settings, &found)?;
        Ok(Scanned {
            repositories: repositories.len(),
            manifests: found.len(),
        })
    })
}

/// A manifest found in the registry: repository, digest, references.
type Found = (String, String, Vec<Reference>);

/// Every manifest a tag of `repository` reaches, child manifests of indexes included.
async fn manifests_of(api: &RegistryApi<'_>, repository: &str) -> Result<Vec<Found>, ScanError> {
    let mut found: Vec<Found> = Vec::new();
    let mut pending: Vec<String> = api.tags(repository).await?;
    while let Some(reference) = pending.pop() {
        let Some(body) = api.manifest(repository, &reference).await? else {
            continue;
        };
        let digest = manifest::digest_of(&body);
        if found.iter().any(|(_, d, _)| *d == digest) {
            continue;
        }
        // A body that is not a manifest the edge can count holds nothing countable.
        let references = manifest::references(&body).unwrap_or_default();
        // An index's children are manifests in the same repository, with their own blobs.
        if is_index(&body) {
            pending.extend(references.iter().map(|r| r.digest.clone()));
        }
        found.push((repository.to_string(), digest, references));
    }
    Ok(found)
}

fn is_index(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .map(|v| v["manifests"].is_array())
        .unwrap_or(false)
}

fn record(store: &Store, settings: &PolicySettings, found: &[Found]) -> Result<(), StoreError> {
    store.clear()?;
    for (repository, digest, references) in found {
        let namespace = namespace_of(repository, settings.namespace_depth);
        store.put(namespace, repository, digest, references)?;
    }
    Ok(())
}
