//! Entry points for `benches/hot_paths.rs` into the per-request code the crate keeps
//! private: criterion benches link the library like any other crate, so they reach the
//! request path only through these. Not an API: hidden from the docs, and free to change
//! with the code it times.

use std::net::IpAddr;

use pingora::http::RequestHeader;

use crate::config::ForwardedSettings;
use crate::proxy::headers::rewrite_for_upstream;
use crate::request::client::ClientAddress;
use crate::request::origin::PublicOrigin;

/// A fresh `X-Request-Id` value (32 lowercase hex digits), as for a request without one.
pub fn request_id() -> String {
    crate::request::random_id()
}

/// Everything the proxy does to a request's headers before it goes to a registry node:
/// resolve the client behind `peer` (no trusted proxies), decide the public origin, set the
/// forwarding headers and drop hop-by-hop ones.
pub fn forward_request_headers(req: &mut RequestHeader, peer: IpAddr) {
    let trust = ForwardedSettings::default();
    let client = ClientAddress::resolve(peer, req, &trust);
    let origin = PublicOrigin::of(req, client.peer_trusted, None, None);
    rewrite_for_upstream(req, &client, &origin);
}

/// The framing check every request passes in admission (`request::framing`): target,
/// `Host`, `Transfer-Encoding`, `Content-Length`. `true` when the request passes.
pub fn check_framing(req: &mut RequestHeader) -> bool {
    crate::request::framing::check(req, false).is_ok()
}

/// Counts one finished request in the Prometheus series (`class`: `pull`, `push`, `auth`
/// or `other`, as the proxy's route classes).
pub fn count_request(class: &str, status: u16, seconds: f64) {
    crate::metrics::metrics().count_request(class, crate::config::DEFAULT_ROUTE, status, seconds);
}

/// A route table with three routes (`hub/` with a host and an `ns`, `quay` by `ns`, `ghcr/`)
/// for [`match_route`].
pub struct RouteTable(crate::routes::Routes);

impl RouteTable {
    pub fn new() -> RouteTable {
        let text = "server: { https_listen: [] }\nupstream: { nodes: [\"127.0.0.1:5000\"] }\n\
                    routes:\n  - { name: hub, prefix: hub/, hosts: [mirror.test], ns: [docker.io], \
                    nodes: [\"127.0.0.1:5001\"] }\n  - { name: quay, ns: [quay.io], \
                    nodes: [\"127.0.0.1:5002\"] }\n  - { name: ghcr, prefix: ghcr/, \
                    nodes: [\"127.0.0.1:5003\"] }\n";
        let config = crate::config::parse(std::path::Path::new("/bench/edge.yaml"), text)
            .expect("a valid routes config");
        RouteTable(crate::routes::Routes::new(&config.routes, None).expect("route pools"))
    }
}

impl Default for RouteTable {
    fn default() -> Self {
        RouteTable::new()
    }
}

/// What admission does for a request a route may take: the match (host, `ns`, prefix),
/// the names at the edge and at the pool, and the pool's path. `true` when a route took it.
pub fn match_route(table: &RouteTable, host: &str, path: &str, repository: &str) -> bool {
    match table.0.route_for(Some(host), None, repository) {
        Some(mut routed) => match crate::routes::rewrite::pool_path(&routed, repository, path) {
            Some(pool_path) => {
                routed.pool_path = pool_path;
                !routed.pool_path.is_empty()
            }
            None => false,
        },
        None => false,
    }
}

/// Remembered tags (`routes[].stale_if_error`) in a folder of their own, one tag known.
pub struct RememberedTags {
    tags: crate::cache::tags::RememberedTags,
    _dir: tempfile::TempDir,
}

impl RememberedTags {
    pub fn new() -> RememberedTags {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let tags = crate::cache::tags::RememberedTags::open(dir.path()).expect("a tags file");
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        runtime.block_on(async { tags.remember("hub/library/app", "1", DIGEST) });
        RememberedTags { tags, _dir: dir }
    }

    /// What every by-tag 200 through a `stale_if_error` route costs: the tag seen again with
    /// the same digest (written at most once a minute).
    pub fn remember_again(&self) {
        self.tags.remember("hub/library/app", "1", DIGEST);
    }

    /// What a stale answer looks up first.
    pub fn recall(&self) -> bool {
        let day = std::time::Duration::from_secs(86400);
        self.tags.recall("hub/library/app", "1", day).is_some()
    }
}

impl Default for RememberedTags {
    fn default() -> Self {
        RememberedTags::new()
    }
}

const DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
