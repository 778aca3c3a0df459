//! One access-log line (target `registry_edge::access`) and the request metrics per request;
//! the request as Pingora's error lines name it.

use pingora::proxy::Session;
use pingora::Error;

use super::ctx::RequestCtx;
use crate::error::RegistryError;
use crate::metrics::metrics;

/// Records the finished request: counters and latency by route class and status, bytes in
/// and out, rate-limit outcomes, and the log line. Only the path is logged: query strings can
/// carry upload state and credentials.
pub(crate) fn record(session: &Session, e: Option<&Error>, ctx: &RequestCtx) {
    let req = session.req_header();
    let status = session.response_written().map_or(0, |r| r.status.as_u16());
    let elapsed = ctx.request.started.elapsed();
    let (bytes_in, bytes_out) = (session.body_bytes_read(), session.body_bytes_sent());
    let m = metrics();
    let route = ctx.request.route_name();
    m.count_request(ctx.request.class, route, status, elapsed.as_secs_f64());
    m.bytes_received.inc_by(bytes_in as u64);
    m.bytes_sent.inc_by(bytes_out as u64);
    // A counted push or pull (its budget's headers on the answer) was admitted.
    let counted = ctx.push_budget.is_some() || !ctx.request.answer_headers.is_empty();
    let rate_limit = match (&ctx.own_error, counted) {
        (Some(RegistryError::TooManyPushes { .. }), _) => "limited:push",
        (Some(RegistryError::TooManyPulls { .. }), _) => "limited:pull",
        (Some(RegistryError::TooManyFailedLogins), _) => "limited:failed_logins",
        (_, true) => "admitted",
        _ => "-",
    };
    if let Some(limit) = rate_limit.strip_prefix("limited:") {
        m.rate_limited.with_label_values(&[limit]).inc();
    }
    tracing::info!(
        target: "registry_edge::access",
        request_id = %ctx.request.request_id,
        client = %OrDash(ctx.request.client.map(|c| c.client)),
        account = %ctx.request.subject.as_deref().unwrap_or("-"),
        method = %req.method,
        path = %req.uri.path(),
        status,
        bytes_in,
        bytes_out,
        duration_ms = elapsed.as_millis() as u64,
        upstream = %Upstream(ctx),
        route = %route,
        rate_limit,
        throttled_ms = ctx.throttled.as_millis() as u64,
        error = %ErrorField(e, ctx.own_error.as_ref()),
    );
}

/// The request as Pingora's error lines name it ("Fail to proxy: … METHOD PATH, Host: …,
/// request_id: …"): Pingora's own summary prints the whole URI, and a query can carry upload
/// state and credentials, which never reach the log (as in the access line). The request id
/// ties the line to the access line and to the client's `X-Request-Id`.
pub(crate) fn summary(session: &Session, ctx: &RequestCtx) -> String {
    let req = session.req_header();
    let host = crate::request::request_host(req);
    format!(
        "{} {}, Host: {}, request_id: {}",
        req.method,
        req.uri.path(),
        host.as_deref().unwrap_or(""),
        OrDash((!ctx.request.request_id.is_empty()).then_some(&ctx.request.request_id))
    )
}

/// The node a request went to, `cache` for an answer from the cache, or `-`.
struct Upstream<'a>(&'a RequestCtx);

impl std::fmt::Display for Upstream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match super::features::Features::answered_by(self.0) {
            Some(feature) => f.write_str(feature),
            None => OrDash(self.0.node).fmt(f),
        }
    }
}

/// The access line's `error`: the registry error code of a refusal the edge decided
/// (at admission, from the body, at the token realm: the same whenever it was decided),
/// else Pingora's error type for a failure (`ConnectRefused`, `ReadTimedout`: the cause an
/// operator looks for), else `-`.
struct ErrorField<'a>(Option<&'a Error>, Option<&'a RegistryError>);

impl std::fmt::Display for ErrorField<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.0, self.1) {
            // A refusal decided in a body phase reaches Pingora as an HTTP status.
            (Some(e), _) if !matches!(e.etype(), pingora::ErrorType::HTTPStatus(_)) => {
                f.write_str(e.etype().as_str())
            }
            (_, Some(own)) => f.write_str(own.code()),
            (Some(e), None) => f.write_str(e.etype().as_str()),
            (None, None) => f.write_str("-"),
        }
    }
}

/// A value or `-` when absent, formatted straight into the line (no `String` per field).
struct OrDash<T>(Option<T>);

impl<T: std::fmt::Display> std::fmt::Display for OrDash<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(value) => value.fmt(f),
            None => f.write_str("-"),
        }
    }
}
