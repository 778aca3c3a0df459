//! The cache's hooks on one request, and its state for a pull by digest ([`RequestState`]).
//!
//! - [`admit`] (admission's `Cache` step) answers from the cache only when every condition
//!   holds (`registry-edge` issue "authorization-aware cache"): `GET`/`HEAD` of a blob, or of
//!   a manifest by digest (tags move; a tag is always asked of the registry); the edge
//!   itself checked a token granting pull on the repository (its own realm or a trusted
//!   issuer's); the registry confirmed this repository holds this digest; and the entry is
//!   cached. A cached digest not yet confirmed for the repository (another repository's pull
//!   cached it), and every GET in proxy-only mode (no token checked at the edge), is first
//!   sent to the registry as a `HEAD` with the client's `Authorization`: only its 200 lets
//!   the cache answer. Otherwise the request goes to the registry.
//! - [`upstream_response`]: a 200 to a pull by digest confirms the repository+digest pair;
//!   a GET's body also fills the cache when it fits `cache.max_object` and says what it is
//!   (`Content-Length`, no `Content-Encoding`, any `Docker-Content-Digest` equal to the
//!   digest asked for). A 404 for the pair forgets it (unless the client's `Accept` explains
//!   it); so does a 202 to a DELETE of that blob or manifest. Anything else (a 307 to the
//!   storage, a 206, an error) changes nothing.
//! - [`response_body`]: the body into the fill; its end commits it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::Session;

use super::answer::{accepts, serve};
use super::disk::sha256_hex;
use super::fill::{Fill, FillRequest, PACE_ABOVE};
use super::inflight::{self, Leader, Role};
use super::shared::Cache;
use super::store::Entry;
use crate::drain::InFlight;
use crate::hooks::{Outcome, RequestFacts};
use crate::metrics::metrics;
use crate::registry::{Action, Route};
use crate::upstream::NodePool;

/// Longest a cold GET waits for another request's fill of the same digest before asking
/// the registry itself (a slow leader's client must not hold the others up).
const MAX_WAIT: Duration = Duration::from_secs(30);

/// Longest the registry's confirmation `HEAD` may take before the request is sent on to
/// the registry as usual.
const REGISTRY_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// The cache's state for a pull by digest it may answer or fill.
pub(crate) struct RequestState {
    repository: String,
    digest: String,
    /// This request leads the registry fetch of its digest (others wait for it).
    leader: Option<Leader>,
    /// The cache entry this response is filling (dropped unfinished = discarded).
    fill: Option<Fill>,
    /// Answered from the cache.
    answered: bool,
}

impl RequestState {
    /// Whether the cache answered the request (the access line says `upstream=cache`).
    pub(crate) fn answered(&self) -> bool {
        self.answered
    }
}

/// The repository and digest of a pull the cache may answer or fill: `GET`/`HEAD` of
/// `/v2/<name>/blobs/sha256:…` or `/v2/<name>/manifests/sha256:…`.
fn pull_by_digest(route: &Route) -> Option<(String, String)> {
    if route.action != Action::Read {
        return None;
    }
    let (repository, digest) = route.content()?;
    sha256_hex(digest)?;
    Some((repository.to_string(), digest.to_string()))
}

/// Admission's `Cache` step: answers a pull by digest from the cache when allowed and
/// cached ([`Outcome::Answered`]); otherwise the request goes on to the registry, with
/// `state` set for a pull the registry's answer may fill. `pool` picks the node a
/// confirmation `HEAD` asks; `in_flight` says whether a drain began (the answer then
/// closes its connection). Errors are Pingora's (a failed write).
pub(crate) async fn admit(
    cache: &Arc<Cache>,
    session: &mut Session,
    request: &RequestFacts,
    state: &mut Option<RequestState>,
    pool: &NodePool,
    in_flight: Option<&InFlight>,
) -> Result<Outcome> {
    // `cache:` removed by a reload: the cache opened at start stays unused.
    let Some(settings) = request.settings.cache.as_ref() else {
        return Ok(Outcome::Next);
    };
    let Some((repository, digest)) = pull_by_digest(&request.route) else {
        return Ok(Outcome::Next);
    };
    let pull = state.insert(RequestState {
        repository,
        digest,
        leader: None,
        fill: None,
        answered: false,
    });
    let served = Serve {
        cache,
        request,
        pool,
        memory_budget: settings.memory,
        in_flight,
        // Only a token the edge checked proves pull on the repository.
        edge_checked: request.settings.checks_tokens(),
    };
    pull.answered = served.try_serve(session, pull).await?;
    Ok(match pull.answered {
        true => Outcome::Answered,
        false => Outcome::Next,
    })
}

/// What answering one pull from the cache needs.
struct Serve<'a> {
    cache: &'a Arc<Cache>,
    request: &'a RequestFacts,
    pool: &'a NodePool,
    memory_budget: u64,
    in_flight: Option<&'a InFlight>,
    /// The token step verified pull on the repository; without it (proxy-only mode) only
    /// the registry's `HEAD` answer lets the cache answer.
    edge_checked: bool,
}

impl Serve<'_> {
    /// `Ok(true)` when answered from the cache.
    async fn try_serve(&self, session: &mut Session, pull: &mut RequestState) -> Result<bool> {
        let cache = self.cache;
        let get = session.req_header().method == http::Method::GET;
        if let Some(entry) = self.confirmed_entry(pull) {
            return self.serve(session, &pull.digest, &entry).await;
        }
        // Not (yet) confirmed for this repository, or proxy-only mode: the registry decides
        // with a HEAD whether this client may have what another repository's pull cached.
        if get {
            if let Some(entry) = self.allowed_entry(session, pull).await {
                return self.serve(session, &pull.digest, &entry).await;
            }
        }
        // A cold GET: the first fetches from the registry, the others wait for its fill.
        if get && self.edge_checked && cache.writable() {
            match inflight::join(cache, &pull.digest) {
                Role::Lead(leader) => pull.leader = Some(leader),
                Role::Follow(done) => {
                    let limit = self.request.settings.read_timeout.min(MAX_WAIT);
                    inflight::wait(done, limit).await;
                    if let Some(entry) = self.confirmed_entry(pull) {
                        return self.serve(session, &pull.digest, &entry).await;
                    }
                    // Filled for another repository's pull: the registry says whether this
                    // one holds it too, without a second download.
                    if let Some(entry) = self.allowed_entry(session, pull).await {
                        return self.serve(session, &pull.digest, &entry).await;
                    }
                }
            }
        }
        metrics().cache_events.with_label_values(&["miss"]).inc();
        Ok(false)
    }

    /// The entry, when the edge checked the token and the registry confirmed the pair.
    fn confirmed_entry(&self, pull: &RequestState) -> Option<Entry> {
        let confirmed =
            self.edge_checked && self.cache.confirmed.holds(&pull.repository, &pull.digest);
        confirmed
            .then(|| self.cache.store.get(&pull.digest))
            .flatten()
    }

    /// The cached entry, when the registry lets this client have it (a confirmation `HEAD`).
    async fn allowed_entry(&self, session: &Session, pull: &RequestState) -> Option<Entry> {
        let entry = self.cache.store.get(&pull.digest)?;
        self.registry_allows(session, pull).await.then_some(entry)
    }

    async fn serve(&self, session: &mut Session, digest: &str, entry: &Entry) -> Result<bool> {
        // A drain that began while this request waited: its answer is the connection's last.
        if self.in_flight.is_some_and(InFlight::draining) {
            session.set_keepalive(None);
        }
        serve(session, self.cache, digest, entry, self.memory_budget).await
    }

    /// The request as a `HEAD` to the registry node it would go to, with the client's
    /// `Authorization` (a token the edge checked, or in proxy-only mode whatever the
    /// registry checks). A 200 allows the cached body (and confirms the pair); a 404
    /// forgets the pair; anything else, or no answer, sends the request on as usual.
    async fn registry_allows(&self, session: &Session, pull: &RequestState) -> bool {
        let (repository, digest) = (&pull.repository, &pull.digest);
        let Some(node) = self.pool.select(Some(repository), &[]) else {
            return false;
        };
        let request = self.request;
        let timeout = request.settings.read_timeout.min(REGISTRY_CHECK_TIMEOUT);
        let headers = &session.req_header().headers;
        let authorization = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let api = self.cache.registry.at(node, authorization, timeout);
        let status = api.head_status(&request.path, confirmation_headers(headers, request));
        match status.await {
            Ok(200) => {
                self.cache.confirmed.confirm(repository, digest);
                true
            }
            Ok(404) => {
                self.cache.confirmed.forget(repository, digest);
                false
            }
            Ok(_) => false,
            Err(e) => {
                // The request goes on to the node as usual (and fails there if it is down).
                tracing::warn!(
                    "cache: the registry check of {digest} failed: {}",
                    crate::report::chain(&e)
                );
                false
            }
        }
    }
}

/// The client's `Accept` and `Host`, and (as the proxied request would say who asks: a
/// registry or an auth proxy in front of it may decide by client address) the forwarding
/// headers.
fn confirmation_headers(client: &HeaderMap, request: &RequestFacts) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for name in [http::header::ACCEPT, http::header::HOST] {
        if let Some(value) = client.get(&name) {
            headers.insert(name, value.clone());
        }
    }
    if let Some(client) = &request.client {
        if let Ok(address) = http::HeaderValue::try_from(client.client.to_string()) {
            headers.insert("x-real-ip", address.clone());
            headers.insert("x-forwarded-for", address);
        }
        headers.insert(
            "x-forwarded-proto",
            http::HeaderValue::from_static(request.origin.scheme),
        );
    }
    headers
}

/// `upstream_response_filter`: what the registry's answer teaches the cache (a confirmed
/// or forgotten pair, a fill started).
pub(crate) fn upstream_response(
    cache: &Arc<Cache>,
    response: &ResponseHeader,
    request_header: &RequestHeader,
    request: &RequestFacts,
    state: &mut Option<RequestState>,
) {
    let status = response.status.as_u16();
    if request.route.action == Action::Delete {
        if let (202, Some((repository, digest))) = (status, request.route.content()) {
            cache.confirmed.forget(repository, digest);
        }
        return;
    }
    let Some(pull) = state.as_mut() else {
        return;
    };
    // The requests waiting for this digest go on at once unless a fill starts below; the
    // lead is never held for the length of a download that fills nothing.
    let leader = pull.leader.take();
    match status {
        200 => cache.confirmed.confirm(&pull.repository, &pull.digest),
        // A 404 explained by the client's `Accept` (an OCI manifest asked for without its
        // media type) says nothing about whether the repository holds it.
        404 if !withheld_for_accept(cache, &pull.digest, request_header) => {
            cache.confirmed.forget(&pull.repository, &pull.digest);
            return;
        }
        _ => return,
    }
    if request_header.method != http::Method::GET {
        return;
    }
    let Some(limits) = request.settings.cache.as_ref() else {
        return;
    };
    let header = |name: &str| response.headers.get(name).and_then(|v| v.to_str().ok());
    let Some(size) = header("content-length").and_then(|v| v.parse::<u64>().ok()) else {
        return;
    };
    let same_digest = header("docker-content-digest").is_none_or(|d| d == pull.digest);
    if size > limits.max_object || header("content-encoding").is_some() || !same_digest {
        return;
    }
    let fill = FillRequest {
        digest: pull.digest.clone(),
        leader,
        size,
        content_type: header("content-type")
            .unwrap_or("application/octet-stream")
            .to_string(),
        max_size: limits.max_size,
        memory: limits.memory,
    };
    pull.fill = Fill::start(cache, fill);
}

/// Whether the cached entry for `digest` is one the registry refuses to this request's
/// `Accept` (see [`accepts`]).
fn withheld_for_accept(cache: &Cache, digest: &str, request: &RequestHeader) -> bool {
    cache
        .store
        .peek(digest)
        .is_some_and(|entry| !accepts(request, &entry.content_type))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Route;

    #[test]
    fn only_pulls_by_sha256_digest_are_cacheable() {
        let digest = format!("sha256:{}", "b".repeat(64));
        let route = |method: &str, path: &str| Route::parse(&method.parse().unwrap(), path);
        let blob = route("GET", &format!("/v2/team/app/blobs/{digest}"));
        assert_eq!(
            pull_by_digest(&blob),
            Some(("team/app".into(), digest.clone()))
        );
        let manifest = route("HEAD", &format!("/v2/team/app/manifests/{digest}"));
        assert_eq!(
            pull_by_digest(&manifest),
            Some(("team/app".into(), digest.clone()))
        );
        for path in ["/v2/team/app/manifests/latest", "/v2/team/app/tags/list"] {
            assert_eq!(pull_by_digest(&route("GET", path)), None, "{path}");
        }
        let delete = route("DELETE", &format!("/v2/team/app/blobs/{digest}"));
        assert_eq!(pull_by_digest(&delete), None);
    }
}
