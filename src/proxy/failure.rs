//! What the client is told when proxying fails: Pingora's error, or the edge's own decision
//! (`RequestCtx::deferred`), answered in the registry's JSON error format.

use pingora::proxy::{FailToProxy, Session};
use pingora::{Error, ErrorSource, ErrorType};

use super::answer;
use super::ctx::RequestCtx;
use crate::config::Limits;
use crate::error::RegistryError;
use crate::hooks::Refusal;

/// Answers the failure (unless the client is gone or a response already started) through
/// the one refusal path (`refusal`), and tells Pingora the status and that the connection
/// is not reused. A push start the edge answers this way gives its push budget back first.
pub(crate) async fn answer(session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
    // The edge's own decision (a refusal from the body, no node to take it) or a node never
    // reached: the registry did nothing with the request.
    let registry_untouched = ctx.deferred.is_some() || never_reached(e);
    let refusal = ctx.deferred.take().or_else(|| {
        let limits = ctx.request.settings.limits;
        classify(e, limits).map(Refusal::from)
    });
    let Some(refusal) = refusal else {
        return FailToProxy {
            error_code: 0,
            can_reuse_downstream: false,
        };
    };
    let status = refusal.error.status();
    if registry_untouched && !answer::final_answer_written(session) {
        super::admission::give_back_push(ctx).await;
    }
    // Pingora does not reuse the connection after a failure: the answer says so.
    session.set_keepalive(None);
    let error = refusal.error.clone();
    if let Err(e) = super::refusal::answer(session, ctx, refusal).await {
        tracing::debug!("could not send error response: {e}");
    }
    ctx.own_error = Some(error);
    FailToProxy {
        error_code: status,
        can_reuse_downstream: false,
    }
}

/// Whether `e` says the request never got to a node: no connection was made, or the edge
/// raised it as an HTTP status itself (no healthy node, a refusal from the body).
fn never_reached(e: &Error) -> bool {
    use ErrorType::*;
    match e.etype() {
        HTTPStatus(_) => true,
        ConnectTimedout | ConnectRefused | ConnectNoRoute | TLSHandshakeFailure => {
            *e.esource() != ErrorSource::Downstream
        }
        _ => false,
    }
}

/// Logs a failed request by who caused it (Pingora's `suppress_error_log`): `true` when
/// Pingora's own `ERROR` line is not wanted. A stale answer (a route's pool failed, the
/// client got the remembered tag) is no failure. A refusal the edge decided (its own 4xx,
/// raised as an HTTP status) is already in the access line; a client's fault (it went away,
/// reset, stalled, sent what cannot be read) is a warning; a node's failure or the edge's
/// own keeps Pingora's `ERROR` line, whose summary names the request id.
pub(crate) fn log(session: &Session, ctx: &RequestCtx, e: &Error) -> bool {
    // Answered from a remembered tag: the client got its 200. The pool's state shows in
    // `upstream_node_healthy` and `route_stale_answers_total`, the cause in the access line.
    if ctx.cache_stale {
        tracing::debug!(request_id = %ctx.request.request_id, "answered stale: {e}");
        return true;
    }
    if matches!(e.etype(), ErrorType::HTTPStatus(status) if *status < 500) {
        tracing::debug!(request_id = %ctx.request.request_id, "refused: {e}");
        return true;
    }
    if *e.esource() != ErrorSource::Downstream {
        return false;
    }
    tracing::warn!(
        request_id = %ctx.request.request_id,
        "the client's side failed: {e}, {}",
        super::access_log::summary(session, ctx)
    );
    true
}

/// What to tell the client about a failure Pingora reports; `None` when nobody listens.
fn classify(e: &Error, limits: Limits) -> Option<RegistryError> {
    use ErrorType::*;
    let error = match (e.etype(), e.esource()) {
        (HTTPStatus(413), _) => RegistryError::BodyTooLarge {
            limit: limits.max_body_size.unwrap_or(0),
        },
        (HTTPStatus(status), _) => RegistryError::from_status(*status),
        (
            ConnectTimedout | ConnectRefused | ConnectNoRoute | ConnectError | TLSHandshakeFailure,
            _,
        ) => RegistryError::UpstreamUnreachable,
        (ReadTimedout | WriteTimedout, ErrorSource::Upstream) => RegistryError::UpstreamTimeout,
        (_, ErrorSource::Upstream) => RegistryError::UpstreamFailed,
        // A stalled body (`server.body_timeout`): tell the client, if it still listens.
        (ReadTimedout, ErrorSource::Downstream) => RegistryError::RequestTimeout,
        // The client went away: nobody to answer.
        (ReadError | WriteError | ConnectionClosed, ErrorSource::Downstream) => return None,
        (_, ErrorSource::Downstream) => RegistryError::BadRequest,
        _ => RegistryError::Internal,
    };
    Some(error)
}
