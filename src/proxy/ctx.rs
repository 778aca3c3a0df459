//! Per-request state carried through the proxy phases: what admission learned (shared
//! with the features), the proxy's own state (node choice, limits, the connection), and
//! each feature's own state, which only that feature reads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::drain::InFlight;
use crate::error::RegistryError;
use crate::hooks::{Refusal, RequestFacts};
use crate::listen::watch::{BodyProgress, ConnWatch};
use crate::settings::Settings;

pub(crate) struct RequestCtx {
    /// What admission learned: settings, route, client, origin, subject, request id.
    pub request: RequestFacts,
    /// The node this request was (last) sent to.
    pub node: Option<SocketAddr>,
    /// Nodes that refused this request's connection; skipped on retry.
    pub failed_nodes: Vec<SocketAddr>,
    /// The answer the edge gave instead of the registry's (`refusal`), for the access line.
    pub own_error: Option<RegistryError>,
    /// A refusal decided in a body phase, answered by `fail_to_proxy` (`refusal::defer`).
    pub deferred: Option<Refusal>,
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
    /// Held while the request runs, so a graceful stop waits for it.
    pub in_flight: Option<InFlight>,
    /// The cache's state for a pull by digest it may answer or fill.
    pub cache: Option<crate::cache::RequestState>,
    /// The policy's state for an upload, a manifest `PUT` or a manifest `DELETE`.
    pub policy: Option<crate::policy::RequestState>,
    /// Answered from a remembered tag while the route's pool failed (the access line's
    /// `upstream=stale`).
    pub cache_stale: bool,
    /// A route's tag list, held to be sent with the edge's name (`routing`).
    pub tag_list: Option<crate::routes::rewrite::TagListBody>,
}

impl RequestCtx {
    pub(crate) fn new(settings: Arc<Settings>) -> Self {
        RequestCtx {
            request: RequestFacts::new(settings),
            node: None,
            failed_nodes: Vec::new(),
            own_error: None,
            deferred: None,
            push_budget: None,
            push_counted: None,
            throttled: std::time::Duration::ZERO,
            upload_credit: 0,
            connection: None,
            body_progress: None,
            upstream_started: None,
            in_flight: None,
            cache: None,
            policy: None,
            cache_stale: false,
            tag_list: None,
        }
    }
}
