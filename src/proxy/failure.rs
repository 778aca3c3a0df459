//! What the client is told when proxying fails: Pingora's error, or the edge's own decision
//! (`RequestCtx::own_error`), answered in the registry's JSON error format.

use pingora::proxy::{FailToProxy, Session};
use pingora::{Error, ErrorSource, ErrorType};

use super::answer;
use super::ctx::RequestCtx;
use crate::config::Limits;
use crate::error::RegistryError;

/// Answers the failure (unless the client is gone or a response already started) and tells
/// Pingora the status and that the connection is not reused. A push start the edge answers
/// this way gives its push budget back first.
pub(crate) async fn answer(session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
    let error = ctx
        .own_error
        .clone()
        .or_else(|| classify(e, ctx.settings.limits));
    let Some(error) = error else {
        return FailToProxy {
            error_code: 0,
            can_reuse_downstream: false,
        };
    };
    let status = error.status();
    super::admission::give_back_push(ctx).await;
    answer::failure(session, &error).await;
    ctx.own_error = Some(error);
    FailToProxy {
        error_code: status,
        can_reuse_downstream: false,
    }
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
