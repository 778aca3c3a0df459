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
//! - HTTP/2: while any stream's request body has made no progress for `server.body_timeout`
//!   (the whole connection is closed: the stalled stream cannot be reached from here).
//!
//! HTTP/1 bodies use Pingora's own per-read timeout, set by the proxy. The proxy reaches a
//! connection's [`ConnWatch`] through [`super::watch::watch_for`] to say which phase the
//! connection is in.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::header_limit::{HeaderScan, REFUSAL, REFUSAL_TO_HEAD};
use super::watch::{self, ConnKey, ConnWatch, Phase};
use crate::config::ClientTimeouts;

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
    timer: Pin<Box<Sleep>>,
    /// HTTP/1 only: the header block being received.
    scan: Option<HeaderScan>,
    refusal: Option<Refusal>,
}

impl GuardedStream {
    /// Wraps `inner` (after its TLS handshake); deadlines count from `accepted`.
    pub(crate) fn new(
        inner: Stream,
        key: ConnKey,
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
            timer: Box::pin(tokio::time::sleep_until(accepted.into())),
            scan: (!http2).then(HeaderScan::default),
            refusal: None,
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
        tracing::debug!(client = %self.key.0, "closing connection: {why}");
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)))
    }

    /// Writes the 431 answer, then discards input for a moment before failing the read.
    fn poll_refuse(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.refusal {
                Some(Refusal::Writing(answer, done)) if done < answer.len() => {
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
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for GuardedStream {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for GuardedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for GuardedStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for GuardedStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for GuardedStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for GuardedStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for GuardedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}
