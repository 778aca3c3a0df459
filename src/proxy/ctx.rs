//! Per-request state carried through the proxy phases.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::drain::InFlight;
use crate::settings::Settings;

use crate::error::RegistryError;
use crate::listen::watch::{BodyProgress, ConnWatch};
use crate::proxy::headers::ClientAddress;
use crate::registry::Route;
use crate::request::origin::{PublicOrigin, Source};

pub(crate) struct RequestCtx {
    pub started: Instant,
    /// The configuration snapshot this request runs under, from start to end.
    pub settings: Arc<Settings>,
    pub client: Option<ClientAddress>,
    /// The request path as the registry will route it (percent-decoded).
    pub path: String,
    pub route: Route,
    /// The node this request was (last) sent to.
    pub node: Option<SocketAddr>,
    /// Nodes that refused this request's connection; skipped on retry.
    pub failed_nodes: Vec<SocketAddr>,
    /// Request body bytes seen so far.
    pub body_bytes: u64,
    /// An error the edge decided on itself, answered by `fail_to_proxy`.
    pub own_error: Option<RegistryError>,
    /// The token subject (or the account a token was issued to); `""` = anonymous.
    pub subject: Option<String>,
    /// For an admitted push start: (`RateLimit-Limit`, remaining) to report in the response.
    pub push_budget: Option<(String, u32)>,
    /// The admitted push start as counted, given back if the edge answers it itself.
    pub push_counted: Option<crate::limits::Counted>,
    /// Time the body stream was held by `rate_limits.upload_bytes`.
    pub throttled: std::time::Duration,
    /// Bytes of a shared (Redis) upload budget taken ahead and not yet sent (`UploadThrottle`).
    pub upload_credit: u64,
    /// The connection's deadlines (`listen::watch`); `None` outside the edge's listeners.
    pub connection: Option<Arc<ConnWatch>>,
    /// HTTP/2: this request's body is being received and must not stall.
    pub body_progress: Option<BodyProgress>,
    /// When the node for this request was chosen (upstream latency).
    pub upstream_started: Option<Instant>,
    /// `X-Request-Id` (the client's or a new one).
    pub request_id: String,
    /// The metrics' route class (`pull`, `push`, `auth`, `other`).
    pub class: &'static str,
    /// Where clients reach the registry (realm URLs, forwarded host and proto).
    pub origin: PublicOrigin,
    /// Held while the request runs, so a graceful stop waits for it.
    pub in_flight: Option<InFlight>,
    /// (repository, digest) of a pull by digest the cache may answer or fill.
    pub cache_pull: Option<(String, String)>,
    /// The cache entry this response is filling (dropped unfinished = discarded).
    pub cache_fill: Option<crate::cache::fill::Fill>,
    /// This request leads the registry fetch of its digest (others wait for it).
    pub cache_leader: Option<crate::cache::inflight::Leader>,
    /// Answered from the cache (the access line says `upstream=cache`).
    pub from_cache: bool,
    /// A manifest `PUT` held for its body by `policy` (quota, immutable tags).
    pub manifest_put: Option<crate::proxy::policy_body::ManifestPut>,
    /// A blob upload's room under its namespace's quota (`policy`).
    pub upload_room: Option<crate::proxy::policy_body::UploadRoom>,
    /// (repository, digest) of a manifest `DELETE` whose 202 `policy` records.
    pub manifest_delete: Option<(String, String)>,
}

impl RequestCtx {
    pub(crate) fn new(settings: Arc<Settings>) -> Self {
        RequestCtx {
            started: Instant::now(),
            settings,
            client: None,
            path: String::new(),
            route: Route::outside(),
            node: None,
            failed_nodes: Vec::new(),
            body_bytes: 0,
            own_error: None,
            subject: None,
            push_budget: None,
            push_counted: None,
            throttled: std::time::Duration::ZERO,
            upload_credit: 0,
            connection: None,
            body_progress: None,
            upstream_started: None,
            request_id: String::new(),
            class: "other",
            origin: PublicOrigin {
                scheme: "https",
                authority: "localhost".into(),
                source: Source::Listener,
            },
            in_flight: None,
            cache_pull: None,
            cache_fill: None,
            cache_leader: None,
            from_cache: false,
            manifest_put: None,
            upload_room: None,
            manifest_delete: None,
        }
    }
}
