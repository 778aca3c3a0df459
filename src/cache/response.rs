//! The cache's hooks on the registry's answer.
//!
//! - [`upstream_response`]: a 200 to a pull by digest confirms the repository+digest pair
//!   on its endpoint (`/blobs/` or `/manifests/`) and teaches a cached entry that endpoint's
//!   `Content-Type`; a GET's body also fills the cache when it fits `cache.max_object` and
//!   says what it is (`Content-Length`, no `Content-Encoding`, any `Docker-Content-Digest`
//!   equal to the digest asked for). A 200 to a GET of a manifest by tag does the same for
//!   the digest its `Docker-Content-Digest` names (the fill commits only if the body's
//!   SHA-256 is that digest), so a later pull by digest is warm; the by-tag answer itself
//!   always comes from the registry. A 404 for the pair forgets it (unless the client's
//!   `Accept` explains it); so does a 202 to a DELETE of that blob or manifest. Anything
//!   else (a 307 to the storage, a 206, an error) changes nothing.
//! - [`response_body`]: the body into the fill; its end commits it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};

use super::answer::accepts;
use super::disk::sha256_hex;
use super::fill::{Fill, FillRequest, PACE_ABOVE};
use super::request::{kind_of, RequestState};
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
    // The requests waiting for this digest go on at once unless a fill starts below; the
    // lead is never held for the length of a download that fills nothing.
    let leader = pull.leader.take();
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
    if size > limits.max_object || request_header.method != http::Method::GET {
        return;
    }
    let fill = FillRequest {
        digest: pull.digest.clone(),
        kind: pull.kind,
        leader,
        size,
        content_type: content_type.to_string(),
        max_size: limits.max_size,
        memory: limits.memory,
    };
    pull.fill = Fill::start(cache, fill);
}

/// Whether the cached manifest `pull` asks for is one the registry refuses to this
/// request's `Accept` (see [`accepts`]).
fn withheld_for_accept(cache: &Cache, pull: &RequestState, request: &RequestHeader) -> bool {
    let entry = cache.store.peek(&pull.digest);
    let content_type = entry.as_ref().and_then(|e| e.content_type(pull.kind));
    content_type.is_some_and(|content_type| !accepts(request, content_type))
}

/// `response_body_filter`: feeds one chunk of the body to the fill; the end of the body
/// commits it. Returns a pause for the client's answer while the disk is far behind
/// (`fill::PACE_ABOVE`).
pub(crate) fn response_body(
    body: &Option<Bytes>,
    end_of_stream: bool,
    state: &mut Option<RequestState>,
) -> Option<Duration> {
    let pull = state.as_mut()?;
    let fill = pull.fill.as_ref()?;
    if let Some(chunk) = body {
        if !fill.push(chunk) {
            // Given up: dropping it discards what was written.
            pull.fill = None;
            return None;
        }
    }
    if end_of_stream {
        if let Some(fill) = pull.fill.take() {
            fill.finish();
        }
        return None;
    }
    (fill.backlog() > PACE_ABOVE).then_some(Duration::from_millis(1))
}
