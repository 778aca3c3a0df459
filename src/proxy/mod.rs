//! The HTTPS proxy: Pingora's `ProxyHttp` phases, each delegating to one module; the
//! features (`cache`, `policy`) are called through their hooks (`features`).
//!
//! - `request_filter`: the connection's deadlines (`connection`), then the admission steps
//!   (`admission`, with the checks in `checks`, the token realm in `token_endpoint`, and
//!   the features' admission hooks).
//! - `upstream_peer`: the node and upload-session pins (`peer`); the features' new attempt.
//! - `upstream_request_filter`: forwarding headers (`headers`, with `request::origin`); a
//!   route's pool names and token (`routing`).
//! - `request_body_filter`: count, limit and throttle streamed bytes (`body`), then the
//!   features' body hook (the policy holds a manifest `PUT` whole, up to 4 MiB).
//! - `upstream_response_filter`: upload-session pins (`peer`); the edge's names in a route's
//!   answer (`routing`); the features' response hook.
//! - `response_body_filter`: the features' body hook (a cache fill); a route's tag list.
//! - `response_filter`: request id, HTTP/1.0 framing, push budget.
//! - refusals, whenever decided, and `fail_to_proxy`: one path (`refusal`, `failure`,
//!   written by `answer`); `suppress_error_log`: a client's fault is a warning (`failure`).
//! - `logging`: metrics and one access-log line per request (`access_log`).

pub(crate) mod access_log;
pub(crate) mod admission;
pub(crate) mod answer;
pub(crate) mod body;
pub(crate) mod checks;
pub(crate) mod connection;
pub(crate) mod ctx;
pub(crate) mod failure;
pub(crate) mod features;
pub(crate) mod headers;
pub(crate) mod peer;
pub(crate) mod refusal;
pub(crate) mod routing;
pub(crate) mod token_endpoint;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::Error;

use crate::cache::Cache;
use crate::drain::Drain;
use crate::policy::Policy;
use crate::settings::SharedSettings;
use crate::tls::CertResolver;
use crate::upstream::{NodePool, UploadSessions};
use admission::Admitter;
use ctx::RequestCtx;
use features::Features;

/// The edge's proxy service for the HTTPS listeners.
pub(crate) struct EdgeProxy {
    pool: Arc<NodePool>,
    /// Upload sessions pinned to the node that started them (survive node-list changes).
    sessions: UploadSessions,
    /// Swapped by a reload; each request keeps the snapshot it started with.
    settings: SharedSettings,
    /// The certificates in force: the names `server.strict_host` accepts.
    certificates: Arc<CertResolver>,
    /// Counts requests in flight for a graceful stop.
    drain: Arc<Drain>,
    /// The features opened at start: `cache`, `policy`.
    features: Features,
}

impl EdgeProxy {
    pub(crate) fn new(
        pool: Arc<NodePool>,
        settings: SharedSettings,
        certificates: Arc<CertResolver>,
        drain: Arc<Drain>,
        cache: Option<Arc<Cache>>,
        policy: Option<Arc<Policy>>,
    ) -> Self {
        EdgeProxy {
            pool,
            sessions: UploadSessions::default(),
            settings,
            certificates,
            drain,
            features: Features { cache, policy },
        }
    }
}

#[async_trait]
impl ProxyHttp for EdgeProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        let mut ctx = RequestCtx::new(self.settings.load_full());
        ctx.in_flight = Some(self.drain.request());
        ctx
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        connection::request_started(session, ctx, self.drain.is_draining());
        let admitter = Admitter {
            certificates: &self.certificates,
            features: &self.features,
            pool: &self.pool,
        };
        admitter.admit(session, ctx).await
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        self.features.upstream_peer(ctx);
        peer::choose(&self.pool, &self.sessions, ctx)
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // A refused connection sent nothing: try the next node, unless part of the body
        // is already gone and cannot be replayed.
        if let Some(node) = ctx.node {
            ctx.failed_nodes.push(node);
        }
        if !session.retry_buffer_truncated() {
            e.set_retry(true);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(client) = &ctx.request.client {
            headers::rewrite_for_upstream(upstream_request, client, &ctx.request.origin);
        }
        routing::to_pool(upstream_request, ctx)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        body::on_chunk(body, end_of_stream, ctx).await?;
        let decided = self.features.request_body(body, end_of_stream, ctx).await;
        decided.map_err(|refused| refusal::defer(ctx, refused))
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        if self.features.answer_stale(session, e, ctx).await {
            return FailToProxy {
                error_code: 200,
                can_reuse_downstream: false,
            };
        }
        failure::answer(session, e, ctx).await
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        peer::on_response(&self.pool, &self.sessions, upstream_response, ctx);
        let status = upstream_response.status.as_u16();
        if (self.features).replaces_with_stale(status, session.req_header(), ctx) {
            // Failed here, answered from the remembered tag in `fail_to_proxy`.
            let mut e = Error::explain(ErrorType::HTTPStatus(status), "the route's pool failed");
            e.as_up();
            return Err(e);
        }
        if let Some(refused) = routing::pool_refused(upstream_response, ctx) {
            return Err(refusal::defer(ctx, refused.into()));
        }
        routing::from_pool(upstream_response, session.req_header(), ctx)?;
        let request_header = session.req_header();
        (self.features)
            .upstream_response(upstream_response, request_header, ctx)
            .await;
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        self.features.response_body(body, end_of_stream, ctx);
        routing::body(body, end_of_stream, ctx)?;
        Ok(None)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        connection::before_answer(session, ctx);
        crate::request::copy_request_id(session.req_header(), upstream_response)?;
        routing::framing(session, upstream_response, ctx);
        if answer::is_http10(session) {
            // RFC 9112 §6.1: no chunked coding towards an HTTP/1.0 client. Without
            // Transfer-Encoding (and Content-Length) Pingora delimits the body by closing.
            upstream_response.remove_header(&http::header::TRANSFER_ENCODING);
            session.set_keepalive(None);
        }
        for (name, value) in &ctx.request.answer_headers {
            upstream_response.insert_header(*name, value)?;
        }
        if let Some((limit, remaining)) = &ctx.push_budget {
            upstream_response.insert_header("RateLimit-Limit", limit.as_str())?;
            upstream_response.insert_header("RateLimit-Remaining", format!("{remaining};w=60"))?;
        }
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        connection::request_finished(session, ctx);
        access_log::record(session, e, ctx);
    }

    fn request_summary(&self, session: &Session, ctx: &RequestCtx) -> String {
        access_log::summary(session, ctx)
    }

    fn suppress_error_log(&self, session: &Session, ctx: &RequestCtx, e: &Error) -> bool {
        failure::log(session, ctx, e)
    }
}
