//! Answers from remembered tags (`routes[].stale_if_error`): a route's pool that answered a
//! manifest by tag teaches the cache that tag's digest (`tags`); while the pool fails
//! (no healthy node, a connect error or timeout, a 5xx or a 429), a `GET`/`HEAD` of that
//! tag is answered from the cache's manifest, if the pool answered it no longer than
//! `stale_if_error` ago, marked `Warning: 110 - "Response is Stale"`.
//!
//! Only requests whose token the edge checked are answered so (the cache's rule: the edge
//! granted pull on the name at the edge); a remembered tag also confirms its (repository,
//! digest) pair, as the pool's 200 did.

use std::time::Duration;

use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::Session;

use super::answer::{self, Asked};
use super::disk::sha256_hex;
use super::entry::Kind;
use super::shared::Cache;
use super::tags::Remembered;
use crate::hooks::RequestFacts;
use crate::metrics::metrics;
use crate::registry::{Action, Endpoint};

/// The request's name at the edge, tag and `stale_if_error`, when it is a manifest pull by
/// tag on a route that keeps tags.
fn by_tag(request: &RequestFacts) -> Option<(&str, &str, Duration)> {
    let max_age = request.routed.as_ref()?.route.settings.stale_if_error?;
    let Endpoint::Manifest { reference } = &request.route.endpoint else {
        return None;
    };
    let repository = request.route.repository.as_deref()?;
    let by_tag = request.route.action == Action::Read && !reference.contains(':');
    by_tag.then_some((repository, reference.as_str(), max_age))
}

/// `upstream_response_filter`: a 200 from the pool to a manifest pull by tag is the tag's
/// last good answer.
pub(crate) fn remember(cache: &Cache, response: &ResponseHeader, request: &RequestFacts) {
    let (Some((repository, tag, _)), Some(tags)) = (by_tag(request), &cache.tags) else {
        return;
    };
    if response.status != 200 {
        return;
    }
    let digest = response
        .headers
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .filter(|d| sha256_hex(d).is_some());
    if let Some(digest) = digest {
        tags.remember(repository, tag, digest);
    }
}

/// The remembered answer for this request, if it may be answered stale now.
fn recall(cache: &Cache, request: &RequestFacts) -> Option<Remembered> {
    if !request.settings.checks_tokens() {
        return None;
    }
    let (repository, tag, max_age) = by_tag(request)?;
    cache.tags.as_ref()?.recall(repository, tag, max_age)
}

/// Whether a failed answer from the pool (`status`: 5xx or 429) would be replaced by a
/// stale one (the manifest cached, of a type the client accepts): the edge then fails the
/// request so that [`answer`] can; otherwise the pool's answer goes to the client.
pub(crate) fn replaces(
    cache: &Cache,
    status: u16,
    header: &RequestHeader,
    request: &RequestFacts,
) -> bool {
    if status < 500 && status != 429 {
        return false;
    }
    let Some(remembered) = recall(cache, request) else {
        return false;
    };
    let entry = cache.store.peek(&remembered.digest);
    let content_type = entry.as_ref().and_then(|e| e.content_type(Kind::Manifest));
    content_type.is_some_and(|t| answer::accepts(header, t))
}

/// `fail_to_proxy`: answers the request from its remembered tag; `Ok(false)` when it has
/// none (young enough, with the manifest still cached), so the failure is answered as usual.
pub(crate) async fn answer(
    cache: &Cache,
    session: &mut Session,
    request: &RequestFacts,
) -> Result<bool> {
    let Some(remembered) = recall(cache, request) else {
        return Ok(false);
    };
    let Some(entry) = cache.store.get(&remembered.digest) else {
        return Ok(false);
    };
    let Some(repository) = request.route.repository.as_deref() else {
        return Ok(false);
    };
    let asked = Asked {
        digest: &remembered.digest,
        kind: Kind::Manifest,
        entry: &entry,
        fetch: None,
        event: "stale",
        stale: true,
    };
    // Confirmed before the answer is written: the client asks for the blobs as soon as it
    // has the manifest. The pool's 200 to this tag confirmed them whether or not the
    // answer below is given.
    let digest = &remembered.digest;
    cache.confirmed.confirm(repository, digest, Kind::Manifest);
    confirm_references(cache, repository, digest).await;
    let memory = request.settings.cache.as_ref().map_or(0, |c| c.memory);
    let headers = &request.answer_headers;
    let answered = answer::serve(session, cache, asked, (memory, headers)).await?;
    if answered {
        let route = request.route_name();
        metrics()
            .route_stale_answers
            .with_label_values(&[route])
            .inc();
    }
    Ok(answered)
}

/// Largest manifest whose references a stale answer confirms.
const MAX_MANIFEST: u64 = 4 << 20;

/// Confirms what the remembered manifest references (config and layers, an index's
/// manifests) for `repository`: the pool answered the tag with this manifest, so the
/// repository held them, and the client's next requests (by digest) can then be answered
/// from the cache while the pool fails, also after a restart (confirmations live in memory).
async fn confirm_references(cache: &Cache, repository: &str, digest: &str) {
    let Some(path) = cache.store.content_file(digest) else {
        return;
    };
    let small = tokio::fs::metadata(&path)
        .await
        .is_ok_and(|m| m.len() <= MAX_MANIFEST);
    let Some(bytes) = small.then_some(()).and(tokio::fs::read(&path).await.ok()) else {
        return;
    };
    let Ok(manifest) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return;
    };
    let digests = |key: &str| -> Vec<String> {
        let items = manifest[key].as_array().cloned().unwrap_or_default();
        items
            .iter()
            .filter_map(|item| item["digest"].as_str().map(str::to_string))
            .collect()
    };
    let config = manifest["config"]["digest"].as_str().map(str::to_string);
    for blob in digests("layers").into_iter().chain(config) {
        cache.confirmed.confirm(repository, &blob, Kind::Blob);
    }
    for child in digests("manifests") {
        cache.confirmed.confirm(repository, &child, Kind::Manifest);
    }
}
