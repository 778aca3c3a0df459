//! What the registry's answers teach the cache (the upstream response phases).
//!
//! - A 200 to a pull by digest confirms the repository+digest pair; a GET's body also fills
//!   the cache when it fits `cache.max_object` and says what it is (`Content-Length`, no
//!   `Content-Encoding`, any `Docker-Content-Digest` equal to the digest asked for).
//! - A 404 for the pair forgets it (unless the client's `Accept` explains it); so does a 202 to a DELETE of that blob or manifest.
//! - Anything else (a 307 to the storage, a 206, an error) changes nothing.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};

use super::ctx::RequestCtx;
use crate::cache::fill::{self, Fill, FillRequest};
use crate::cache::Cache;
use crate::registry::Action;

/// Reads the registry's response header for a request the cache cares about.
pub(crate) fn on_response(
    cache: &Arc<Cache>,
    response: &ResponseHeader,
    ctx: &mut RequestCtx,
    request: &RequestHeader,
) {
    let status = response.status.as_u16();
    if ctx.route.action == Action::Delete {
        if let (202, Some((repository, digest))) = (status, ctx.route.content()) {
            cache.confirmed.forget(repository, digest);
        }
        return;
    }
    let Some((repository, digest)) = ctx.cache_pull.clone() else {
        return;
    };
    // The requests waiting for this digest go on at once unless a fill starts below; the
    // lead is never held for the length of a download that fills nothing.
    let leader = ctx.cache_leader.take();
    match status {
        200 => cache.confirmed.confirm(&repository, &digest),
        // A 404 explained by the client's `Accept` (an OCI manifest asked for without its
        // media type) says nothing about whether the repository holds it.
        404 if !withheld_for_accept(cache, &digest, request) => {
            cache.confirmed.forget(&repository, &digest);
            return;
        }
        _ => return,
    }
    if request.method != http::Method::GET {
        return;
    }
    let Some(limits) = ctx.settings.cache.as_ref() else {
        return;
    };
    let header = |name: &str| response.headers.get(name).and_then(|v| v.to_str().ok());
    let Some(size) = header("content-length").and_then(|v| v.parse::<u64>().ok()) else {
        return;
    };
    let same_digest = header("docker-content-digest").is_none_or(|d| d == digest);
    if size > limits.max_object || header("content-encoding").is_some() || !same_digest {
        return;
    }
    let request = FillRequest {
        digest,
        leader,
        size,
        content_type: header("content-type")
            .unwrap_or("application/octet-stream")
            .to_string(),
        max_size: limits.max_size,
        memory: limits.memory,
    };
    ctx.cache_fill = Fill::start(cache, request);
}

/// Whether the cached entry for `digest` is one the registry refuses to this request's
/// `Accept` (see [`super::cache_answer::accepts`]).
fn withheld_for_accept(cache: &Cache, digest: &str, request: &RequestHeader) -> bool {
    cache
        .store
        .peek(digest)
        .is_some_and(|entry| !super::cache_answer::accepts(request, &entry.content_type))
}

/// Feeds one chunk of the body to the fill; the end of the body commits it. Returns a
/// pause for the client's answer while the disk is far behind (`fill::PACE_ABOVE`).
pub(crate) fn on_body(
    body: &Option<Bytes>,
    end_of_stream: bool,
    ctx: &mut RequestCtx,
) -> Option<Duration> {
    let fill = ctx.cache_fill.as_ref()?;
    if let Some(chunk) = body {
        if !fill.push(chunk) {
            // Given up: dropping it discards what was written.
            ctx.cache_fill = None;
            return None;
        }
    }
    if end_of_stream {
        if let Some(fill) = ctx.cache_fill.take() {
            fill.finish();
        }
        return None;
    }
    (fill.backlog() > fill::PACE_ABOVE).then_some(Duration::from_millis(1))
}
