//! Per-connection deadlines and header limits that Pingora does not enforce itself.
//!
//! Pingora times out each *read*, not a whole phase: a client trickling one header byte
//! every 59 s (slowloris) holds a connection forever, and an HTTP/2 request body has no
//! read timeout at all. [`GuardedStream`] wraps every accepted connection (outside TLS,
//! so it sees plain HTTP) and fails its reads once the current phase's deadline passes:
//!
//! - headers: from accept (or from the first byte after an idle period) until the proxy
//!   has parsed the request (`server.header_timeout`); an HTTP/1 header block over
//!   [`MAX_HEADER_LINES`] lines or [`MAX_HEADER_BYTES`] is answered 431 right here;
//! - idle: after an HTTP/1 response, until the next request starts (`server.idle_timeout`);
//! - HTTP/2: while any stream's request body has made no progress for `server.body_timeout`
//!   (the whole connection is closed: the stalled stream cannot be reached from here).
//!
//! HTTP/1 bodies use Pingora's own per-read timeout, set by the proxy. The proxy reaches a
//! connection's [`ConnWatch`] through [`watch_for`], keyed by the connection's address pair
//! (unique among open TCP connections), to say which phase the connection is in.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::task::AtomicWaker;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::config::ClientTimeouts;
use crate::error::RegistryError;

/// Header fields allowed in one request (the request line not counted).
pub const MAX_HEADER_LINES: usize = 100;
/// Bytes allowed in one request's header block, request line included.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// After answering 431, read and discard what the client still sends for this long, so
/// closing does not reset the connection before the client has read the answer.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

const HEADERS: u8 = 0;
const BUSY: u8 = 1;
const IDLE: u8 = 2;
const H2: u8 = 3;

/// (client, local) address of a connection.
pub type ConnKey = (SocketAddr, SocketAddr);

const SHARDS: usize = 16;
type Shard = Mutex<HashMap<ConnKey, Arc<ConnWatch>>>;
static WATCHES: LazyLock<[Shard; SHARDS]> =
    LazyLock::new(|| std::array::from_fn(|_| Mutex::new(HashMap::new())));

fn shard(key: &ConnKey) -> &'static Shard {
    &WATCHES[usize::from(key.0.port()) % SHARDS]
}

/// The watch of the open connection between `client` and `local`, if it is guarded.
pub fn watch_for(client: SocketAddr, local: SocketAddr) -> Option<Arc<ConnWatch>> {
    let key = (client, local);
    shard(&key)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .cloned()
}

/// What the proxy tells a connection about the request it is handling.
pub struct ConnWatch {
    timeouts: ClientTimeouts,
    origin: Instant,
    phase: AtomicU8,
    /// End of the current headers or idle phase, in nanoseconds after `origin`.
    deadline: AtomicU64,
    /// HTTP/2 request bodies being received: id → last progress (ns after `origin`).
    bodies: Mutex<HashMap<u64, u64>>,
    next_body: AtomicU64,
    /// The reader of an HTTP/2 connection, woken when a body starts so it arms its timer.
    reader: AtomicWaker,
}

impl ConnWatch {
    fn new(timeouts: ClientTimeouts, accepted: Instant) -> ConnWatch {
        ConnWatch {
            timeouts,
            origin: accepted,
            phase: AtomicU8::new(HEADERS),
            deadline: AtomicU64::new(nanos(timeouts.header)),
            bodies: Mutex::new(HashMap::new()),
            next_body: AtomicU64::new(0),
            reader: AtomicWaker::new(),
        }
    }

    fn now(&self) -> u64 {
        nanos(self.origin.elapsed())
    }

    fn phase(&self) -> u8 {
        self.phase.load(Ordering::Acquire)
    }

    /// The request headers are parsed; from here the body and upstream timeouts apply.
    pub fn request_started(&self, http2: bool) {
        self.phase
            .store(if http2 { H2 } else { BUSY }, Ordering::Release);
    }

    /// An HTTP/1 response is complete: the connection idles until the next request.
    pub fn request_finished(&self) {
        if self.phase() == BUSY {
            self.deadline
                .store(self.now() + nanos(self.timeouts.idle), Ordering::Relaxed);
            self.phase.store(IDLE, Ordering::Release);
        }
    }

    /// Bytes arrived; an idle connection starts its next request's header deadline.
    /// True when that happened.
    fn input_arrived(&self) -> bool {
        if self.phase() != IDLE {
            return false;
        }
        self.deadline
            .store(self.now() + nanos(self.timeouts.header), Ordering::Relaxed);
        self.phase.store(HEADERS, Ordering::Release);
        true
    }

    /// An HTTP/2 request body starts; the connection closes if it stalls.
    pub fn body_started(self: &Arc<Self>) -> BodyProgress {
        let id = self.next_body.fetch_add(1, Ordering::Relaxed);
        self.lock_bodies().insert(id, self.now());
        // The reader may be parked without a timer: let it arm one.
        self.reader.wake();
        BodyProgress {
            watch: self.clone(),
            id,
        }
    }

    fn lock_bodies(&self) -> std::sync::MutexGuard<'_, HashMap<u64, u64>> {
        self.bodies.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When reads must fail unless something changes, and why.
    fn deadline(&self) -> Option<(Instant, &'static str)> {
        let at = |ns: u64| self.origin + Duration::from_nanos(ns);
        match self.phase() {
            HEADERS => Some((
                at(self.deadline.load(Ordering::Relaxed)),
                "request headers not received within server.header_timeout",
            )),
            IDLE => Some((
                at(self.deadline.load(Ordering::Relaxed)),
                "connection idle for server.idle_timeout",
            )),
            H2 => self.lock_bodies().values().min().map(|&last| {
                (
                    at(last + nanos(self.timeouts.body)),
                    "request body stalled for server.body_timeout",
                )
            }),
            _ => None,
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX / 4)
}

/// One HTTP/2 request body in progress; dropping it ends the watch.
pub struct BodyProgress {
    watch: Arc<ConnWatch>,
    id: u64,
}

impl BodyProgress {
    /// Part of the body arrived (or was released by the upload throttle).
    pub fn touch(&self) {
        let now = self.watch.now();
        self.watch.lock_bodies().insert(self.id, now);
    }
}

impl Drop for BodyProgress {
    fn drop(&mut self) {
        self.watch.lock_bodies().remove(&self.id);
    }
}

/// Counts the lines and bytes of an HTTP/1 header block as it arrives.
#[derive(Default)]
struct HeaderScan {
    lines: usize,
    bytes: usize,
    line_len: usize,
    done: bool,
    /// The block's first bytes, enough to tell a HEAD request (answered without a body).
    start: [u8; 5],
}

impl HeaderScan {
    /// Whether the block is still within [`MAX_HEADER_LINES`] and [`MAX_HEADER_BYTES`].
    fn within_limits(&mut self, data: &[u8]) -> bool {
        for &b in data {
            if self.done {
                return true;
            }
            if let Some(slot) = self.start.get_mut(self.bytes) {
                *slot = b;
            }
            self.bytes += 1;
            match b {
                b'\n' if self.line_len == 0 => self.done = self.lines > 0,
                b'\n' => {
                    self.lines += 1;
                    self.line_len = 0;
                }
                b'\r' => {}
                _ => self.line_len += 1,
            }
            if self.bytes > MAX_HEADER_BYTES || self.lines > MAX_HEADER_LINES + 1 {
                return false;
            }
        }
        true
    }
}

impl HeaderScan {
    /// Whether the request being scanned is a HEAD (RFC 9110 §9.3.2: no body in the answer).
    fn is_head(&self) -> bool {
        &self.start == b"HEAD "
    }
}

/// The raw HTTP/1 431 answer to a HEAD request: [`REFUSAL`]'s header block alone.
static REFUSAL_TO_HEAD: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let end = REFUSAL
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(REFUSAL.len(), |at| at + 4);
    REFUSAL[..end].to_vec()
});

/// The raw HTTP/1 431 answer, in the registry's error format.
static REFUSAL: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let error = RegistryError::HeadersTooLarge {
        max_headers: MAX_HEADER_LINES,
        max_bytes: MAX_HEADER_BYTES,
    };
    let body = error.body();
    let mut answer = format!(
        "HTTP/1.1 431 Request Header Fields Too Large\r\n\
         Content-Type: application/json\r\n\
         Docker-Distribution-Api-Version: registry/2.0\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    answer
});

enum Refusal {
    /// Bytes of the answer (`REFUSAL` or `REFUSAL_TO_HEAD`) written so far.
    Writing(&'static [u8], usize),
    Draining,
}

/// An accepted connection with the deadlines above; registered while it is open.
pub struct GuardedStream {
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
    pub fn new(
        inner: Stream,
        key: ConnKey,
        timeouts: ClientTimeouts,
        accepted: Instant,
    ) -> GuardedStream {
        let watch = Arc::new(ConnWatch::new(timeouts, accepted));
        shard(&key)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, watch.clone());
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
        if self.watch.phase() == H2 {
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
        shard(&self.key)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
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
                let over = this.watch.phase() == HEADERS
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> bool {
        let mut scan = HeaderScan::default();
        chunks.iter().all(|c| scan.within_limits(c))
    }

    #[test]
    fn header_scan_counts_lines_across_reads_and_stops_at_the_blank_line() {
        assert!(scan(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]));
        let many: String = (0..MAX_HEADER_LINES)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect();
        let request = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(scan(&[request.as_bytes()]));
        let (a, b) = request.as_bytes().split_at(17);
        assert!(scan(&[a, b]));
        let too_many = format!("GET / HTTP/1.1\r\n{many}X-last: v\r\n\r\n");
        assert!(!scan(&[too_many.as_bytes()]));
        // What follows the header block is a body, not headers.
        let body = "x\n".repeat(MAX_HEADER_BYTES);
        assert!(scan(&[request.as_bytes(), body.as_bytes()]));
        let big = format!(
            "GET / HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEADER_BYTES)
        );
        assert!(!scan(&[big.as_bytes()]));
    }

    #[test]
    fn refusal_is_a_complete_http_answer() {
        let text = String::from_utf8(REFUSAL.clone()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert!(body.contains("\"errors\""));
        // To HEAD: the same header block (Content-Length included), no body.
        let to_head = String::from_utf8(REFUSAL_TO_HEAD.clone()).unwrap();
        assert_eq!(to_head, format!("{head}\r\n\r\n"));
    }

    #[test]
    fn scan_tells_head_requests() {
        let mut scan = HeaderScan::default();
        assert!(scan.within_limits(b"HE"));
        assert!(scan.within_limits(b"AD / HTTP/1.1\r\n"));
        assert!(scan.is_head());
        let mut scan = HeaderScan::default();
        assert!(scan.within_limits(b"HEADX / HTTP/1.1\r\n"));
        assert!(!scan.is_head());
        let mut scan = HeaderScan::default();
        assert!(scan.within_limits(b"GET / HTTP/1.1\r\n"));
        assert!(!scan.is_head());
    }
}
