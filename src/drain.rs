//! Graceful stop: on SIGTERM (or SIGQUIT) the listeners stop accepting, connections are told
//! (HTTP/1.1 answers close the connection and idle ones are closed, h2 connections get
//! GOAWAY), and the process exits as soon as the requests in flight have finished and the
//! proxy's connections have closed — after `server.shutdown_grace` at the latest.
//!
//! Pingora's own graceful path sleeps the whole grace period whatever is in flight
//! (`Server::run`, `grace_period_seconds`), so `docker stop` (10 s) would always end in
//! SIGKILL. Here the signal watch itself drains, and Pingora is given a zero grace period.
//! Waiting for connections as well as requests matters on h2: a stream's request ends when
//! its last DATA frame is queued, and the connection task still has to send it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, Notify};

/// Requests in flight and whether the process is draining.
pub struct Drain {
    draining: watch::Sender<bool>,
    in_flight: AtomicUsize,
    /// Open client connections of the listeners the drain waits for.
    connections: AtomicUsize,
    /// Woken when the last request in flight ends.
    idle: Notify,
    /// `server.shutdown_grace`: the longest a drain waits.
    grace: Duration,
}

impl Drain {
    pub fn new(grace: Duration) -> Arc<Drain> {
        Arc::new(Drain {
            draining: watch::Sender::new(false),
            in_flight: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            idle: Notify::new(),
            grace,
        })
    }

    /// Counts a request as in flight until the returned guard is dropped.
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// Counts a client connection as open until the returned guard is dropped.
    pub fn connection(self: &Arc<Self>) -> OpenConnection {
        self.connections.fetch_add(1, Ordering::SeqCst);
        OpenConnection(self.clone())
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Counted connections open now.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// True once a drain has begun: answers should close their connection.
    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Turns true when a drain begins (listeners stop accepting).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.draining.subscribe()
    }

    /// Stops the listeners and waits until no request is in flight and no counted connection
    /// is open, at most the grace period.
    pub async fn drain(&self) {
        self.draining.send_replace(true);
        let deadline = tokio::time::Instant::now() + self.grace;
        loop {
            // Created before the check, so a wake-up between the two is not lost.
            let idle = self.idle.notified();
            let (requests, connections) = (self.in_flight(), self.connections());
            if requests == 0 && connections == 0 {
                tracing::info!("graceful stop: no request in flight, exiting");
                return;
            }
            tracing::info!(
                "graceful stop: waiting for {requests} request(s) in flight on {connections} connection(s)"
            );
            tokio::select! {
                _ = idle => {}
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(
                        "graceful stop: server.shutdown_grace ({:?}) is over with {} request(s) still in flight; exiting",
                        self.grace,
                        self.in_flight()
                    );
                    return;
                }
            }
        }
    }
}

/// One request in flight (see [`Drain::request`]).
pub struct InFlight(Arc<Drain>);

impl InFlight {
    /// Whether the drain has begun (its answer must then close the connection).
    pub fn draining(&self) -> bool {
        self.0.is_draining()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// One open client connection (see [`Drain::connection`]).
pub struct OpenConnection(Arc<Drain>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if self.0.connections.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The process's signals: SIGTERM and SIGQUIT drain and then stop (SIGQUIT is nginx's
/// graceful stop, the STOPSIGNAL of its images; Pingora's listener hand-over does not apply to
/// the edge's own listeners); SIGINT, or a second SIGTERM/SIGQUIT while draining, stops at once.
pub struct SignalWatch(pub Arc<Drain>);

#[async_trait]
impl ShutdownSignalWatch for SignalWatch {
    async fn recv(&self) -> ShutdownSignal {
        let (quit, term, int) = (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        let (Ok(mut quit), Ok(mut term), Ok(mut int)) = (quit, term, int) else {
            tracing::error!("cannot install signal handlers; stopping");
            return ShutdownSignal::FastShutdown;
        };
        let name = tokio::select! {
            _ = int.recv() => return ShutdownSignal::FastShutdown,
            _ = quit.recv() => "SIGQUIT",
            _ = term.recv() => "SIGTERM",
        };
        tracing::info!("{name}: no new connections; finishing requests in flight");
        tokio::select! {
            _ = self.0.drain() => ShutdownSignal::GracefulTerminate,
            // A second signal while draining: stop now.
            _ = int.recv() => ShutdownSignal::FastShutdown,
            _ = term.recv() => ShutdownSignal::FastShutdown,
            _ = quit.recv() => ShutdownSignal::FastShutdown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drain_ends_when_the_last_request_does() {
        let drain = Drain::new(Duration::from_secs(60));
        let request = drain.request();
        let started = tokio::time::Instant::now();
        let waiting = {
            let drain = drain.clone();
            tokio::spawn(async move { drain.drain().await })
        };
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!waiting.is_finished());
        assert!(drain.is_draining());
        drop(request);
        waiting.await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn drain_gives_up_after_the_grace_period() {
        let drain = Drain::new(Duration::from_secs(8));
        let _stuck = drain.request();
        let started = tokio::time::Instant::now();
        drain.drain().await;
        assert_eq!(started.elapsed(), Duration::from_secs(8));
        assert_eq!(drain.in_flight(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_open_connections_too() {
        let drain = Drain::new(Duration::from_secs(60));
        let connection = drain.connection();
        let waiting = {
            let drain = drain.clone();
            tokio::spawn(async move { drain.drain().await })
        };
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            !waiting.is_finished(),
            "no request, but a connection is open"
        );
        drop(connection);
        waiting.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_in_flight_drains_at_once() {
        let drain = Drain::new(Duration::from_secs(8));
        drop(drain.request());
        let started = tokio::time::Instant::now();
        drain.drain().await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
