//! Which registry node a request goes to: the node an upload session is pinned to while it
//! is usable, else the pool's choice by repository affinity; and pinning sessions as the
//! node's answers start and end them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType};

use super::ctx::RequestCtx;
use crate::metrics::metrics;
use crate::registry::Endpoint;
use crate::upstream::{NodePool, UploadSessions};

/// Upstream connections stay pooled this long when idle.
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The peer for this request (attempt) from `pool` or the request's route's pool; a 503
/// error when no node is healthy.
pub(crate) fn choose(
    pool: &NodePool,
    sessions: &UploadSessions,
    ctx: &mut RequestCtx,
) -> Result<Box<HttpPeer>> {
    let pool = match &ctx.request.routed {
        Some(routed) => &routed.route.pool.clone(),
        None => pool,
    };
    let pinned = match &ctx.request.route.endpoint {
        Endpoint::UploadSession { uuid } => sessions.node_for(&session_key(ctx, uuid)),
        _ => None,
    };
    let pinned =
        pinned.filter(|node| !ctx.failed_nodes.contains(node) && pool.can_use_pinned(*node));
    let node = match pinned {
        Some(node) => node,
        None => pool
            .select(ctx.request.registry_repository(), &ctx.failed_nodes)
            .ok_or_else(|| {
                Error::explain(ErrorType::HTTPStatus(503), "no healthy registry node")
            })?,
    };
    ctx.node = Some(node);
    ctx.upstream_started = Some(Instant::now());
    Ok(Box::new(peer_for(node, ctx)))
}

fn peer_for(node: SocketAddr, ctx: &RequestCtx) -> HttpPeer {
    let mut peer = HttpPeer::new(node, false, String::new());
    let (connect, read) = match &ctx.request.routed {
        Some(routed) => {
            let pool = &routed.route.settings.pool;
            (pool.connect_timeout, pool.read_timeout)
        }
        None => (
            ctx.request.settings.connect_timeout,
            ctx.request.settings.read_timeout,
        ),
    };
    peer.options.connection_timeout = Some(connect);
    peer.options.read_timeout = Some(read);
    peer.options.write_timeout = Some(read);
    peer.options.idle_timeout = Some(UPSTREAM_IDLE_TIMEOUT);
    peer
}

/// Sees the node's response header: records the upstream latency and that the node
/// answered (passive health), pins an upload session the node started (202 to a start) and
/// unpins one it ended (201 committed, 204 cancelled).
pub(crate) fn on_response(
    pool: &NodePool,
    sessions: &UploadSessions,
    response: &ResponseHeader,
    ctx: &RequestCtx,
) {
    let status = response.status.as_u16();
    if let Some(started) = ctx.upstream_started {
        let route = ctx.request.route_name();
        metrics().observe_upstream(ctx.request.class, route, started.elapsed().as_secs_f64());
    }
    if let (Some(node), true) = (ctx.node, status < 500) {
        match &ctx.request.routed {
            Some(routed) => routed.route.pool.record_answer(node),
            None => pool.record_answer(node),
        }
    }
    match (&ctx.request.route.endpoint, ctx.node) {
        (Endpoint::UploadStart, Some(node)) if status == 202 => {
            let uuid = response
                .headers
                .get("docker-upload-uuid")
                .and_then(|v| v.to_str().ok());
            if let Some(uuid) = uuid {
                sessions.remember(&session_key(ctx, uuid), node);
            }
        }
        (Endpoint::UploadSession { uuid }, _) if status == 201 || status == 204 => {
            sessions.forget(&session_key(ctx, uuid))
        }
        _ => {}
    }
}

/// An upload session's pin key: its UUID, under the route that started it (a session of
/// one pool is never sent to another's node).
fn session_key(ctx: &RequestCtx, uuid: &str) -> String {
    format!("{}/{uuid}", ctx.request.route_name())
}
