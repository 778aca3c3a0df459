//! The cache's admission hook, and its state for one pull ([`RequestState`]); the hooks on
//! the registry's answer are in `response`.
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

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::answer::{serve, Asked};
use super::commit::Bounds;
use super::disk::sha256_hex;
use super::fetch::Stage;
use super::fill::{self, FetchRequest};
use super::resume::Origin;
use super::shared::Cache;
use super::store::{Entry, Kind};
use crate::config::CacheSettings;
use crate::drain::InFlight;
use crate::hooks::{Outcome, RequestFacts};
use crate::metrics::metrics;
use crate::registry::{Action, Endpoint, Route};
use crate::upstream::NodePool;

/// Longest the registry's confirmation `HEAD` may take before the request is sent on to
/// the registry as usual.
const REGISTRY_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// The cache's state for a pull by digest it may answer or fill, or a manifest pull by tag
/// whose answer may fill the digest it names.
pub(crate) struct RequestState {
    pub(super) repository: String,
    /// The digest asked for; for a pull by tag, empty until the registry's answer names it.
    pub(super) digest: String,
    pub(super) kind: Kind,
    /// A manifest pull by tag: never answered from the cache.
    pub(super) by_tag: bool,
    /// A manifest by tag being filled: its body so far (`response`).
    pub(super) tag_fill: Option<TagFill>,
    /// Answered from the cache.
    answered: bool,
}

impl RequestState {
    /// Whether the cache answered the request (the access line says `upstream=cache`).
    pub(crate) fn answered(&self) -> bool {
        self.answered
    }
}

/// A manifest by tag being filled from the body that goes to the client (`response`).
pub(super) struct TagFill {
    pub digest: String,
    pub entry: Entry,
    pub body: bytes::BytesMut,
    pub bounds: Bounds,
}

/// The repository, digest and endpoint of a pull the cache may answer or fill: `GET`/`HEAD`
/// of `/v2/<name>/blobs/sha256:…` or `/v2/<name>/manifests/sha256:…`.
fn pull_by_digest(route: &Route) -> Option<(String, String, Kind)> {
    if route.action != Action::Read {
        return None;
    }
    let (repository, digest) = route.content()?;
    sha256_hex(digest)?;
    Some((repository.to_string(), digest.to_string(), kind_of(route)?))
}

/// The repository of a manifest pull by tag (`GET /v2/<name>/manifests/<tag>`).
fn pull_by_tag(route: &Route, method: &http::Method) -> Option<String> {
    let (repository, reference) = route.content()?;
    let by_tag = route.action == Action::Read
        && method == http::Method::GET
        && kind_of(route) == Some(Kind::Manifest)
        && !reference.contains(':');
    by_tag.then(|| repository.to_string())
}

pub(super) fn kind_of(route: &Route) -> Option<Kind> {
    match route.endpoint {
        Endpoint::Blob { .. } => Some(Kind::Blob),
        Endpoint::Manifest { .. } => Some(Kind::Manifest),
        _ => None,
    }
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
    let Some((repository, digest, kind)) = pull_by_digest(&request.route) else {
        let method = &session.req_header().method;
        if let Some(repository) = pull_by_tag(&request.route, method) {
            *state = Some(RequestState {
                repository,
                digest: String::new(),
                kind: Kind::Manifest,
                by_tag: true,
                tag_fill: None,
                answered: false,
            });
        }
        return Ok(Outcome::Next);
    };
    let pull = state.insert(RequestState {
        repository,
        digest,
        kind,
        by_tag: false,
        tag_fill: None,
        answered: false,
    });
    let served = Serve {
        cache,
        request,
        pool,
        settings,
        in_flight,
        // Only a token the edge checked proves pull on the repository.
        edge_checked: request.settings.checks_tokens(),
    };
    let served = served.try_serve(session, pull).await;
    // A client that left mid-answer was still answered from the cache (its access line).
    pull.answered = match &served {
        Ok(answered) => *answered,
        Err(_) => session.response_written().is_some(),
    };
    served?;
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
    /// The request's `cache:` settings.
    settings: &'a CacheSettings,
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
        // Confirmed, or (not yet confirmed for this repository, or proxy-only mode) the
        // registry says with a HEAD that this client may have what another pull cached.
        let entry = match self.confirmed_entry(pull) {
            Some(entry) => Some(entry),
            None if get => self.allowed_entry(session, pull).await,
            None => None,
        };
        if let Some(entry) = entry {
            if self.serve(session, pull, &entry).await? {
                return Ok(true);
            }
        }
        // A cold GET: one fetch from the registry, every client answered from its file
        // (also when the entry's content was gone: purged, removed by hand). A cached digest
        // this request may not be answered from goes to the registry.
        if get && cache.writable() && !cache.store.contains(&pull.digest) {
            if let Some(answered) = self.through_fetch(session, pull).await? {
                return Ok(answered);
            }
        }
        metrics().cache_events.with_label_values(&["miss"]).inc();
        Ok(false)
    }

    /// Answers from the fetch of the digest, starting it if none runs: `Some(true)` when
    /// answered, `None` when the request goes to the registry (the registry's answer is
    /// not one the cache keeps, another endpoint's fetch runs, or, for a request that did
    /// not start the fetch, the registry does not confirm this client may have it).
    async fn through_fetch(
        &self,
        session: &mut Session,
        pull: &RequestState,
    ) -> Result<Option<bool>> {
        let Some(node) = self.pool.select(self.request.registry_repository(), &[]) else {
            return Ok(None);
        };
        let (request, header) = (self.request, session.req_header());
        let bounds = Bounds {
            max_size: self.settings.max_size,
            memory: self.settings.memory,
        };
        let origin = Origin {
            node,
            authorization: authorization(&header.headers, request),
            path: request.registry_path().to_string(),
            headers: confirmation_headers(&header.headers, request),
            read_timeout: request.read_timeout(),
        };
        let fetch_request = FetchRequest {
            repository: pull.repository.clone(),
            digest: pull.digest.clone(),
            kind: pull.kind,
            origin: origin.clone(),
            max_object: self.settings.max_object,
            bounds,
        };
        let Some((fetch, started)) = fill::join(self.cache, fetch_request) else {
            return Ok(None);
        };
        if fetch.kind != pull.kind {
            return Ok(None);
        }
        let Some(arrived) = fetch.arrived(request.read_timeout()).await else {
            return Ok(None);
        };
        // A range is known good only once the whole content is: until the fetch completes,
        // the registry answers it (at once, where the fill would hold it to the end).
        let ranged = header.headers.contains_key(http::header::RANGE);
        if ranged && fetch.progress().borrow().stage != Stage::Complete {
            return Ok(None);
        }
        // The registry's 200 to the fetch answered this request's own credentials; any
        // other request needs the pair confirmed (and its token checked), or the registry's
        // word for its client.
        let allowed = started || self.confirmed(pull) || self.registry_allows(session, pull).await;
        if !allowed {
            return Ok(None);
        }
        let entry = Entry::new(arrived.size, fetch.kind, &arrived.content_type);
        let asked = Asked {
            digest: &pull.digest,
            kind: pull.kind,
            entry: &entry,
            fetch: Some((&fetch, &origin)),
            event: if started { "miss" } else { "hit" },
            stale: false,
        };
        Ok(Some(self.answer(session, asked).await?))
    }

    /// Whether the edge checked the token and the registry confirmed the pair on this
    /// endpoint.
    fn confirmed(&self, pull: &RequestState) -> bool {
        let (repository, digest, kind) = (&pull.repository, &pull.digest, pull.kind);
        self.edge_checked && self.cache.confirmed.holds(repository, digest, kind)
    }

    /// The entry, when the edge checked the token and the registry confirmed the pair on
    /// this endpoint.
    fn confirmed_entry(&self, pull: &RequestState) -> Option<Entry> {
        let confirmed = self.confirmed(pull);
        confirmed
            .then(|| self.cache.store.get(&pull.digest))
            .flatten()
    }

    /// The cached entry, when it has seen this endpoint's answer and the registry lets this
    /// client have it (a confirmation `HEAD`).
    async fn allowed_entry(&self, session: &Session, pull: &RequestState) -> Option<Entry> {
        let entry = self.cache.store.get(&pull.digest)?;
        entry.content_type(pull.kind)?;
        self.registry_allows(session, pull).await.then_some(entry)
    }

    async fn serve(
        &self,
        session: &mut Session,
        pull: &RequestState,
        entry: &Entry,
    ) -> Result<bool> {
        let asked = Asked {
            digest: &pull.digest,
            kind: pull.kind,
            entry,
            fetch: None,
            event: "hit",
            stale: false,
        };
        self.answer(session, asked).await
    }

    async fn answer(&self, session: &mut Session, asked: Asked<'_>) -> Result<bool> {
        // A drain that began while this request waited: its answer is the connection's last.
        if self.in_flight.is_some_and(InFlight::draining) {
            session.set_keepalive(None);
        }
        let headers = &self.request.answer_headers;
        serve(session, self.cache, asked, (self.settings.memory, headers)).await
    }

    /// The request as a `HEAD` to the registry node it would go to, with the client's
    /// `Authorization` (a token the edge checked, or in proxy-only mode whatever the
    /// registry checks). A 200 allows the cached body (and confirms the pair); a 404
    /// forgets the pair; anything else, or no answer, sends the request on as usual.
    async fn registry_allows(&self, session: &Session, pull: &RequestState) -> bool {
        let (repository, digest, kind) = (&pull.repository, &pull.digest, pull.kind);
        let request = self.request;
        let Some(node) = self.pool.select(request.registry_repository(), &[]) else {
            return false;
        };
        let timeout = request.read_timeout().min(REGISTRY_CHECK_TIMEOUT);
        let headers = &session.req_header().headers;
        let api = self
            .cache
            .registry
            .at(node, authorization(headers, request), timeout);
        let path = request.registry_path();
        let status = api.head_status(path, confirmation_headers(headers, request));
        match status.await {
            Ok(200) => {
                self.cache.confirmed.confirm(repository, digest, kind);
                true
            }
            Ok(404) => {
                self.cache.confirmed.forget(repository, digest, kind);
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

/// The client's `Authorization`, or towards a route's pool the edge's token for the pool's
/// name (`RequestFacts::pool_authorization`).
fn authorization(headers: &HeaderMap, request: &RequestFacts) -> Option<String> {
    request.pool_authorization(&["pull"]).or_else(|| {
        headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    })
}

/// The client's `Accept`, `Host` and `User-Agent`, and (as the proxied request would say
/// who asks: a registry or an auth proxy in front of it may decide by client address) the
/// forwarding headers.
fn confirmation_headers(client: &HeaderMap, request: &RequestFacts) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for name in [
        http::header::ACCEPT,
        http::header::HOST,
        http::header::USER_AGENT,
    ] {
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
            Some(("team/app".into(), digest.clone(), Kind::Blob))
        );
        let manifest = route("HEAD", &format!("/v2/team/app/manifests/{digest}"));
        assert_eq!(
            pull_by_digest(&manifest),
            Some(("team/app".into(), digest.clone(), Kind::Manifest))
        );
        let get = http::Method::GET;
        let tag = route("GET", "/v2/team/app/manifests/1.0");
        assert_eq!(pull_by_tag(&tag, &get), Some("team/app".into()));
        assert_eq!(pull_by_tag(&manifest, &get), None, "a digest is not a tag");
        assert_eq!(
            pull_by_tag(&tag, &http::Method::HEAD),
            None,
            "a HEAD fills nothing"
        );
        for path in ["/v2/team/app/manifests/latest", "/v2/team/app/tags/list"] {
            assert_eq!(pull_by_digest(&route("GET", path)), None, "{path}");
        }
        let delete = route("DELETE", &format!("/v2/team/app/blobs/{digest}"));
        assert_eq!(pull_by_digest(&delete), None);
    }
}
