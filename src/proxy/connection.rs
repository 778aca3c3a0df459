//! The client connection's side of a request: its deadlines (`listen::watch`) and
//! keep-alive, set when a request starts and released when it ends.

use pingora::proxy::Session;

use super::ctx::RequestCtx;
use crate::listen::watch;

/// Tells the connection a request started and applies the client timeouts to it; a
/// draining edge makes this answer the connection's last.
pub(crate) fn request_started(session: &mut Session, ctx: &mut RequestCtx, draining: bool) {
    let timeouts = ctx.request.settings.client_timeouts;
    let http2 = session.is_http2();
    if let Some(digest) = session.digest().and_then(|d| d.socket_digest.as_ref()) {
        ctx.connection = watch::watch_for(digest);
    }
    if let Some(watch) = &ctx.connection {
        watch.request_started(http2);
        if http2 && !session.is_body_empty() {
            ctx.body_progress = Some(watch.body_started());
        }
    }
    // HTTP/1: Pingora's per-read timeout covers a stalled body. The idle wait is the
    // guard's (`listen::stream`), which ends the stream at `idle_timeout`: Pingora's keep-alive
    // timer (`Some(0)`: none) would arm a second timer for every wait. A connection the watch
    // cannot be found for keeps Pingora's timer.
    session.set_read_timeout(Some(timeouts.body));
    session.set_write_timeout(Some(timeouts.body));
    if !http2 {
        let idle = match ctx.connection {
            Some(_) => 0,
            None => timeouts.idle.as_secs().max(1),
        };
        // Only where the request allows keep-alive: Pingora has turned it off for
        // `Connection: close`, HTTP/1.0 without keep-alive, and a head with both
        // Content-Length and Transfer-Encoding (RFC 9112 §6.1: close after it).
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(idle));
        }
        // RFC 9112 §9.3.2: requests a client sends before reading the answers (pipelined,
        // or the next request in the same write as a body) are answered in order. Off,
        // Pingora drops the second request, or reports the client's bytes after a body as a
        // failure of the node ("Sent data after end of body", a 502).
        session.set_pipelining_enabled(true);
        // RFC 9112 §9.6: a client that sends its request and then shuts down its write side
        // (`nc -N`, HTTP/1.0 tools, health checkers) still reads the answer. Pingora's default
        // aborts the request at that FIN; a client that is really gone shows when the
        // answer cannot be written.
        session.set_abort_on_close(false);
    }
    if draining {
        session.set_keepalive(None);
    }
}

/// Called just before the response header is written: a request that began before a drain
/// and answers during it closes its connection, and its answer says so
/// (`Connection: close`) rather than `keep-alive`.
pub(crate) fn before_answer(session: &mut Session, ctx: &RequestCtx) {
    if ctx.in_flight.as_ref().is_some_and(|f| f.draining()) {
        session.set_keepalive(None);
    }
}

/// The request is over: an HTTP/1 connection goes back to waiting (idle deadline).
pub(crate) fn request_finished(session: &Session, ctx: &mut RequestCtx) {
    ctx.body_progress = None;
    if let Some(watch) = &ctx.connection {
        if !session.is_http2() {
            watch.request_finished();
        }
    }
}
