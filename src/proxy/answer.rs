//! Writing the answers the edge makes itself (errors, the token realm) on HTTP/1.x and h2.
//!
//! Framing rules every own answer follows, whatever its status or route:
//! - HEAD, 204 and 304 answers are headers only (RFC 9110 §9.3.2, §15.3.5, §15.4.5); a HEAD
//!   answer keeps the `Content-Length` of the body a GET would get. Pingora drops such a body
//!   on HTTP/1.1 but sends it on h2, where a DATA frame after a HEAD answer is a
//!   PROTOCOL_ERROR for the client (curl, Go).
//! - HTTP/1.0 clients get the connection closed after the answer (they cannot be sent
//!   chunked bodies and rarely ask for keep-alive).
//! - An answer given before the request body was read lingers to discard the body, so the
//!   client sees the answer rather than a reset.

use std::time::Duration;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

use crate::error::RegistryError;
use crate::hooks::Refusal;
use crate::request::copy_request_id;

/// After answering early, keep reading (and discarding) the request body this long so
/// the client sees the answer: closing with unread data makes h1 send a TCP RST that can
/// destroy the response, and on h2 some clients (curl 7.88) report the RST_STREAM that
/// follows an early response as an error. nginx does the same ("lingering close").
const LINGER: Duration = Duration::from_secs(5);

/// Whether an answer with `status` to a request with `method` must carry no body.
pub(crate) fn headers_only(method: &http::Method, status: u16) -> bool {
    method == http::Method::HEAD || status == 204 || status == 304
}

/// Whether the client speaks HTTP/1.0 (no chunked bodies, no implicit keep-alive).
pub(crate) fn is_http10(session: &Session) -> bool {
    !session.is_http2() && session.req_header().version == http::Version::HTTP_10
}

/// Writes `header` and `body` as the whole answer (see the module's framing rules).
pub(crate) async fn respond(
    session: &mut Session,
    header: ResponseHeader,
    body: Bytes,
) -> Result<()> {
    write_answer(session, header, body, true).await
}

/// Answers `refusal` in the registry's JSON format, with its headers: every answer the
/// edge gives instead of the registry's (admission, a body refused part-way, a node that
/// failed) is written here. Nothing is written once a final response has started (then
/// closing the stream is the only honest signal left, which the caller does). An interim
/// `100 Continue` is not an answer: a client that sent `Expect: 100-continue` got the
/// registry's 100 and then its body refused by the edge (quota, immutable tag, size) still
/// gets the refusal (RFC 9110 §15.2: a final response follows any 1xx).
pub(crate) async fn refusal(session: &mut Session, refusal: &Refusal) -> Result<()> {
    if final_answer_written(session) {
        return Ok(());
    }
    let error = &refusal.error;
    let body = error.body();
    let mut header = error.response_header(body.len());
    for (name, value) in &refusal.headers {
        header.insert_header(*name, value.as_str())?;
    }
    write_answer(session, header, body, lingers_after(error)).await
}

/// Whether a body still arriving is read away after this answer, so the client sees it
/// rather than a reset: yes for the edge's own refusals, no for a stalled client (it sends
/// nothing more) or a node that failed (the body may be half gone to it).
fn lingers_after(error: &RegistryError) -> bool {
    !matches!(
        error,
        RegistryError::RequestTimeout
            | RegistryError::UpstreamUnreachable
            | RegistryError::UpstreamTimeout
            | RegistryError::UpstreamFailed
            | RegistryError::Internal
    )
}

/// Writes the whole answer: keep-alive off where the body is unread or the client speaks
/// HTTP/1.0, the request id returned, no body where the method or status allows none, and
/// an unread body read away when `linger`.
async fn write_answer(
    session: &mut Session,
    header: ResponseHeader,
    body: Bytes,
    linger: bool,
) -> Result<()> {
    let unread_body = !session.is_body_empty() && !session.is_body_done();
    if unread_body || is_http10(session) {
        session.set_keepalive(None);
    }
    let mut header = header;
    copy_request_id(session.req_header(), &mut header)?;
    let body = match headers_only(&session.req_header().method, header.status.as_u16()) {
        true => None,
        false => Some(body),
    };
    write(session, header, body).await?;
    if unread_body && linger {
        self::linger(session).await;
    }
    Ok(())
}

/// Whether a final response has been written: anything but an interim 1xx (`101` switches
/// protocols and is final, as in Pingora's `write_error_response`).
pub(crate) fn final_answer_written(session: &Session) -> bool {
    session
        .response_written()
        .is_some_and(|r| !r.status.is_informational() || r.status == 101)
}

/// Writes the header, then the body (or nothing) and the end of the response. Pingora ignores
/// a header's end-of-stream flag on h1 and h2 alike (`HttpSession::write_response_header`):
/// only a final body write ends an h2 stream (an empty DATA frame when there is no body) and
/// completes an h1 response so the connection can be reused. Without it an h2 stream is
/// reset (CANCEL) when the session is dropped.
async fn write(session: &mut Session, header: ResponseHeader, body: Option<Bytes>) -> Result<()> {
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(body, true).await
}

/// Discards what is left of the request body, for at most [`LINGER`].
async fn linger(session: &mut Session) {
    if session.is_body_done() {
        return;
    }
    match tokio::time::timeout(LINGER, session.drain_request_body()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!("client went away while its body was discarded: {e}"),
        Err(_) => tracing::debug!("stopped discarding a request body after {LINGER:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_204_and_304_are_headers_only() {
        use http::Method;
        assert!(headers_only(&Method::HEAD, 401));
        assert!(headers_only(&Method::HEAD, 200));
        assert!(headers_only(&Method::GET, 204));
        assert!(headers_only(&Method::GET, 304));
        assert!(!headers_only(&Method::GET, 401));
        assert!(!headers_only(&Method::POST, 429));
    }
}
