//! The stream every accepted connection is wrapped in: deadlines and header limits that
//! Pingora does not enforce itself.
//!
//! Pingora times out each *read*, not a whole phase: a client trickling one header byte
//! every 59 s (slowloris) holds a connection forever, and an HTTP/2 request body has no
//! read timeout at all. [`GuardedStream`] wraps every accepted connection (outside TLS,
//! so it sees plain HTTP) and fails its reads once the current phase's deadline passes:
//!
//! - headers: from accept (or from the first byte after an idle period) until the proxy
//!   has parsed the request (`server.header_timeout`); an HTTP/1 header block over
//!   `header_limit`'s lines or bytes is answered 431 right here;
//! - idle: after an HTTP/1 response, until the next request starts (`server.idle_timeout`);
//!   the read then ends the stream (Pingora's HTTP/1 code closes quietly), so the proxy
//!   leaves Pingora's own keep-alive timer off;
//! - HTTP/2: while any stream's request body has made no progress for `server.body_timeout`
//!   (the whole connection is closed: the stalled stream cannot be reached from here).
//!
//! HTTP/1 bodies use Pingora's own per-read timeout, set by the proxy. The proxy reaches a
//! connection's [`ConnWatch`] through [`super::watch::watch_for`] to say which phase the
//! connection is in.
//!
//! It also buffers HTTP/1 writes. Pingora writes a response header and then its body with
//! separate writes and expects a buffered stream (its own listener adds one; the stream an
//! own accept loop gets has none, and `set_buffer` is crate-private), while tokio-rustls
//! seals a TLS record and sends it on every write: unbuffered, a small answer left as two
//! records in two `sendto`s. Writes up to [`WRITE_BUFFER`] bytes are held and handed to TLS
//! together on `poll_flush` (Pingora flushes at the end of every body and after header-only
//! answers), on shutdown, when the buffer would overflow, and whenever the proxy reads from
//! the client — which it does while it waits for the next piece of a streamed body, so a
//! slow upstream's bytes never wait in the buffer.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::protocols::{Peek, Shutdown, Stream, ALPN};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::header_limit::{HeaderScan, REFUSAL, REFUSAL_TO_HEAD};
use super::raw_answer;
use super::watch::{self, ConnKey, ConnWatch, Phase};
use crate::config::ClientTimeouts;

/// Most bytes of HTTP/1 response held before they go to TLS together: one full TLS record
/// (RFC 8446 §5.1), as nginx's `ssl_buffer_size 16k`.
const WRITE_BUFFER: usize = 16 * 1024;

/// A write buffer that grew past this is freed once drained, so idle keep-alive
/// connections hold only what small answers need.
const KEEP_CAPACITY: usize = 4 * 1024;

/// After answering 431, read and discard what the client still sends for this long, so
/// closing does not reset the connection before the client has read the answer.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

enum Refusal {
    /// Bytes of the answer (`REFUSAL` or `REFUSAL_TO_HEAD`) written so far.
    Writing(&'static [u8], usize),
    Draining,
}

/// An accepted connection with the deadlines above; registered while it is open.
pub(crate) struct GuardedStream {
    inner: Stream,
    watch: Arc<ConnWatch>,
    key: ConnKey,
    /// For log lines (the declared client behind a PROXY-protocol balancer).
    client: std::net::SocketAddr,
    timer: Pin<Box<Sleep>>,
    /// HTTP/1 only: the header block being received.
    scan: Option<HeaderScan>,
    refusal: Option<Refusal>,
    /// HTTP/1 only: response bytes not yet handed to TLS (HTTP/2 frames are buffered by h2).
    pending: Option<Vec<u8>>,
    /// The proxy's listeners: Pingora's own refusals go out as JSON (`raw_answer`).
    json_refusals: bool,
}

impl GuardedStream {
    /// Wraps `inner` (after its TLS handshake) of the connection `key` from `client`;
    /// deadlines count from `accepted`.
    pub(crate) fn new(
        inner: Stream,
        (key, client): (ConnKey, std::net::SocketAddr),
        timeouts: ClientTimeouts,
        accepted: Instant,
    ) -> GuardedStream {
        let watch = Arc::new(ConnWatch::new(timeouts, accepted));
        watch::register(key, watch.clone());
        let http2 = matches!(inner.selected_alpn_proto(), Some(ALPN::H2));
        crate::metrics::metrics().active_connections.inc();
        GuardedStream {
            inner,
            watch,
            key,
            client,
            timer: Box::pin(tokio::time::sleep_until(accepted.into())),
            scan: (!http2).then(HeaderScan::default),
            refusal: None,
            pending: (!http2).then(Vec::new),
            json_refusals: false,
        }
    }

    /// Writes the refusals Pingora makes before the proxy sees a request (400, 405) in the
    /// registry's JSON format ([`raw_answer`]). Only for listeners whose app moves the
    /// connection's watch out of its headers phase before it answers (the proxy).
    pub(crate) fn with_json_refusals(mut self) -> GuardedStream {
        self.json_refusals = true;
        self
    }

    /// The JSON answer to write instead of `buf`, when `buf` is Pingora's own refusal of a
    /// request the proxy never saw.
    fn json_refusal(&self, buf: &[u8]) -> Option<Vec<u8>> {
        if !self.json_refusals {
            return None;
        }
        // The scan describes the request being refused only when its head was read in the
        // headers phase; a pipelined head parsed from earlier bytes gets the body too.
        let head = match self.watch.phase() {
            Phase::Headers => self.scan.as_ref().is_some_and(HeaderScan::is_head),
            Phase::Idle => false,
            Phase::Busy | Phase::H2 => return None,
        };
        raw_answer::for_pingora_answer(buf, head)
    }

    /// Hands every buffered byte to the inner stream (not flushing it).
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(pending) = &mut self.pending else {
            return Poll::Ready(Ok(()));
        };
        let mut done = 0;
        let result = loop {
            if done == pending.len() {
                break Poll::Ready(Ok(()));
            }
            match Pin::new(&mut self.inner).poll_write(cx, &pending[done..]) {
                Poll::Ready(Ok(0)) => break Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => done += n,
                Poll::Ready(Err(e)) => break Poll::Ready(Err(e)),
                Poll::Pending => break Poll::Pending,
            }
        };
        pending.drain(..done);
        if pending.is_empty() && pending.capacity() > KEEP_CAPACITY {
            *pending = Vec::new();
        }
        result
    }

    /// Buffers `bufs` when they fit beside what is held; otherwise drains first, then
    /// buffers them if they fit alone, else writes them through.
    fn poll_buffered_write(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if let Some(answer) = bufs.first().and_then(|first| self.json_refusal(first)) {
            if let Some(pending) = &mut self.pending {
                pending.extend_from_slice(&answer);
                return Poll::Ready(Ok(total));
            }
        }
        let held = self.pending.as_ref().map_or(0, Vec::len);
        if held > 0 && held + total > WRITE_BUFFER {
            ready!(self.poll_drain(cx))?;
        }
        match &mut self.pending {
            Some(pending) if pending.len() + total <= WRITE_BUFFER => {
                for buf in bufs {
                    pending.extend_from_slice(buf);
                }
                Poll::Ready(Ok(total))
            }
            _ => Pin::new(&mut self.inner).poll_write_vectored(cx, bufs),
        }
    }

    /// Arms the timer for the current deadline; an error once it has passed.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.watch.phase() == Phase::H2 {
            self.watch.reader.register(cx.waker());
        }
        let Some((deadline, why)) = self.watch.deadline() else {
            return Poll::Pending;
        };
        let deadline = tokio::time::Instant::from_std(deadline);
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        ready!(self.timer.as_mut().poll(cx));
        tracing::debug!(client = %self.client, "closing connection: {why}");
        if self.watch.phase() == Phase::Idle {
            // Between requests the end of the stream closes quietly, as Pingora's own
            // keep-alive timeout does; the proxy leaves that timer off (one timer per wait).
            return Poll::Ready(Ok(()));
        }
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)))
    }

    /// Writes the 431 answer, then discards input for a moment before failing the read.
    fn poll_refuse(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.refusal {
                Some(Refusal::Writing(answer, done)) if done < answer.len() => {
                    // An earlier answer still held goes first, in order.
                    ready!(self.poll_drain(cx))?;
                    match ready!(Pin::new(&mut self.inner).poll_write(cx, &answer[done..])) {
                        Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                        Ok(n) => self.refusal = Some(Refusal::Writing(answer, done + n)),
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
                Some(Refusal::Writing(..)) => {
                    ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
                    let until = Instant::now() + REFUSAL_LINGER;
                    self.timer.as_mut().reset(until.into());
                    self.refusal = Some(Refusal::Draining);
                }
                Some(Refusal::Draining) | None => {
                    let mut scratch = [0u8; 4096];
                    let mut sink = ReadBuf::new(&mut scratch);
                    match Pin::new(&mut self.inner).poll_read(cx, &mut sink) {
                        Poll::Ready(Ok(())) if !sink.filled().is_empty() => continue,
                        Poll::Ready(_) => break,
                        Poll::Pending => {
                            ready!(self.timer.as_mut().poll(cx));
                            break;
                        }
                    }
                }
            }
        }
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "request headers over the limit; answered 431",
        )))
    }
}

impl Drop for GuardedStream {
    fn drop(&mut self) {
        crate::metrics::metrics().active_connections.dec();
        // Runs before `inner` closes the socket, so the key cannot be reused meanwhile.
        watch::unregister(&self.key);
    }
}

impl fmt::Debug for GuardedStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedStream")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.refusal.is_some() {
            return this.poll_refuse(cx);
        }
        // The proxy reads from the client when it has written what it has for now (or
        // waits for more from upstream): what is held goes out. A drain that must wait is
        // retried on the next poll, which the socket's readiness brings.
        if this.pending.as_ref().is_some_and(|p| !p.is_empty()) {
            if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                return Poll::Ready(Err(e));
            }
            if let Poll::Ready(Err(e)) = Pin::new(&mut this.inner).poll_flush(cx) {
                return Poll::Ready(Err(e));
            }
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                if this.watch.input_arrived() {
                    if let Some(scan) = &mut this.scan {
                        *scan = HeaderScan::default();
                    }
                }
                let over = this.watch.phase() == Phase::Headers
                    && this
                        .scan
                        .as_mut()
                        .is_some_and(|scan| !scan.within_limits(&buf.filled()[before..]));
                if over {
                    buf.set_filled(before);
                    let head = this.scan.as_ref().is_some_and(HeaderScan::is_head);
                    let answer = if head { &REFUSAL_TO_HEAD } else { &REFUSAL };
                    this.refusal = Some(Refusal::Writing(answer.as_slice(), 0));
                    return this.poll_refuse(cx);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => this.poll_deadline(cx),
            // A TLS client that shuts down its write side without close_notify (`nc -N`
            // through a TLS tunnel, health checkers) is read as the end of its input, as a
            // FIN on plain HTTP: HTTP's own framing shows a request cut short, and the
            // answer to a whole one is still written (RFC 9112 §9.6).
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Poll::Ready(Ok(())),
            other => other,
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.is_none() {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        this.poll_buffered_write(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.is_none() {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        this.poll_buffered_write(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        // Buffered writes take slices as they come.
        self.pending.is_some() || self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for GuardedStream {
    async fn shutdown(&mut self) {
        // What is held goes out before the close (an error here ends the connection anyway).
        let _ = std::future::poll_fn(|cx| self.poll_drain(cx)).await;
        self.inner.shutdown().await
    }
}

delegate_digests!(GuardedStream);

#[async_trait]
impl Peek for GuardedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}
