//! The policy's body hook ([`request_body`]): a manifest `PUT` held whole until it is
//! decided, and the bytes of a blob upload bounded by what remains of the quota.
//!
//! A held manifest: chunks are replaced by empty ones (Pingora skips those) so nothing
//! reaches the registry before the decision; at the end of the body the immutable-tag rule
//! and the quota are checked, and the body goes on whole. The blobs it adds are counted at
//! the sizes the registry reports for them (a `HEAD` each), not the sizes the client wrote
//! in its descriptors, and the bytes are reserved until the registry answered.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::manifest::{self, Reference, MAX_MANIFEST};
use super::request::{count_refusal, Commit, Follow, Lookup, ManifestPut, RequestState};
use super::usage::Policy;
use crate::error::RegistryError;
use crate::hooks::{Refusal, RequestFacts};
use crate::upstream::registry_api::{LookupError, RegistryApi};

/// `request_body_filter`: holds a manifest, bounds an upload. A refusal is answered by
/// the proxy (the request never reached the registry, or its body was cut).
pub(crate) async fn request_body(
    policy: &Policy,
    body: &mut Option<Bytes>,
    end_of_stream: bool,
    request: &RequestFacts,
    state: &mut Option<RequestState>,
) -> Result<(), Refusal> {
    match state {
        Some(RequestState(Follow::Upload(room))) => {
            // `body_bytes` counts what the client sent so far (`proxy::body`).
            if room.usage.saturating_add(request.body_bytes) > room.quota {
                count_refusal("quota");
                let refusal = RegistryError::QuotaExceeded {
                    namespace: room.namespace.clone(),
                    usage: room.usage,
                    quota: room.quota,
                    needed: Some(request.body_bytes),
                };
                return Err(refusal.into());
            }
            Ok(())
        }
        Some(RequestState(Follow::ManifestPut(put))) => {
            hold(policy, body, end_of_stream, put).await
        }
        _ => Ok(()),
    }
}

/// Holds one chunk of a manifest body; at its end decides and lets it through whole.
async fn hold(
    policy: &Policy,
    body: &mut Option<Bytes>,
    end_of_stream: bool,
    put: &mut ManifestPut,
) -> Result<(), Refusal> {
    if put.commit.is_some() {
        return Ok(());
    }
    if let Some(chunk) = body.as_mut() {
        if put.body.len() + chunk.len() > MAX_MANIFEST {
            let limit = MAX_MANIFEST as u64;
            return Err(RegistryError::BodyTooLarge { limit }.into());
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
            // #935, see `proxy::body`).
            *body = (!whole.is_empty()).then_some(whole);
            Ok(())
        }
        Err((refusal, reason)) => {
            count_refusal(reason);
            Err(refusal.into())
        }
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
    count(put, policy, lookup, quota, digest, references).await
}

/// The quota for a manifest's blobs the namespace does not hold yet, at the sizes the
/// registry reports: the bytes are reserved until the registry answered.
async fn count(
    put: &ManifestPut,
    policy: &Policy,
    lookup: &Lookup,
    quota: u64,
    digest: String,
    references: Arc<Vec<Reference>>,
) -> Result<Commit, (RegistryError, &'static str)> {
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
    let sizes = registry_sizes(&lookup.api(policy), &lookup.repository, &unheld)
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
) -> Result<HashMap<String, u64>, LookupError> {
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
