//! The edge's listeners: its own accept loop in place of Pingora's, so that every
//! connection is wrapped in a [`stream::GuardedStream`] (deadlines, header limits) before
//! Pingora's HTTP code reads from it. Pingora's listener offers no hook for that.
//!
//! - `stream`: the wrapper; fails reads past the current phase's deadline.
//! - `watch`: each open connection's phase and deadline, keyed by the accepted connection.
//! - `header_limit`: HTTP/1 header lines and bytes counted as they arrive; the raw 431.
//! - `proxy_protocol`: PROXY v1/v2 headers from trusted load balancers.
//! - `raw_answer`: answers written below Pingora (the 431, Pingora's own 400/405 as JSON).
//! - `read_buffer`: a read buffer under TLS while data arrives in bulk.
//! - `digests`: `delegate_digests!`, the connection details both wrappers pass through.

// First: the wrappers below use its macro.
#[macro_use]
mod digests;
pub(crate) mod header_limit;
pub(crate) mod proxy_protocol;
mod raw_answer;
pub(crate) mod read_buffer;
pub(crate) mod stream;
pub(crate) mod watch;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::listeners::tls::Acceptor;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::tls::ALPN;
use pingora::protocols::{GetSocketDigest, SocketDigest, Ssl, Stream};
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::Service;
use tokio::net::{TcpListener, TcpStream};

use crate::drain::Drain;
use crate::settings::SharedSettings;
use crate::tls::ACME_TLS_ALPN;
use read_buffer::ReadBuffered;
use stream::GuardedStream;

/// Connections waiting to be accepted per listener (as Pingora's own listeners).
const BACKLOG: i32 = 65535;

/// Binds `addr` now, so a busy port fails the start with a clear message.
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<StdListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// A Pingora service that accepts on bound sockets and hands guarded streams to `app`.
pub(crate) struct EdgeListener<A> {
    name: String,
    listeners: Vec<StdListener>,
    tls: Option<Arc<Acceptor>>,
    app: Option<A>,
    settings: SharedSettings,
    proxy_protocol: bool,
    /// Pingora's own refusals as JSON ([`GuardedStream::with_json_refusals`]).
    json_refusals: bool,
    drain: Option<Arc<Drain>>,
    /// The drain waits for this listener's connections to close, not only its requests.
    drain_waits_for_connections: bool,
}

impl<A> EdgeListener<A> {
    /// `tls`: terminate TLS with this acceptor; `None` for plain HTTP.
    pub(crate) fn new(
        name: &str,
        listeners: Vec<StdListener>,
        tls: Option<Acceptor>,
        app: A,
        settings: SharedSettings,
    ) -> Self {
        EdgeListener {
            name: name.to_string(),
            listeners,
            tls: tls.map(Arc::new),
            app: Some(app),
            settings,
            proxy_protocol: false,
            json_refusals: false,
            drain: None,
            drain_waits_for_connections: false,
        }
    }

    /// Stop accepting when `drain` begins (SIGTERM), and tell connections so: HTTP/1.1 turns
    /// keep-alive off and idle connections close, h2 connections get GOAWAY. With
    /// `wait_for_connections`, the drain also waits until this listener's connections have
    /// closed (so an h2 response still queued in its connection is sent); only for listeners
    /// whose idle connections close on a drain (the proxy's: Pingora's `http_cleanup`).
    pub(crate) fn with_drain(mut self, drain: Arc<Drain>, wait_for_connections: bool) -> Self {
        self.drain = Some(drain);
        self.drain_waits_for_connections = wait_for_connections;
        self
    }

    /// Expect a PROXY protocol header before anything else on every connection.
    pub(crate) fn with_proxy_protocol(mut self, on: bool) -> Self {
        self.proxy_protocol = on;
        self
    }

    /// Answer the requests Pingora refuses before the app sees them in the registry's JSON
    /// format (the proxy's listeners).
    pub(crate) fn with_json_refusals(mut self) -> Self {
        self.json_refusals = true;
        self
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> Service for EdgeListener<A> {
    async fn start_service(
        &mut self,
        _fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
    ) {
        let app = Arc::new(self.app.take().expect("a listener service starts once"));
        let mut loops = Vec::new();
        for listener in self.listeners.drain(..) {
            let address = listener
                .local_addr()
                .map_or_else(|_| "?".to_string(), |a| a.to_string());
            tracing::info!(
                listener = %self.name,
                address = %address,
                tls = self.tls.is_some(),
                proxy_protocol = self.proxy_protocol,
                "listening on {address} ({}{})",
                if self.tls.is_some() { "TLS" } else { "plain HTTP" },
                if self.proxy_protocol { ", PROXY protocol" } else { "" },
            );
            let listener = match TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!("{}: cannot use listening socket: {e}", self.name);
                    continue;
                }
            };
            // With a drain, its start is the shutdown signal the accept loop and Pingora's
            // connection handling see (it comes before Pingora's own, which follows the drain).
            let shutdown = self
                .drain
                .as_ref()
                .map_or(shutdown.clone(), |d| d.subscribe());
            let connection = Connection {
                app: app.clone(),
                tls: self.tls.clone(),
                settings: self.settings.clone(),
                shutdown,
                proxy_protocol: self.proxy_protocol,
                json_refusals: self.json_refusals,
                counted_by: self
                    .drain
                    .clone()
                    .filter(|_| self.drain_waits_for_connections),
            };
            loops.push(tokio::spawn(accept_loop(listener, connection)));
        }
        futures::future::join_all(loops).await;
        app.cleanup().await;
    }

    fn name(&self) -> &str {
        &self.name
    }
}

async fn accept_loop<A: ServerApp + Send + Sync + 'static>(
    listener: TcpListener,
    connection: Connection<A>,
) {
    let mut shutdown = connection.shutdown.clone();
    loop {
        // Returning drops the listening socket: new connections are refused at once.
        if *shutdown.borrow() {
            return;
        }
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
                continue;
            }
        };
        match accepted {
            Ok((tcp, client)) => {
                tokio::spawn(connection.clone().serve(tcp, client));
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                // Out of file descriptors: accept() fails at once until some are freed.
                if e.raw_os_error() == Some(libc::EMFILE) || e.raw_os_error() == Some(libc::ENFILE)
                {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
        }
    }
}

struct Connection<A> {
    app: Arc<A>,
    tls: Option<Arc<Acceptor>>,
    settings: SharedSettings,
    shutdown: ShutdownWatch,
    proxy_protocol: bool,
    json_refusals: bool,
    /// Counts this connection as open for the drain.
    counted_by: Option<Arc<Drain>>,
}

impl<A> Clone for Connection<A> {
    fn clone(&self) -> Self {
        Connection {
            app: self.app.clone(),
            tls: self.tls.clone(),
            settings: self.settings.clone(),
            shutdown: self.shutdown.clone(),
            proxy_protocol: self.proxy_protocol,
            json_refusals: self.json_refusals,
            counted_by: self.counted_by.clone(),
        }
    }
}

impl<A: ServerApp + Send + Sync + 'static> Connection<A> {
    async fn serve(self, mut tcp: TcpStream, peer: SocketAddr) {
        let _open = self.counted_by.as_ref().map(|drain| drain.connection());
        let accepted = Instant::now();
        let timeouts = self.settings.load().client_timeouts;
        let deadline = accepted + timeouts.header;
        let Ok(local) = tcp.local_addr() else { return };
        let (client, rest) = match self.proxy_protocol {
            true => match self.proxy_header(&mut tcp, peer, deadline).await {
                Some(found) => found,
                None => return,
            },
            false => (peer, Vec::new()),
        };
        let l4 = l4_stream(tcp, client, local, &rest);
        let Some(key) = l4.get_socket_digest().map(|d| watch::ConnKey::of(&d)) else {
            return;
        };
        let stream: Stream = match &self.tls {
            None => Box::new(l4),
            Some(acceptor) => match tls_handshake(acceptor, l4, client, deadline).await {
                Some(tls) => tls,
                None => return,
            },
        };
        let mut guarded = GuardedStream::new(stream, (key, client), timeouts, accepted);
        if self.json_refusals {
            guarded = guarded.with_json_refusals();
        }
        let guarded: Stream = Box::new(guarded);
        let mut next = self.app.process_new(guarded, &self.shutdown).await;
        while let Some(stream) = next {
            next = self.app.process_new(stream, &self.shutdown).await;
        }
    }

    /// The client a trusted balancer's PROXY header names, and the bytes read after the
    /// header; `None` (connection refused, counted and logged) for anything else.
    async fn proxy_header(
        &self,
        tcp: &mut TcpStream,
        peer: SocketAddr,
        deadline: Instant,
    ) -> Option<(SocketAddr, Vec<u8>)> {
        let refused = &crate::metrics::metrics().proxy_protocol_refused;
        match tokio::time::timeout_at(deadline.into(), proxy_protocol::read_header(tcp)).await {
            // Only a configured balancer may say who the client is: anyone else who
            // reaches the listener could claim any address and slip past per-IP limits.
            Ok(Ok(header)) if !self.settings.load().forwarded.is_trusted(peer.ip()) => {
                refused.with_label_values(&["untrusted_peer"]).inc();
                let claimed = header.client.map_or("-".to_string(), |c| c.to_string());
                tracing::warn!(
                    "refused connection from {peer}: a PROXY header (claiming {claimed}) from \
                     a peer outside forwarded.trusted_proxies"
                );
                None
            }
            Ok(Ok(header)) => Some((header.client.unwrap_or(peer), header.rest)),
            Ok(Err(e)) => {
                refused.with_label_values(&["invalid_header"]).inc();
                tracing::info!("refused connection from {peer}: {e}");
                None
            }
            Err(_) => {
                refused.with_label_values(&["timeout"]).inc();
                tracing::info!("refused connection from {peer}: no PROXY header in time");
                None
            }
        }
    }
}

/// Pingora's stream over `tcp`, its digest naming `client` (the PROXY header's, or the
/// peer) and `rest` (what the balancer sent after the header) put back to be read first.
fn l4_stream(tcp: TcpStream, client: SocketAddr, local: SocketAddr, rest: &[u8]) -> L4Stream {
    let mut l4 = L4Stream::from(tcp);
    if !rest.is_empty() {
        l4.rewind(rest);
    }
    if let Err(e) = l4.set_nodelay() {
        tracing::debug!("TCP_NODELAY for {client}: {e}");
    }
    let digest = SocketDigest::from_raw_fd(std::os::fd::AsRawFd::as_raw_fd(&l4));
    let _ = digest.peer_addr.set(Some(client.into()));
    let _ = digest.local_addr.set(Some(local.into()));
    l4.set_socket_digest(digest);
    l4
}

/// The TLS stream once the handshake is done by `deadline` (`server.header_timeout`);
/// `None` when it failed, timed out, or was an ACME tls-alpn-01 validation (which ends
/// with the handshake, RFC 8737 §3).
async fn tls_handshake(
    acceptor: &Acceptor,
    l4: L4Stream,
    client: SocketAddr,
    deadline: Instant,
) -> Option<Stream> {
    let handshakes = &crate::metrics::metrics().tls_handshakes;
    let handshake = acceptor.tls_handshake(ReadBuffered::new(l4));
    match tokio::time::timeout_at(deadline.into(), handshake).await {
        Ok(Ok(tls)) => {
            handshakes.with_label_values(&["ok"]).inc();
            if is_acme_validation(&tls) {
                tracing::info!("answered an ACME tls-alpn-01 validation from {client}");
                return None;
            }
            Some(Box::new(tls))
        }
        Ok(Err(e)) => {
            handshakes.with_label_values(&["failed"]).inc();
            tracing::debug!("TLS handshake with {client} failed: {e}");
            None
        }
        Err(_) => {
            handshakes.with_label_values(&["timeout"]).inc();
            tracing::debug!("TLS handshake with {client}: server.header_timeout");
            None
        }
    }
}

fn is_acme_validation(tls: &impl Ssl) -> bool {
    matches!(tls.selected_alpn_proto(), Some(ALPN::Custom(p)) if p.protocol() == ACME_TLS_ALPN)
}
