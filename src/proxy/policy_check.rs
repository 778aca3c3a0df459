//! Quotas and immutable tags on the proxy path (`policy:`; admission's `Policy` step, the
//! request body and the registry's answer).
//!
//! - Upload starts (`POST …/blobs/uploads/`, mounts included) are refused while the
//!   namespace is at or over its quota; an upload chunk or monolithic upload whose declared
//!   `Content-Length` exceeds what remains is refused before a byte is forwarded.
//! - A manifest `PUT` is held until its body (at most 4 MiB, the registry's own limit) is
//!   read: a protected tag that exists with another digest, or usage over the quota with
//!   the blobs it adds, refuses it; otherwise the body goes on whole and, once the registry
//!   answered 201, its references are recorded.
//! - A manifest `DELETE` an immutable tag points to is refused; one the registry answered
//!   202 frees its namespace's unshared blobs.
//!
//! Pulls, deletes and pushes of content the namespace already holds are never refused for
//! quota. Accounts in `exempt_accounts` (the token's subject) skip the matching check.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use pingora::prelude::*;
use pingora::proxy::Session;

use super::admission::Outcome;
use super::ctx::RequestCtx;
use crate::config::PolicySettings;
use crate::error::RegistryError;
use crate::metrics::metrics;
use crate::policy::lookup::RegistryApi;
use crate::policy::manifest::{self, Reference, MAX_MANIFEST};
use crate::policy::{namespace_of, Policy};
use crate::registry::{Action, Endpoint, Scope};
use crate::settings::Settings;
use crate::upstream::NodePool;

/// A manifest `PUT` being held for its body.
pub(crate) struct ManifestPut {
    repository: String,
    namespace: String,
    reference: String,
    /// The namespace's quota, unless the account is exempt or there is none.
    quota: Option<u64>,
    /// The digest a protected tag points to now (`None`: not protected, or new).
    protected: Option<String>,
    body: BytesMut,
    /// Set once the body was let through: what to record on a 201.
    commit: Option<(String, Arc<Vec<Reference>>)>,
}

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
    let namespace = namespace_of(&repository, rules.namespace_depth).to_string();
    let subject = ctx.subject.clone().unwrap_or_default();
    let quota = match rules.quotas.exempt_accounts.contains(&subject) {
        true => None,
        false => rules.quotas.of(&namespace),
    };
    let method = &session.req_header().method;
    let outcome = match (&ctx.route.endpoint, ctx.route.action) {
        (Endpoint::UploadStart, _) | (Endpoint::UploadSession { .. }, Action::Write) => {
            let Some(quota) = quota else {
                return Ok(Outcome::Next);
            };
            let declared = declared_length(session);
            let start = ctx.route.endpoint == Endpoint::UploadStart;
            upload_allowed(policy, &namespace, quota, declared, start).await
        }
        (Endpoint::Manifest { reference }, Action::PushStart) => {
            let protected = match protected_tag(rules, &subject, &repository, reference) {
                true => {
                    let api = registry_api(session, ctx, policy, pool, &repository);
                    match api.as_ref() {
                        Some(api) => match api.tag_digest(&repository, reference).await {
                            Ok(found) => found,
                            Err(e) => return Ok(unavailable(&e)),
                        },
                        None => return Ok(unavailable(&"no registry node")),
                    }
                }
                false => None,
            };
            ctx.manifest_put = Some(ManifestPut {
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
        (Endpoint::Manifest { reference }, Action::Delete) if method == http::Method::DELETE => {
            let exempt = rules.immutable.exempt_accounts.contains(&subject);
            if !exempt && rules.immutable.covers_repository(&repository) {
                let Some(api) = registry_api(session, ctx, policy, pool, &repository) else {
                    return Ok(unavailable(&"no registry node"));
                };
                match protecting_tag(&api, rules, &repository, reference).await {
                    Ok(Some(tag)) => return Ok(immutable(&repository, &tag)),
                    Ok(None) => {}
                    Err(e) => return Ok(unavailable(&e)),
                }
            }
            if reference.starts_with("sha256:") {
                ctx.manifest_delete = Some((repository, reference.clone()));
            }
            Outcome::Next
        }
        _ => Outcome::Next,
    };
    Ok(outcome)
}

/// Whether a new upload (or `declared` more bytes) fits `namespace`'s quota.
async fn upload_allowed(
    policy: &Policy,
    namespace: &str,
    quota: u64,
    declared: Option<u64>,
    start: bool,
) -> Outcome {
    let usage = match policy.usage(namespace).await {
        Ok(usage) => usage,
        Err(e) => return unavailable(&e),
    };
    let over =
        (start && usage >= quota) || declared.is_some_and(|n| usage.saturating_add(n) > quota);
    match over {
        true => over_quota(namespace, usage, quota, declared),
        false => Outcome::Next,
    }
}

/// Whether `reference` is a tag an immutable rule protects from `subject`.
fn protected_tag(rules: &PolicySettings, subject: &str, repository: &str, reference: &str) -> bool {
    !reference.contains(':')
        && !rules.immutable.exempt_accounts.iter().any(|a| a == subject)
        && rules.immutable.protects(repository, reference)
}

/// The protected tag that points to `reference` (a digest) or is `reference`, if any.
async fn protecting_tag(
    api: &RegistryApi<'_>,
    rules: &PolicySettings,
    repository: &str,
    reference: &str,
) -> Result<Option<String>, crate::policy::lookup::LookupError> {
    if !reference.contains(':') {
        let exists = rules.immutable.protects(repository, reference)
            && api.tag_digest(repository, reference).await?.is_some();
        return Ok(exists.then(|| reference.to_string()));
    }
    for tag in api.tags(repository).await? {
        if rules.immutable.protects(repository, &tag)
            && api.tag_digest(repository, &tag).await?.as_deref() == Some(reference)
        {
            return Ok(Some(tag));
        }
    }
    Ok(None)
}

/// The registry node this repository's requests go to, asked with a token the edge signs
/// for itself (`auth.token`), or with the client's `Authorization` in proxy-only mode.
fn registry_api<'a>(
    session: &Session,
    ctx: &RequestCtx,
    policy: &'a Policy,
    pool: &NodePool,
    repository: &str,
) -> Option<RegistryApi<'a>> {
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
    Some(RegistryApi {
        client: policy.client(),
        base: format!("http://{node}"),
        authorization,
        timeout: ctx.settings.read_timeout.min(Duration::from_secs(10)),
    })
}

fn declared_length(session: &Session) -> Option<u64> {
    session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
        .filter(|n| *n > 0)
}

/// Holds a manifest `PUT`'s body until it is whole, then decides. Chunks are replaced by
/// empty ones (Pingora skips those) so nothing reaches the registry before the decision.
pub(crate) async fn on_body(
    body: &mut Option<Bytes>,
    end_of_stream: bool,
    ctx: &mut RequestCtx,
    policy: &Policy,
) -> Result<()> {
    let Some(put) = ctx.manifest_put.as_mut() else {
        return Ok(());
    };
    if put.commit.is_some() {
        return Ok(());
    }
    if let Some(chunk) = body.as_mut() {
        if put.body.len() + chunk.len() > MAX_MANIFEST {
            ctx.own_error = Some(RegistryError::BodyTooLarge {
                limit: MAX_MANIFEST as u64,
            });
            return Err(Error::explain(HTTPStatus(413), "manifest over 4 MiB"));
        }
        put.body.extend_from_slice(chunk);
        *chunk = Bytes::new();
    }
    if !end_of_stream {
        return Ok(());
    }
    let whole = std::mem::take(&mut put.body).freeze();
    let digest = manifest::digest_of(&whole);
    if put
        .protected
        .as_ref()
        .is_some_and(|existing| *existing != digest)
    {
        let refusal = RegistryError::ImmutableTag {
            repository: put.repository.clone(),
            tag: put.reference.clone(),
        };
        return Err(refused(ctx, refusal, "immutable"));
    }
    // A body the edge cannot read as a manifest is the registry's to refuse; nothing is
    // recorded for it.
    let references = Arc::new(manifest::references(&whole).unwrap_or_default());
    if let Some(quota) = put.quota {
        match policy
            .usage_and_added(&put.namespace, references.clone())
            .await
        {
            Ok((usage, added)) if added > 0 && usage.saturating_add(added) > quota => {
                let refusal = RegistryError::QuotaExceeded {
                    namespace: put.namespace.clone(),
                    usage,
                    quota,
                    needed: Some(added),
                };
                return Err(refused(ctx, refusal, "quota"));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!("policy: usage of {} unreadable: {e}", put.namespace);
                let refusal = RegistryError::PolicyUnavailable("storage usage cannot be read");
                return Err(refused(ctx, refusal, "unavailable"));
            }
        }
    }
    put.commit = Some((digest, references));
    *body = Some(whole);
    Ok(())
}

/// Records what the registry's answer confirmed: a stored manifest (201) or a deleted one
/// (202).
pub(crate) async fn on_response(status: u16, ctx: &mut RequestCtx, policy: &Policy) {
    if let (201, Some(put)) = (status, ctx.manifest_put.take()) {
        if let Some((digest, references)) = put.commit {
            let recorded = policy
                .put(&put.namespace, &put.repository, &digest, references)
                .await;
            match recorded {
                Ok(usage) => {
                    if let Some(rules) = ctx.settings.policy.as_ref() {
                        crate::policy::set_gauges(&put.namespace, usage, rules)
                    }
                }
                Err(e) => {
                    tracing::error!("policy: {digest} of {} not recorded: {e}", put.repository)
                }
            }
        }
    }
    if let (202, Some((repository, digest))) = (status, ctx.manifest_delete.take()) {
        let Some(rules) = ctx.settings.policy.as_ref() else {
            return;
        };
        let namespace = namespace_of(&repository, rules.namespace_depth);
        match policy.delete(namespace, &repository, &digest).await {
            Ok(Some(usage)) => crate::policy::set_gauges(namespace, usage, rules),
            Ok(None) => {}
            Err(e) => tracing::error!("policy: deletion of {digest} not recorded: {e}"),
        }
    }
}

fn refused(ctx: &mut RequestCtx, refusal: RegistryError, reason: &str) -> Box<Error> {
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
