//! `registry-edge usage scan`: rebuilds usage from what the registry's API lists; and
//! `usage show`. Both use the store the running edge uses (Redis when
//! `shared_state.redis` is set), so they work while it runs.
//!
//! Walks the catalog, each repository's tags and each tag's manifest (and, for an index,
//! its child manifests), asking the first `upstream.nodes` entry (and the first node of
//! every route that is not read-only, naming its repositories at the edge) with a
//! short-lived token the edge signs for itself (`auth.token`), or with none when the
//! registry is open.
//! Manifests no tag points to are not listed by the API, so they are not counted until a
//! PUT through the edge shows them.

use std::time::Duration;

use super::error::PolicyError;
use super::manifest::{self, Reference};
use super::usage::{namespace_of, Policy};
use crate::config::{Config, PolicySettings};
use crate::load::Loaded;
use crate::registry::Scope;
use crate::shared_state::SharedState;
use crate::upstream::registry_api::{edge_token, LookupError, RegistryApi, RegistryClient};

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
    Registry(#[from] LookupError),
    #[error("cannot start: {0}")]
    Runtime(#[from] std::io::Error),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("cannot make the registry client")]
    Client(#[from] crate::upstream::RegistryClientError),
    #[error("shared_state.redis: {0}")]
    Redis(String),
    #[error("{}: no usage store yet (the edge makes it at start; `usage scan` fills it)", .0.display())]
    NoStore(std::path::PathBuf),
}

/// The policy section and the usage store `config` names; with `existing`, an embedded
/// store that is not there yet is an error rather than created (`usage show` must not
/// make one the edge does not use).
fn open(
    config: &Config,
    existing: bool,
    registry: RegistryClient,
) -> Result<(&PolicySettings, Policy), ScanError> {
    let settings = config.policy.as_ref().ok_or(ScanError::NoPolicy)?;
    let file = settings.state_dir.join(super::store::FILE);
    if existing && config.shared_state.is_none() && !file.exists() {
        return Err(ScanError::NoStore(file));
    }
    let shared = config
        .shared_state
        .as_ref()
        .map(|redis| SharedState::new(redis.clone()))
        .transpose()
        .map_err(|e| ScanError::Redis(e.to_string()))?;
    Ok((
        settings,
        Policy::open_for_command(settings, shared, registry)?,
    ))
}

fn runtime() -> Result<tokio::runtime::Runtime, ScanError> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Runs the scan for `loaded`'s configuration, replacing the usage in its store.
pub fn run(loaded: &Loaded) -> Result<Scanned, ScanError> {
    let config = &loaded.config;
    let runtime = runtime()?;
    let _entered = runtime.enter();
    let client = RegistryClient::new()?;
    let (settings, policy) = open(config, false, client.clone())?;
    let sign = |scopes: Vec<Scope>| {
        loaded
            .auth
            .as_ref()
            .map(|auth| edge_token(&auth.tokens, &scopes))
    };
    // The default pool, and every route that takes pushes (a read-only mirror's catalog
    // holds what it fetched, nobody's pushes), with the prefix its names take at the edge.
    let mut pools = vec![(config.upstream.nodes[0], "", config.upstream.read_timeout)];
    for route in config.routes.iter().filter(|r| !r.read_only) {
        let node = route.pool.nodes[0];
        pools.push((node, route.edge_prefix.as_str(), route.pool.read_timeout));
    }
    runtime.block_on(async {
        let mut found = Vec::new();
        let mut listed = 0;
        for (node, prefix, timeout) in pools {
            let timeout = timeout.max(Duration::from_secs(30));
            let api = |authorization| client.at(node, authorization, timeout);
            let repositories = api(sign(vec![Scope::catalog()])).catalog().await?;
            listed += repositories.len();
            for repository in &repositories {
                let api = api(sign(vec![Scope::repository(repository, &["pull"])]));
                let at_edge = manifests_of(&api, repository).await?.into_iter();
                found.extend(
                    at_edge.map(|(name, digest, refs)| (format!("{prefix}{name}"), digest, refs)),
                );
            }
        }
        let count = found.len();
        let manifests = found
            .into_iter()
            .map(|(repository, digest, references)| {
                let namespace = namespace_of(&repository, settings.namespace_depth).to_string();
                (namespace, repository, digest, references)
            })
            .collect();
        policy.replace_all(manifests).await?;
        Ok(Scanned {
            repositories: listed,
            manifests: count,
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

/// `usage show`: one line per namespace (those with usage and those with a quota listed),
/// `namespace  usage  quota  percent`, sizes in bytes and binary units; only `namespace`
/// when given.
pub fn report(config: &Config, namespace: Option<&str>) -> Result<String, ScanError> {
    let runtime = runtime()?;
    let _entered = runtime.enter();
    let (settings, policy) = open(config, true, RegistryClient::new()?)?;
    let all = runtime.block_on(policy.all())?;
    let mut rows: std::collections::BTreeMap<String, u64> = all.into_iter().collect();
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
