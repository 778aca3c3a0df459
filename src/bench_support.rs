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
