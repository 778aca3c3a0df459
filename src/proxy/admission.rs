//! The checks a request passes before it is proxied, in order ([`STEPS`]).
//!
//! Each step reads the request and the per-request state, may fill the state in (request
//! id, route, client, origin, subject), and then lets the request on ([`Outcome::Next`]),
//! refuses it ([`Outcome::Refuse`] with a [`Refusal`], answered by `refusal::answer` in the
//! registry's JSON format), or reports that it answered the request itself (the token
//! endpoint, the cache). The first step that does not say `Next` ends admission. The
//! features' steps (`Cache`, `Policy`) call their hooks through `features`.
//!
//! Model: river's `RequestFilterMod` chain (`source/river/src/proxy/request_filters.rs`);
//! the steps are an enum rather than boxed trait objects so admission allocates nothing.

use std::sync::Arc;

use pingora::prelude::*;
use pingora::proxy::Session;

use super::checks;
use super::ctx::RequestCtx;
use super::features::Features;
use super::{refusal, token_endpoint};
use crate::error::RegistryError;
use crate::hooks::{Outcome, Refusal};
use crate::limits::{Admission, PullAdmission};
use crate::settings::Settings;
use crate::tls::CertResolver;
use crate::upstream::NodePool;

/// One admission step.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Step {
    /// Header blocks over the limits HTTP/1 connections enforce as they read (h2 blocks, and
    /// HTTP/1 heads the connection did not scan: pipelined behind a body).
    HeaderLimits,
    /// `X-Request-Id`: the client's or a new one (never refuses).
    RequestId,
    /// An origin-form target, a valid `Host` (HTTP/1.1 needs one; HTTP/1.0 gets one), and
    /// framing headers the node reads as the edge does (`request::framing`).
    Host,
    /// `server.strict_host`: a host the edge holds a certificate for.
    StrictHost,
    /// Decode and classify the path; resolve the client and the public origin.
    Route,
    /// A repository name must follow the registry's grammar.
    RepositoryName,
    /// `maintenance.read_only`: nothing that changes the registry.
    ReadOnly,
    /// The token realm (`auth.token.realm`) is answered here, never proxied.
    TokenEndpoint,
    /// The bearer token must grant what the request needs.
    Token,
    /// A read-only route (`routes[].read_only`) takes no pushes or deletes.
    RouteReadOnly,
    /// `rate_limits.pull` counts manifest `GET`s, before the cache answers any.
    PullLimit,
    /// A pull by digest the cache holds for this repository is answered from it.
    Cache,
    /// `policy`: storage quotas and immutable tags.
    Policy,
    /// `rate_limits.push` counts push starts.
    PushLimit,
    /// `limits.max_body_size` against the declared `Content-Length`.
    BodySize,
}

/// The steps in the order they run. The header limits come before the request id (they
/// count what the client sent); the route before everything that needs the repository;
/// the token check before the push limit (which may key on the token's subject) and before
/// the cache (which answers only requests the token check let through); the pull limit
/// before the cache, so answers from the cache count the same; every other refusal
/// before the push limit, which comes last, so a refused push does not use up the account's
/// budget. A push the edge refuses later (its body refused by the policy or a size limit, or
/// no node to take it) is given back before its answer is written (`limits::push`).
pub(crate) const STEPS: [Step; 15] = [
    Step::HeaderLimits,
    Step::RequestId,
    Step::Host,
    Step::StrictHost,
    Step::Route,
    Step::RepositoryName,
    Step::ReadOnly,
    Step::TokenEndpoint,
    Step::Token,
    Step::RouteReadOnly,
    Step::PullLimit,
    Step::Cache,
    Step::Policy,
    Step::BodySize,
    Step::PushLimit,
];

/// What the steps need besides the request and its state.
pub(crate) struct Admitter<'a> {
    /// The certificates in force: the names `server.strict_host` accepts.
    pub certificates: &'a CertResolver,
    /// The features opened at start (their admission hooks).
    pub features: &'a Features,
    /// The default pool (the cache's proxy-only check and the policy's lookups ask one of
    /// the request's pool).
    pub pool: &'a Arc<NodePool>,
}

impl Admitter<'_> {
    /// Runs [`STEPS`]; `Ok(true)` when the request was answered (refused or served by the
    /// edge itself), `Ok(false)` when it goes to a registry node. Errors are Pingora's (a
    /// failed write, an unreadable body), handled by `fail_to_proxy`.
    pub(crate) async fn admit(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        // One snapshot for all steps (the request keeps it anyway); a clone per step would
        // cost an atomic increment each.
        let settings = ctx.request.settings.clone();
        for step in STEPS {
            match self.run(step, &settings, session, ctx).await? {
                Outcome::Next => {}
                Outcome::Refuse(refused) => {
                    refusal::answer(session, ctx, refused).await?;
                    return Ok(true);
                }
                Outcome::Answered => return Ok(true),
            }
        }
        Ok(false)
    }

    async fn run(
        &self,
        step: Step,
        settings: &Settings,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Outcome> {
        let outcome = match step {
            Step::HeaderLimits => checks::header_limits(session).into(),
            Step::RequestId => {
                ctx.request.request_id = checks::assign_request_id(session)?;
                Outcome::Next
            }
            Step::Host => checks::ensure_host(session, settings.external.as_ref())
                .err()
                .into(),
            Step::StrictHost => match settings.strict_host {
                true => checks::strict_host(session, self.certificates, settings.external.as_ref())
                    .into(),
                false => Outcome::Next,
            },
            Step::Route => checks::route(session, ctx).into(),
            Step::RepositoryName => checks::repository_name(&ctx.request.route).into(),
            Step::ReadOnly => (settings.read_only && ctx.request.route.changes_registry())
                .then_some(RegistryError::ReadOnly)
                .into(),
            Step::TokenEndpoint => match &settings.auth {
                Some(auth) if session.req_header().uri.path() == auth.realm_path => {
                    token_endpoint::serve(session, ctx, auth).await?;
                    Outcome::Answered
                }
                _ => Outcome::Next,
            },
            Step::Token if !settings.checks_tokens() => Outcome::Next,
            Step::Token => {
                checks::token(session, ctx, settings).map_or(Outcome::Next, Outcome::Refuse)
            }
            Step::RouteReadOnly => super::routing::read_only(ctx).into(),
            Step::Cache => {
                let pool = pool_of(self.pool, ctx);
                self.features.admit_cache(session, ctx, &pool).await?
            }
            Step::Policy => {
                let pool = pool_of(self.pool, ctx);
                self.features.admit_policy(session, ctx, &pool).await
            }
            Step::PullLimit => pull_limit(session, ctx).await,
            Step::PushLimit => push_limit(ctx).await,
            Step::BodySize => checks::body_size(session, settings.limits.max_body_size).into(),
        };
        Ok(outcome)
    }
}

/// The pool the request goes to: its route's, else the default one.
fn pool_of(default: &Arc<NodePool>, ctx: &RequestCtx) -> Arc<NodePool> {
    match &ctx.request.routed {
        Some(routed) => routed.route.pool.clone(),
        None => default.clone(),
    }
}

/// Counts a push start against `rate_limits.push`; refuses with 429 (or 503 while shared
/// limits are unavailable and `on_unavailable: deny`).
async fn push_limit(ctx: &mut RequestCtx) -> Outcome {
    let Some(limiter) = ctx.request.settings.push_limiter.clone() else {
        return Outcome::Next;
    };
    if ctx.request.route.action != crate::registry::Action::PushStart {
        return Outcome::Next;
    }
    let client_ip = ctx
        .request
        .client
        .map(|c| c.client.to_string())
        .unwrap_or_default();
    match limiter
        .admit(ctx.request.subject.as_deref(), &client_ip)
        .await
    {
        Admission::Exempt => Outcome::Next,
        Admission::Unavailable => Outcome::Refuse(RegistryError::LimitsUnavailable.into()),
        Admission::Admitted { remaining, counted } => {
            ctx.push_budget = Some((limiter.limit_header(), remaining));
            ctx.push_counted = Some(counted);
            Outcome::Next
        }
        Admission::Limited { retry_after } => Outcome::Refuse(Refusal {
            error: RegistryError::TooManyPushes { retry_after },
            headers: vec![
                ("Retry-After", retry_after.to_string()),
                ("RateLimit-Limit", limiter.limit_header()),
                ("RateLimit-Remaining", "0;w=60".to_string()),
            ],
        }),
    }
}

/// Counts a manifest `GET` against `rate_limits.pull`; its standing goes on whatever
/// answers the request (the registry, the cache, a stale answer), 429 past the limit.
async fn pull_limit(session: &Session, ctx: &mut RequestCtx) -> Outcome {
    let Some(limiter) = ctx.request.settings.pull_limiter.clone() else {
        return Outcome::Next;
    };
    let route = &ctx.request.route;
    let counted = matches!(route.endpoint, crate::registry::Endpoint::Manifest { .. })
        && session.req_header().method == http::Method::GET;
    let Some(client) = ctx.request.client.as_ref().filter(|_| counted) else {
        return Outcome::Next;
    };
    let (account, client) = (ctx.request.subject.as_deref(), client.client);
    match limiter.admit(account, client).await {
        PullAdmission::Unlimited => Outcome::Next,
        PullAdmission::Admitted(standing) => {
            ctx.request.answer_headers.extend(standing.headers());
            Outcome::Next
        }
        PullAdmission::Limited {
            retry_after,
            standing,
        } => {
            // The standing itself is added where every refusal is answered.
            ctx.request.answer_headers.extend(standing.headers());
            Outcome::Refuse(Refusal {
                error: RegistryError::TooManyPulls {
                    retry_after,
                    counted: standing.source,
                },
                headers: vec![("Retry-After", retry_after.to_string())],
            })
        }
    }
}

/// Gives back the push start [`push_limit`] counted for this request, which the edge is
/// about to answer itself (its body refused by the policy or a size limit, or no node to
/// take it): only pushes the registry answered use the budget. Called before the answer is
/// written, so the client's next push already sees the budget.
pub(crate) async fn give_back_push(ctx: &mut RequestCtx) {
    if let (Some(counted), Some(limiter)) =
        (ctx.push_counted.take(), &ctx.request.settings.push_limiter)
    {
        limiter.give_back(&counted).await;
    }
}
