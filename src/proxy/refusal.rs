//! One path for every answer the edge gives instead of the registry's: refusals decided at
//! admission (checks, token, limits, the cache and policy hooks), refusals decided while
//! the body streams (a size limit, a quota, an immutable tag, a held manifest), the token
//! realm's refusals and failures to proxy. Each is written by [`answer`] and recorded the
//! same way: `RequestCtx::own_error`, which the access line (`error=<code>`) and the
//! rate-limit metrics read.
//!
//! A refusal decided in a body phase cannot be written there (Pingora is between reading
//! chunks): [`defer`] keeps it and raises an HTTP-status error, and `fail_to_proxy` answers
//! it through [`answer`].

use pingora::prelude::*;
use pingora::proxy::Session;

use super::answer;
use super::ctx::RequestCtx;
use crate::hooks::Refusal;

/// Answers `refusal` (once a final answer was written, nothing more is), then records it
/// for the access log and metrics. Errors are Pingora's (the write failed).
pub(crate) async fn answer(
    session: &mut Session,
    ctx: &mut RequestCtx,
    refusal: Refusal,
) -> Result<()> {
    super::connection::before_answer(session, ctx);
    // A counted pull's standing goes on the edge's own answers too (a 429, a 502).
    let mut refusal = refusal;
    (refusal.headers).extend(ctx.request.answer_headers.iter().cloned());
    answer::refusal(session, &refusal).await?;
    // Recorded once answered: a refusal the client never got is neither counted as a
    // rate-limit outcome nor answered again by `fail_to_proxy`.
    ctx.own_error = Some(refusal.error);
    Ok(())
}

/// Keeps a refusal decided in a body phase for `fail_to_proxy` and returns the error that
/// stops proxying (an HTTP status: the registry was not asked to take the rest).
pub(crate) fn defer(ctx: &mut RequestCtx, refusal: Refusal) -> Box<Error> {
    let status = refusal.error.status();
    ctx.deferred = Some(refusal);
    Error::explain(HTTPStatus(status), "refused by the edge")
}
