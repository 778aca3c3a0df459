//! The policy's admission hook ([`admit`], admission's `Policy` step).
//!
//! - Upload starts (`POST …/blobs/uploads/`, mounts included) are refused while the
//!   namespace is at or over its quota, except a mount of a blob the namespace already
//!   holds; an upload declaring a `Content-Length` over what remains is refused before a
//!   byte is forwarded, and one streaming past it is cut (`body`).
//! - A manifest `PUT` to a protected tag looks up the tag's digest now; the body is held
//!   and decided in `body`; a 2xx from the registry records it (`request`).
//! - A manifest `DELETE` an immutable tag points to is refused; one the registry answered
//!   2xx frees its namespace's unshared blobs.
//!
//! Pulls, deletes and pushes of content the namespace already holds are never refused for
//! quota. Accounts in `exempt_accounts` (the token's subject) skip the matching check.

use std::time::Duration;

use bytes::BytesMut;
use pingora::proxy::Session;

use super::manifest::{Reference, MAX_MANIFEST};
use super::request::{count_refusal, Follow, Lookup, ManifestPut, RequestState, UploadRoom};
use super::usage::Policy;
use crate::config::PolicySettings;
use crate::error::RegistryError;
use crate::hooks::{Outcome, Refusal, RequestFacts};
use crate::registry::{Action, Endpoint, Scope};
use crate::upstream::registry_api::{edge_token, LookupError, RegistryApi};
use crate::upstream::NodePool;

/// Longest one lookup at the registry may take during admission.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// One request as the policy's admission sees it.
struct Admit<'a> {
    session: &'a Session,
    request: &'a RequestFacts,
    policy: &'a Policy,
    pool: &'a NodePool,
    rules: &'a PolicySettings,
    repository: &'a str,
    namespace: String,
    subject: &'a str,
    /// The namespace's quota, unless the account is exempt or there is none.
    quota: Option<u64>,
}

/// Admission's `Policy` step: refuses what the rules forbid now, and sets `state` for
/// what must be decided on the body or recorded on the registry's answer.
pub(crate) async fn admit(
    policy: &Policy,
    session: &Session,
    request: &RequestFacts,
    state: &mut Option<RequestState>,
    pool: &NodePool,
) -> Outcome {
    let Some(rules) = request.settings.policy.as_ref() else {
        return Outcome::Next;
    };
    let Some(repository) = request.route.repository.as_deref() else {
        return Outcome::Next;
    };
    let namespace = policy.namespace_of(repository).to_string();
    let subject = request.subject.as_deref().unwrap_or_default();
    let quota = match rules.quotas.exempt_accounts.iter().any(|a| a == subject) {
        true => None,
        false => rules.quotas.of(&namespace),
    };
    let admit = Admit {
        session,
        request,
        policy,
        pool,
        rules,
        repository,
        namespace,
        subject,
        quota,
    };
    let decided = match (&request.route.endpoint, request.route.action) {
        (Endpoint::UploadStart, _) | (Endpoint::UploadSession { .. }, Action::Write) => {
            admit.upload().await
        }
        (Endpoint::Manifest { reference }, Action::PushStart) => {
            admit.manifest_put(reference).await
        }
        (Endpoint::Manifest { reference }, Action::Delete) => {
            admit.manifest_delete(reference).await
        }
        _ => Ok(None),
    };
    match decided {
        Ok(follow) => {
            *state = follow.map(RequestState);
            Outcome::Next
        }
        Err(refusal) => Outcome::Refuse(refusal),
    }
}

/// What one endpoint's check decided: what to follow the request with, or the refusal.
type Decided = Result<Option<Follow>, Refusal>;

impl Admit<'_> {
    /// An upload start, or a chunk of an upload session, under the namespace's quota.
    async fn upload(&self) -> Decided {
        let Some(quota) = self.quota else {
            return Ok(None);
        };
        let start = self.request.route.endpoint == Endpoint::UploadStart;
        let usage = self.policy.usage(&self.namespace).await;
        let usage = usage.map_err(|e| unavailable(&crate::report::chain(&e)))?;
        let declared = declared_length(self.session);
        if let (true, Some(digest)) = (start && usage >= quota, mount_of(self.session)) {
            // A mount of a blob the namespace holds adds nothing.
            let held = holds(self.policy, &self.namespace, digest).await;
            if held.map_err(|e| unavailable(&crate::report::chain(&e)))? {
                return Ok(None);
            }
        }
        let over =
            (start && usage >= quota) || declared.is_some_and(|n| usage.saturating_add(n) > quota);
        if over {
            return Err(over_quota(&self.namespace, usage, quota, declared));
        }
        Ok(Some(Follow::Upload(UploadRoom {
            namespace: self.namespace.clone(),
            usage,
            quota,
        })))
    }

    /// A manifest `PUT`: refused at once when declared over 4 MiB; a protected tag's
    /// digest looked up now; the body held and decided at its end.
    async fn manifest_put(&self, reference: &str) -> Decided {
        if declared_length(self.session).is_some_and(|n| n > MAX_MANIFEST as u64) {
            let limit = MAX_MANIFEST as u64;
            return Err(RegistryError::BodyTooLarge { limit }.into());
        }
        let protected = match protected_tag(self.rules, self.subject, self.repository, reference) {
            true => {
                let lookup = self
                    .lookup()
                    .ok_or_else(|| unavailable(&"no registry node"))?;
                let api = lookup.api(self.policy);
                let found = api.tag_digest(&lookup.repository, reference).await;
                found.map_err(|e| unavailable(&crate::report::chain(&e)))?
            }
            false => None,
        };
        Ok(Some(Follow::ManifestPut(Box::new(ManifestPut {
            lookup: self.quota.and_then(|_| self.lookup()),
            repository: self.repository.to_string(),
            namespace: self.namespace.clone(),
            reference: reference.to_string(),
            quota: self.quota,
            protected,
            body: BytesMut::new(),
            commit: None,
        }))))
    }

    /// A manifest `DELETE`: refused when a protected tag points to it.
    async fn manifest_delete(&self, reference: &str) -> Decided {
        let (rules, subject, repository) = (self.rules, self.subject, self.repository);
        if rules.immutable.covers_repository(repository, subject) {
            let lookup = self
                .lookup()
                .ok_or_else(|| unavailable(&"no registry node"))?;
            let api = lookup.api(self.policy);
            let names = (repository, lookup.repository.as_str());
            match protecting_tag(&api, rules, subject, names, reference).await {
                Ok(Some(tag)) => return Err(immutable(repository, &tag)),
                Ok(None) => {}
                Err(e) => return Err(unavailable(&crate::report::chain(&e))),
            }
        }
        Ok(reference.contains(':').then(|| Follow::ManifestDelete {
            repository: repository.to_string(),
            digest: reference.to_string(),
        }))
    }

    /// The registry node this repository's requests go to, asked with a token the edge
    /// signs for itself (`auth.token`), or with the client's `Authorization` in proxy-only
    /// mode.
    fn lookup(&self) -> Option<Lookup> {
        let at_node = self
            .request
            .registry_repository()
            .unwrap_or(self.repository);
        let node = self.pool.select(Some(at_node), &[])?;
        let authorization = match &self.request.settings.auth {
            Some(auth) => {
                let scope = Scope::repository(at_node, &["pull"]);
                Some(edge_token(&auth.tokens, &[scope]))
            }
            None => self
                .session
                .req_header()
                .headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        };
        Some(Lookup {
            node,
            repository: at_node.to_string(),
            authorization,
            timeout: self.request.read_timeout().min(LOOKUP_TIMEOUT),
        })
    }
}

/// Whether `namespace` holds blob `digest`.
async fn holds(
    policy: &Policy,
    namespace: &str,
    digest: &str,
) -> Result<bool, super::error::PolicyError> {
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
/// `names`: the repository at the edge (what the rules name) and at its node.
async fn protecting_tag(
    api: &RegistryApi<'_>,
    rules: &PolicySettings,
    subject: &str,
    (repository, at_node): (&str, &str),
    reference: &str,
) -> Result<Option<String>, LookupError> {
    if !reference.contains(':') {
        let exists = rules.immutable.protects(repository, reference, subject)
            && api.tag_digest(at_node, reference).await?.is_some();
        return Ok(exists.then(|| reference.to_string()));
    }
    for tag in api.tags(at_node).await? {
        if rules.immutable.protects(repository, &tag, subject)
            && api.tag_digest(at_node, &tag).await?.as_deref() == Some(reference)
        {
            return Ok(Some(tag));
        }
    }
    Ok(None)
}

/// A declared, non-zero `Content-Length`: bytes an upload brings.
fn declared_length(session: &Session) -> Option<u64> {
    crate::request::declared_length(session.req_header()).filter(|n| *n > 0)
}

fn over_quota(namespace: &str, usage: u64, quota: u64, needed: Option<u64>) -> Refusal {
    count_refusal("quota");
    let error = RegistryError::QuotaExceeded {
        namespace: namespace.to_string(),
        usage,
        quota,
        needed,
    };
    error.into()
}

fn immutable(repository: &str, tag: &str) -> Refusal {
    count_refusal("immutable");
    let error = RegistryError::ImmutableTag {
        repository: repository.to_string(),
        tag: tag.to_string(),
    };
    error.into()
}

fn unavailable(problem: &dyn std::fmt::Display) -> Refusal {
    tracing::error!("policy: cannot check: {problem}");
    count_refusal("unavailable");
    RegistryError::PolicyUnavailable("the policy cannot be checked").into()
}
