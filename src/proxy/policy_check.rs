//! Quotas and immutable tags on the proxy path (`policy:`): admission's `Policy` step and
//! the registry's answer. Request bodies: `policy_body`.
//!
//! - Upload starts (`POST …/blobs/uploads/`, mounts included) are refused while the
//!   namespace is at or over its quota, except a mount of a blob the namespace already
//!   holds; an upload declaring a `Content-Length` over what remains is refused before a
//!   byte is forwarded, and one streaming past it is cut (`policy_body`).
//! - A manifest `PUT` to a protected tag looks up the tag's digest now; the body is held
//!   and decided in `policy_body`; a 2xx from the registry records it.
//! - A manifest `DELETE` an immutable tag points to is refused; one the registry answered
//!   2xx frees its namespace's unshared blobs.
//!
//! Pulls, deletes and pushes of content the namespace already holds are never refused for
//! quota. Accounts in `exempt_accounts` (the token's subject) skip the matching check.

use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::admission::Outcome;
use super::ctx::RequestCtx;
use super::policy_body::{Lookup, ManifestPut, UploadRoom};
use crate::config::PolicySettings;
use crate::error::RegistryError;
use crate::metrics::metrics;
use crate::policy::lookup::{LookupError, RegistryApi};
use crate::policy::manifest::{Reference, MAX_MANIFEST};
use crate::policy::{set_gauges, Policy};
use crate::registry::{Action, Endpoint, Scope};
use crate::settings::Settings;
use crate::upstream::NodePool;

/// Admission's `Policy` step.
pub(crate) async fn admit(
    session: &Session,
    ctx: &mut RequestCtx,
    settings: &Settings,
    policy: &Policy,
    pool: &NodePool,
) -> Result<Outcome> {
    let Some(rules) = settings.policy.as_ref() else {
        return Ok(Outcome::Next);
    };
    let Some(repository) = ctx.route.repository.clone() else {
        return Ok(Outcome::Next);
    };
    let namespace = policy.namespace_of(&repository).to_string();
    let subject = ctx.subject.clone().unwrap_or_default();
    let quota = match rules.quotas.exempt_accounts.contains(&subject) {
        true => None,
        false => rules.quotas.of(&namespace),
    };
    let lookup = || lookup(session, ctx, pool, &repository);
    let outcome = match (&ctx.route.endpoint, ctx.route.action) {
        (Endpoint::UploadStart, _) | (Endpoint::UploadSession { .. }, Action::Write) => {
            let Some(quota) = quota else {
                return Ok(Outcome::Next);
            };
            let start = ctx.route.endpoint == Endpoint::UploadStart;
            let usage = match policy.usage(&namespace).await {
                Ok(usage) => usage,
                Err(e) => return Ok(unavailable(&crate::report::chain(&e))),
            };
            let declared = declared_length(session);
            let mounted = mount_of(session);
            if let (true, Some(digest)) = (start && usage >= quota, mounted) {
                // A mount of a blob the namespace holds adds nothing.
                match holds(policy, &namespace, digest).await {
                    Ok(true) => return Ok(Outcome::Next),
                    Ok(false) => {}
                    Err(e) => return Ok(unavailable(&crate::report::chain(&e))),
                }
            }
            let over = (start && usage >= quota)
                || declared.is_some_and(|n| usage.saturating_add(n) > quota);
            if over {
                return Ok(over_quota(&namespace, usage, quota, declared));
            }
            ctx.upload_room = Some(UploadRoom {
                namespace,
                usage,
                quota,
            });
            Outcome::Next
        }
        (Endpoint::Manifest { reference }, Action::PushStart) => {
            if declared_length(session).is_some_and(|n| n > MAX_MANIFEST as u64) {
                let limit = MAX_MANIFEST as u64;
                return Ok(Outcome::Refuse(
                    RegistryError::BodyTooLarge { limit }.into(),
                ));
            }
            let protected = match protected_tag(rules, &subject, &repository, reference) {
                true => {
                    let Some(lookup) = lookup() else {
                        return Ok(unavailable(&"no registry node"));
                    };
                    match lookup.api(policy).tag_digest(&repository, reference).await {
                        Ok(found) => found,
                        Err(e) => return Ok(unavailable(&crate::report::chain(&e))),
                    }
                }
                false => None,
            };
            ctx.manifest_put = Some(ManifestPut {
                lookup: quota.and_then(|_| lookup()),
                repository,
                namespace,
                reference: reference.clone(),
                quota,
                protected,
                body: BytesMut::new(),
                commit: None,
            });
            Outcome::Next
        }
        (Endpoint::Manifest { reference }, Action::Delete) => {
            if rules.immutable.covers_repository(&repository, &subject) {
                let Some(lookup) = lookup() else {
                    return Ok(unavailable(&"no registry node"));
                };
                let api = lookup.api(policy);
                match protecting_tag(&api, rules, &subject, &repository, reference).await {
                    Ok(Some(tag)) => return Ok(immutable(&repository, &tag)),
                    Ok(None) => {}
                    Err(e) => return Ok(unavailable(&crate::report::chain(&e))),
                }
            }
            if reference.contains(':') {
                ctx.manifest_delete = Some((repository, reference.clone()));
            }
            Outcome::Next
        }
        _ => Outcome::Next,
    };
    Ok(outcome)
}

/// Records what the registry's answer confirmed: a stored manifest or a deleted one (any
/// 2xx). Informational answers (`100 Continue`) change nothing.
pub(crate) async fn on_response(status: u16, ctx: &mut RequestCtx, policy: &Policy) {
    if !(200..300).contains(&status) {
        return;
    }
    let rules = ctx.settings.policy.clone();
    if let Some(put) = ctx.manifest_put.take() {
        if let Some(commit) = put.commit {
            let (namespace, repository) = (&put.namespace, &put.repository);
            let recorded = policy
                .put(
                    namespace,
                    repository,
                    &commit.digest,
                    commit.references,
                    commit.added,
                )
                .await;
            match (recorded, &rules) {
                (Ok(usage), Some(rules)) => set_gauges(namespace, usage, rules),
                (Ok(_), None) => {}
                (Err(e), _) => {
                    tracing::error!(
                        "policy: {} of {repository} not recorded: {}",
                        commit.digest,
                        crate::report::chain(&e)
                    )
                }
            }
            // The reservation ends only now that the usage includes the manifest.
            drop(commit.reservation);
        }
    }
    if let Some((repository, digest)) = ctx.manifest_delete.take() {
        let namespace = policy.namespace_of(&repository);
        match (policy.delete(namespace, &repository, &digest).await, &rules) {
            (Ok(Some(usage)), Some(rules)) => set_gauges(namespace, usage, rules),
            (Ok(_), _) => {}
            (Err(e), _) => tracing::error!(
                "policy: deletion of {digest} not recorded: {}",
                crate::report::chain(&e)
            ),
        }
    }
}

/// Whether `namespace` holds blob `digest`.
async fn holds(
    policy: &Policy,
    namespace: &str,
    digest: &str,
) -> Result<bool, crate::policy::PolicyError> {
    let probe = Reference {
        digest: digest.to_string(),
        size: 0,
        child_manifest: false,
    };
    let (_, unheld) = policy
        .usage_and_unheld(namespace, std::sync::Arc::new(vec![probe]))
        .await?;
    Ok(unheld.is_empty())
}

/// The `mount` query parameter of a cross-repository mount.
fn mount_of(session: &Session) -> Option<&str> {
    session
        .req_header()
        .uri
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("mount="))
}

/// Whether `reference` is a tag an immutable rule protects from `subject`.
fn protected_tag(rules: &PolicySettings, subject: &str, repository: &str, reference: &str) -> bool {
    !reference.contains(':') && rules.immutable.protects(repository, reference, subject)
}

/// The protected tag that points to `reference` (a digest) or is `reference`, if any.
async fn protecting_tag(
    api: &RegistryApi<'_>,
    rules: &PolicySettings,
    subject: &str,
    repository: &str,
    reference: &str,
) -> Result<Option<String>, LookupError> {
    if !reference.contains(':') {
        let exists = rules.immutable.protects(repository, reference, subject)
            && api.tag_digest(repository, reference).await?.is_some();
        return Ok(exists.then(|| reference.to_string()));
    }
    for tag in api.tags(repository).await? {
        if rules.immutable.protects(repository, &tag, subject)
            && api.tag_digest(repository, &tag).await?.as_deref() == Some(reference)
        {
            return Ok(Some(tag));
        }
    }
    Ok(None)
}

/// The registry node this repository's requests go to, asked with a token the edge signs
/// for itself (`auth.token`), or with the client's `Authorization` in proxy-only mode.
fn lookup(
    session: &Session,
    ctx: &RequestCtx,
    pool: &NodePool,
    repository: &str,
) -> Option<Lookup> {
    let node = pool.select(Some(repository), &[])?;
    let authorization = match &ctx.settings.auth {
        Some(auth) => {
            let scope = Scope::repository(repository, &["pull"]);
            let issued = auth
                .tokens
                .issue("registry-edge", &[scope], SystemTime::now());
            Some(format!("Bearer {}", issued.token))
        }
        None => session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    Some(Lookup {
        base: format!("http://{node}"),
        authorization,
        timeout: ctx.settings.read_timeout.min(Duration::from_secs(10)),
    })
}

/// A declared, non-zero `Content-Length`: bytes an upload brings.
fn declared_length(session: &Session) -> Option<u64> {
    super::checks::declared_length(session).filter(|n| *n > 0)
}

pub(crate) fn refused(ctx: &mut RequestCtx, refusal: RegistryError, reason: &str) -> Box<Error> {
    metrics().policy_refusals.with_label_values(&[reason]).inc();
    let status = refusal.status();
    ctx.own_error = Some(refusal);
    Error::explain(HTTPStatus(status), "refused by policy")
}

fn over_quota(namespace: &str, usage: u64, quota: u64, needed: Option<u64>) -> Outcome {
    metrics()
        .policy_refusals
        .with_label_values(&["quota"])
        .inc();
    let error = RegistryError::QuotaExceeded {
        namespace: namespace.to_string(),
        usage,
        quota,
        needed,
    };
    Outcome::Refuse(error.into())
}

fn immutable(repository: &str, tag: &str) -> Outcome {
    metrics()
        .policy_refusals
        .with_label_values(&["immutable"])
        .inc();
    let error = RegistryError::ImmutableTag {
        repository: repository.to_string(),
        tag: tag.to_string(),
    };
    Outcome::Refuse(error.into())
}

fn unavailable(problem: &dyn std::fmt::Display) -> Outcome {
    tracing::error!("policy: cannot check: {problem}");
    metrics()
        .policy_refusals
        .with_label_values(&["unavailable"])
        .inc();
    Outcome::Refuse(RegistryError::PolicyUnavailable("the policy cannot be checked").into())
}
