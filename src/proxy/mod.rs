//! The HTTPS proxy: Pingora's `ProxyHttp` phases, each delegating to one module.
//!
//! - `request_filter`: the connection's deadlines (`connection`), then the admission steps
//!   (`admission`, with the checks in `checks` and the token realm in `token_endpoint`).
//! - `upstream_peer`, `upstream_response_filter`: the node and upload-session pins (`peer`);
//!   what the registry's answer teaches the cache (`cache_fill`).
//! - `response_body_filter`: the body into a cache fill (`cache_fill`); answers from the
//!   cache are written in admission (`cache_answer`, with `range` for `Range` headers).
//! - `upstream_request_filter`: forwarding headers (`headers`, with `request::origin`).
//! - `request_body_filter`: count, limit and throttle streamed bytes (`body`); only a
//!   manifest `PUT` under `policy` is held whole, up to 4 MiB (`policy_check`).
//! - admission's `Policy` step and the registry's answer: quotas and immutable tags
//!   (`policy_check`); held manifests and bounded uploads (`policy_body`).
//! - `response_filter`: request id, HTTP/1.0 framing, push budget.
//! - `fail_to_proxy`: answer in the registry's JSON error format (`failure`, `answer`);
//!   `suppress_error_log`: a client's fault is logged as a warning (`failure`).
//! - `logging`: metrics and one access-log line per request (`access_log`).

pub(crate) mod access_log;
pub(crate) mod admission;
pub(crate) mod answer;
pub(crate) mod body;
pub(crate) mod cache_answer;
pub(crate) mod cache_fill;
pub(crate) mod checks;
pub(crate) mod connection;
pub(crate) mod ctx;
pub(crate) mod failure;
pub(crate) mod headers;
pub(crate) mod peer;
pub(crate) mod policy_body;
pub(crate) mod policy_check;
pub(crate) mod range;
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
pub(crate) use ctx::RequestCtx;

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
    /// `cache`; `None` = off.
    cache: Option<Arc<Cache>>,
    /// `policy`'s usage store; `None` = off.
    policy: Option<Arc<Policy>>,
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
            cache,
            policy,
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
            cache: self.cache.as_ref(),
            pool: &self.pool,
            policy: self.policy.as_ref(),
        };
        admitter.admit(session, ctx).await
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        policy_body::new_attempt(ctx);
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
        if let Some(client) = &ctx.client {
            headers::rewrite_for_upstream(upstream_request, client, &ctx.origin);
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        body::on_chunk(body, end_of_stream, ctx).await?;
        match &self.policy {
            Some(policy) => policy_body::on_body(body, end_of_stream, ctx, policy).await,
            None => Ok(()),
        }
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        failure::answer(session, e, ctx).await
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        peer::on_response(&self.sessions, upstream_response, ctx);
        if let Some(cache) = &self.cache {
            cache_fill::on_response(cache, upstream_response, ctx, session.req_header());
        }
        if let Some(policy) = &self.policy {
            policy_check::on_response(upstream_response.status.as_u16(), ctx, policy).await;
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        Ok(cache_fill::on_body(body, end_of_stream, ctx))
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        connection::before_answer(session, ctx);
        answer::copy_request_id(session, upstream_response)?;
        if answer::is_http10(session) {
            // RFC 9112 §6.1: no chunked coding towards an HTTP/1.0 client. Without
            // Transfer-Encoding (and Content-Length) Pingora delimits the body by closing.
            upstream_response.remove_header(&http::header::TRANSFER_ENCODING);
            session.set_keepalive(None);
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
