//! The features' hooks, called from the proxy's phases: the cache, then the policy (see
//! `crate::hooks` for the shape). A feature not configured at start is `None` and costs
//! one branch per phase; a request a feature does not follow has no state of it.

use std::sync::Arc;

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::Session;

use super::ctx::RequestCtx;
use crate::cache::{self, Cache};
use crate::hooks::{Outcome, Refusal};
use crate::policy::{self, Policy};
use crate::upstream::NodePool;

/// The features opened at start.
pub(crate) struct Features {
    /// `cache`; `None` = off.
    pub cache: Option<Arc<Cache>>,
    /// `policy`'s usage store; `None` = off.
    pub policy: Option<Arc<Policy>>,
}

impl Features {
    /// Admission's `Cache` step (after the token check: the cache answers only requests
    /// the edge authorized).
    pub(crate) async fn admit_cache(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        pool: &NodePool,
    ) -> Result<Outcome> {
        let Some(cache) = &self.cache else {
            return Ok(Outcome::Next);
        };
        // An answer from the cache during a drain closes its connection, as any other: the
        // cache checks just before it writes (a confirmation or a wait may take seconds).
        let in_flight = ctx.in_flight.as_ref();
        let state = &mut ctx.cache;
        cache::admit(cache, session, &ctx.request, state, pool, in_flight).await
    }

    /// Admission's `Policy` step.
    pub(crate) async fn admit_policy(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        pool: &NodePool,
    ) -> Outcome {
        match &self.policy {
            Some(policy) => {
                policy::admit(policy, session, &ctx.request, &mut ctx.policy, pool).await
            }
            None => Outcome::Next,
        }
    }

    /// `upstream_peer`: a new attempt at the registry.
    pub(crate) fn upstream_peer(&self, ctx: &mut RequestCtx) {
        policy::new_attempt(&mut ctx.policy);
    }

    /// `request_body_filter`, after the proxy counted the chunk.
    pub(crate) async fn request_body(
        &self,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<(), Refusal> {
        match &self.policy {
            Some(policy) => {
                let (request, state) = (&ctx.request, &mut ctx.policy);
                policy::request_body(policy, body, end_of_stream, request, state).await
            }
            None => Ok(()),
        }
    }

    /// `upstream_response_filter`.
    pub(crate) async fn upstream_response(
        &self,
        response: &ResponseHeader,
        request_header: &RequestHeader,
        ctx: &mut RequestCtx,
    ) {
        if let Some(cache) = &self.cache {
            let state = &mut ctx.cache;
            cache::upstream_response(cache, response, request_header, &ctx.request, state);
        }
        if let Some(policy) = &self.policy {
            let status = response.status.as_u16();
            policy::upstream_response(policy, status, &ctx.request, &mut ctx.policy).await;
        }
    }

    /// `response_body_filter`: a manifest by tag's body into its cache fill.
    pub(crate) fn response_body(
        &self,
        body: &Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) {
        if let Some(cache) = &self.cache {
            cache::response_body(cache, body, end_of_stream, &mut ctx.cache);
        }
    }

    /// `upstream_response_filter`, first: whether the pool's failed answer (`status`) is to
    /// be replaced by a remembered tag's (`routes[].stale_if_error`); the proxy then fails
    /// the request so that [`Features::answer_stale`] answers it.
    pub(crate) fn replaces_with_stale(
        &self,
        status: u16,
        header: &RequestHeader,
        ctx: &RequestCtx,
    ) -> bool {
        let Some(cache) = &self.cache else {
            return false;
        };
        let request = &ctx.request;
        request.routed.is_some() && cache::stale_replaces(cache, status, header, request)
    }

    /// `fail_to_proxy`, first: a manifest by tag on a route whose pool failed, answered from
    /// its remembered tag. `true` when answered.
    pub(crate) async fn answer_stale(
        &self,
        session: &mut Session,
        e: &pingora::Error,
        ctx: &mut RequestCtx,
    ) -> bool {
        let Some(cache) = &self.cache else {
            return false;
        };
        let pool_failed = ctx.deferred.is_none()
            && *e.esource() != pingora::ErrorSource::Downstream
            && session.response_written().is_none();
        if !pool_failed || ctx.request.routed.is_none() {
            return false;
        }
        match cache::answer_stale(cache, session, &ctx.request).await {
            Ok(answered) => {
                if answered {
                    ctx.cache_stale = true;
                }
                answered
            }
            Err(e) => {
                tracing::debug!("stale answer not sent: {e}");
                false
            }
        }
    }

    /// Whether a feature answered the request itself (the access line's `upstream`).
    pub(crate) fn answered_by(ctx: &RequestCtx) -> Option<&'static str> {
        if ctx.cache_stale {
            return Some("stale");
        }
        ctx.cache
            .as_ref()
            .is_some_and(|c| c.answered())
            .then_some("cache")
    }
}
