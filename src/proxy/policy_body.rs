//! `policy:` on request bodies: a manifest `PUT` held whole until it is decided, and the
//! bytes of a blob upload bounded by what remains of the quota.
//!
//! A held manifest: chunks are replaced by empty ones (Pingora skips those) so nothing
//! reaches the registry before the decision; at the end of the body the immutable-tag rule
//! and the quota are checked, and the body goes on whole. The blobs it adds are counted at
//! the sizes the registry reports for them (a `HEAD` each), not the sizes the client wrote
//! in its descriptors, and the bytes are reserved until the registry answered.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::prelude::*;

use super::ctx::RequestCtx;
use super::policy_check::refused;
use crate::error::RegistryError;
use crate::policy::lookup::RegistryApi;
use crate::policy::manifest::{self, Reference, MAX_MANIFEST};
use crate::policy::{Policy, Reservation};

/// Where and how the edge asks the registry about a repository: the node's base URL and
/// the `Authorization` to send.
#[derive(Clone)]
pub(crate) struct Lookup {
    pub base: String,
    pub authorization: Option<String>,
    pub timeout: Duration,
}

impl Lookup {
    pub(crate) fn api<'a>(&self, policy: &'a Policy) -> RegistryApi<'a> {
        RegistryApi {
            client: policy.client(),
            base: self.base.clone(),
            authorization: self.authorization.clone(),
            timeout: self.timeout,
        }
    }
}

/// A manifest `PUT` being held for its body.
pub(crate) struct ManifestPut {
    pub repository: String,
    pub namespace: String,
    pub reference: String,
    /// The namespace's quota, unless the account is exempt or there is none.
    pub quota: Option<u64>,
    /// The digest a protected tag points to now (`None`: not protected, or new).
    pub protected: Option<String>,
    /// For the sizes of the blobs it adds (set when a quota applies).
    pub lookup: Option<Lookup>,
    pub body: BytesMut,
    /// Set once the body was let through: what to record on the registry's 2xx.
    pub commit: Option<Commit>,
}

/// A manifest let through, recorded once the registry stored it.
pub(crate) struct Commit {
    pub digest: String,
    pub references: Arc<Vec<Reference>>,
    /// Bytes it adds to its namespace.
    pub added: u64,
    /// Held until the usage is recorded (dropped with the request otherwise).
    pub reservation: Option<Reservation>,
}

/// A blob upload's room: what remains of its namespace's quota when it was admitted.
pub(crate) struct UploadRoom {
    pub namespace: String,
    pub usage: u64,
    pub quota: u64,
}

/// A new attempt at the registry (Pingora retries an idempotent PUT and replays the body
/// from its own buffer of the raw chunks): a body not yet decided starts again.
pub(crate) fn new_attempt(ctx: &mut RequestCtx) {
    if let Some(put) = ctx.manifest_put.as_mut() {
        if put.commit.is_none() {
            put.body.clear();
        }
    }
}

/// `request_body_filter` for `policy`: holds a manifest, bounds an upload.
pub(crate) async fn on_body(
    body: &mut Option<Bytes>,
    end_of_stream: bool,
    ctx: &mut RequestCtx,
    policy: &Policy,
) -> Result<()> {
    if let Some(room) = &ctx.upload_room {
        // `body_bytes` counts what the client sent so far (`body::on_chunk`).
        if room.usage.saturating_add(ctx.body_bytes) > room.quota {
            let refusal = RegistryError::QuotaExceeded {
                namespace: room.namespace.clone(),
                usage: room.usage,
                quota: room.quota,
                needed: Some(ctx.body_bytes),
            };
            return Err(refused(ctx, refusal, "quota"));
        }
    }
    let Some(put) = ctx.manifest_put.as_mut() else {
        return Ok(());
    };
    if put.commit.is_some() {
        return Ok(());
    }
    if let Some(chunk) = body.as_mut() {
        if put.body.len() + chunk.len() > MAX_MANIFEST {
            let limit = MAX_MANIFEST as u64;
            ctx.own_error = Some(RegistryError::BodyTooLarge { limit });
            return Err(Error::explain(HTTPStatus(413), "manifest over 4 MiB"));
        }
        put.body.extend_from_slice(chunk);
        *chunk = Bytes::new();
    }
    if !end_of_stream {
        return Ok(());
    }
    let whole = std::mem::take(&mut put.body).freeze();
    match decide(put, &whole, policy).await {
        Ok(commit) => {
            put.commit = Some(commit);
            // An empty last chunk would be sent as a second chunk terminator (Pingora
            // #935, see `body::on_chunk`).
            *body = (!whole.is_empty()).then_some(whole);
            Ok(())
        }
        Err((refusal, reason)) => Err(refused(ctx, refusal, reason)),
    }
}

/// The immutable-tag rule, then the quota, for a whole manifest body.
async fn decide(
    put: &ManifestPut,
    whole: &Bytes,
    policy: &Policy,
) -> Result<Commit, (RegistryError, &'static str)> {
    let digest = manifest::digest_of(whole);
    if put
        .protected
        .as_ref()
        .is_some_and(|existing| *existing != digest)
    {
        let refusal = RegistryError::ImmutableTag {
            repository: put.repository.clone(),
            tag: put.reference.clone(),
        };
        return Err((refusal, "immutable"));
    }
    let references = match (manifest::references(whole), put.quota) {
        (Ok(references), _) => Arc::new(references),
        // Without a quota, the registry is left to refuse what it cannot read.
        (Err(_), None) => Arc::default(),
        (Err(e), Some(_)) => {
            return Err((RegistryError::ManifestInvalid(e.to_string()), "invalid"))
        }
    };
    let (Some(quota), Some(lookup)) = (put.quota, &put.lookup) else {
        return Ok(Commit {
            digest,
            references,
            added: 0,
            reservation: None,
        });
    };
    let unavailable = |e: &(dyn std::error::Error + 'static)| {
        let cause = crate::report::chain(e);
        tracing::error!(
            "policy: cannot count {digest} of {}: {cause}",
            put.repository
        );
        let refusal = RegistryError::PolicyUnavailable("storage usage cannot be read");
        (refusal, "unavailable")
    };
    let (_, unheld) = policy
        .usage_and_unheld(&put.namespace, references.clone())
        .await
        .map_err(|e| unavailable(&e))?;
    let sizes = registry_sizes(&lookup.api(policy), &put.repository, &unheld)
        .await
        .map_err(|e| unavailable(&e))?;
    let added = sizes.values().fold(0u64, |sum, n| sum.saturating_add(*n));
    let reservation = match added {
        0 => None,
        _ => match policy.reserve(&put.namespace, added, quota).await {
            Ok(Ok(reservation)) => Some(reservation),
            Ok(Err((usage, pending))) => {
                let refusal = RegistryError::QuotaExceeded {
                    namespace: put.namespace.clone(),
                    usage: usage.saturating_add(pending),
                    quota,
                    needed: Some(added),
                };
                return Err((refusal, "quota"));
            }
            Err(e) => return Err(unavailable(&e)),
        },
    };
    // Recorded at the registry's sizes.
    let references = references
        .iter()
        .map(|r| Reference {
            size: sizes.get(&r.digest).copied().unwrap_or(r.size),
            ..r.clone()
        })
        .collect();
    Ok(Commit {
        digest,
        references: Arc::new(references),
        added,
        reservation,
    })
}

/// The size the registry reports for each of `references` (its `Content-Length` to a
/// `HEAD`); the descriptor's when the registry does not have it (it then refuses the
/// manifest itself).
async fn registry_sizes(
    api: &RegistryApi<'_>,
    repository: &str,
    references: &[Reference],
) -> Result<HashMap<String, u64>, crate::policy::lookup::LookupError> {
    let heads = references
        .iter()
        .map(|r| api.content_length(repository, &r.digest, r.child_manifest));
    let lengths = futures::future::join_all(heads).await;
    let mut sizes = HashMap::new();
    for (reference, length) in references.iter().zip(lengths) {
        sizes.insert(reference.digest.clone(), length?.unwrap_or(reference.size));
    }
    Ok(sizes)
}
