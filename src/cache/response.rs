//! The cache's hooks on the registry's answer.
//!
//! - [`upstream_response`]: a 200 to a pull by digest confirms the repository+digest pair
//!   on its endpoint (`/blobs/` or `/manifests/`) and teaches a cached entry that endpoint's
//!   `Content-Type` (a pull by digest is filled by its own fetch, `fetch`). A 200 to a GET
//!   of a manifest by tag confirms the digest its `Docker-Content-Digest` names, and its
//!   body fills that digest when it says what it is (`Content-Length` within
//!   `cache.max_object`, no `Content-Encoding`; the fill commits only if the body's SHA-256
//!   is that digest), so a later pull by digest is warm; the by-tag answer itself always
//!   comes from the registry. A 404 for the pair forgets it (unless the client's
//!   `Accept` explains it); so does a 202 to a DELETE of that blob or manifest. Anything
//!   else (a 307 to the storage, a 206, an error) changes nothing.
//! - [`response_body`]: a manifest by tag's body into its fill; its end commits it.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use pingora::http::{RequestHeader, ResponseHeader};

use super::answer::accepts;
use super::commit::{self, Bounds};
use super::disk::sha256_hex;
use super::entry::{Entry, Kind};
use super::request::{kind_of, RequestState, TagFill};
use super::shared::Cache;
use crate::hooks::RequestFacts;
use crate::registry::Action;

/// `upstream_response_filter`: what the registry's answer teaches the cache (a confirmed
/// or forgotten pair, an endpoint's content type, a fill started).
pub(crate) fn upstream_response(
    cache: &Arc<Cache>,
    response: &ResponseHeader,
    request_header: &RequestHeader,
    request: &RequestFacts,
    state: &mut Option<RequestState>,
) {
    super::stale::remember(cache, response, request);
    let status = response.status.as_u16();
    if request.route.action == Action::Delete {
        let deleted = request.route.content().zip(kind_of(&request.route));
        if let (202, Some(((repository, digest), kind))) = (status, deleted) {
            cache.confirmed.forget(repository, digest, kind);
        }
        return;
    }
    let Some(pull) = state.as_mut() else {
        return;
    };
    let header = |name: &str| response.headers.get(name).and_then(|v| v.to_str().ok());
    if pull.by_tag {
        match header("docker-content-digest").filter(|d| sha256_hex(d).is_some()) {
            Some(digest) if status == 200 => pull.digest = digest.to_string(),
            _ => return,
        }
    }
    match status {
        200 => cache
            .confirmed
            .confirm(&pull.repository, &pull.digest, pull.kind),
        // A 404 explained by the client's `Accept` (an OCI manifest asked for without its
        // media type) says nothing about whether the repository holds it.
        404 if !withheld_for_accept(cache, pull, request_header) => {
            cache
                .confirmed
                .forget(&pull.repository, &pull.digest, pull.kind);
            return;
        }
        _ => return,
    }
    let Some(limits) = request.settings.cache.as_ref() else {
        return;
    };
    let size = header("content-length").and_then(|v| v.parse::<u64>().ok());
    let same_digest = header("docker-content-digest").is_none_or(|d| d == pull.digest);
    let (Some(size), None, true) = (size, header("content-encoding"), same_digest) else {
        return;
    };
    let content_type = header("content-type").unwrap_or("application/octet-stream");
    if let Some(entry) = cache.store.peek(&pull.digest) {
        // Cached from the other endpoint (or by an older version): this one's type.
        if entry.content_type(pull.kind).is_none() && size == entry.size {
            cache
                .store
                .learn_type(&pull.digest, pull.kind, content_type);
        }
        return;
    }
    // A pull by digest is filled by its fetch (`fetch`); a manifest by tag from the body
    // that goes to the client.
    let fits = size <= limits.max_object.min(MAX_TAG_FILL);
    if !pull.by_tag || !fits || request_header.method != http::Method::GET {
        return;
    }
    pull.tag_fill = Some(TagFill {
        digest: pull.digest.clone(),
        entry: Entry::new(size, Kind::Manifest, content_type),
        body: BytesMut::with_capacity(size as usize),
        bounds: Bounds {
            max_size: limits.max_size,
            memory: limits.memory,
        },
    });
}

/// The most of a manifest by tag gathered to fill its digest: distribution refuses to
/// store manifests over 4 MiB.
const MAX_TAG_FILL: u64 = 4 << 20;

/// Whether the cached manifest `pull` asks for is one the registry refuses to this
/// request's `Accept` (see [`accepts`]).
fn withheld_for_accept(cache: &Cache, pull: &RequestState, request: &RequestHeader) -> bool {
    let entry = cache.store.peek(&pull.digest);
    let content_type = entry.as_ref().and_then(|e| e.content_type(pull.kind));
    content_type.is_some_and(|content_type| !accepts(request, content_type))
}

/// `response_body_filter`: gathers a manifest by tag's body; its end fills the digest it
/// names (committed only if its SHA-256 is that digest).
pub(crate) fn response_body(
    cache: &Arc<Cache>,
    body: &Option<Bytes>,
    end_of_stream: bool,
    state: &mut Option<RequestState>,
) {
    let Some(pull) = state.as_mut() else {
        return;
    };
    let Some(fill) = pull.tag_fill.as_mut() else {
        return;
    };
    if let Some(chunk) = body {
        if (fill.body.len() + chunk.len()) as u64 > fill.entry.size {
            pull.tag_fill = None;
            return;
        }
        fill.body.extend_from_slice(chunk);
    }
    if end_of_stream {
        if let Some(fill) = pull.tag_fill.take() {
            let TagFill {
                digest,
                entry,
                body,
                bounds,
            } = fill;
            if !cache.store.contains(&digest) {
                commit::fill_from_memory(Arc::clone(cache), digest, entry, body.freeze(), bounds);
            }
        }
    }
}
