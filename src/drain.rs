//! Graceful stop: on SIGTERM the listeners stop accepting, requests in flight finish, and the
//! process exits as soon as none is left — after `server.shutdown_grace` at the latest.
//!
//! Pingora's own graceful path sleeps the whole grace period whatever is in flight
//! (`Server::run`, `grace_period_seconds`), so `docker stop` (10 s) would always end in
//! SIGKILL. Here the signal watch itself drains, and Pingora is given a zero grace period.
//! Idle keep-alive connections are not waited for (nginx closes them too).

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
            idle: Notify::new(),
            grace,
        })
    }

    /// Counts a request as in flight until the returned guard is dropped.
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// True once a drain has begun: answers should close their connection.
    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Turns true when a drain begins (listeners stop accepting).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.draining.subscribe()
    }

    /// Stops the listeners and waits until no request is in flight, at most the grace period.
    pub async fn drain(&self) {
        self.draining.send_replace(true);
        let deadline = tokio::time::Instant::now() + self.grace;
        loop {
            // Created before the check, so a wake-up between the two is not lost.
            let idle = self.idle.notified();
            let left = self.in_flight();
            if left == 0 {
                tracing::info!("graceful stop: no request in flight, exiting");
                return;
            }
            tracing::info!("graceful stop: waiting for {left} request(s) in flight");
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

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The process's signals: SIGTERM drains and then stops, SIGINT stops at once, SIGQUIT is
/// Pingora's graceful upgrade (its listener hand-over).
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
        tokio::select! {
            _ = quit.recv() => ShutdownSignal::GracefulUpgrade,
            _ = int.recv() => ShutdownSignal::FastShutdown,
            _ = term.recv() => {
                tracing::info!("SIGTERM: no new connections; finishing requests in flight");
                tokio::select! {
                    _ = self.0.drain() => {}
                    // A second signal while draining: stop now.
                    _ = int.recv() => return ShutdownSignal::FastShutdown,
                }
                ShutdownSignal::GracefulTerminate
            }
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
    async fn nothing_in_flight_drains_at_once() {
        let drain = Drain::new(Duration::from_secs(8));
        drop(drain.request());
        let started = tokio::time::Instant::now();
        drain.drain().await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
