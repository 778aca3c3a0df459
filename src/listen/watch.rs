//! Which phase each guarded connection is in, and when its current deadline passes.
//!
//! The proxy reaches a connection's [`ConnWatch`] through [`watch_for`] to say that a
//! request started or finished, or that an HTTP/2 body is arriving; the connection's stream
//! (`stream`) reads the deadline from it.
//!
//! The key is the accepted connection itself ([`ConnKey::of`]), not its addresses: behind
//! a PROXY-protocol balancer the client address is only what the balancer declares, and two
//! connections may declare the same one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;
use pingora::protocols::SocketDigest;

use crate::config::ClientTimeouts;

/// Which part of its life a connection is in (receiving headers, serving an HTTP/1
/// request, idling between requests, or h2); each part has its own deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Phase {
    /// Receiving a request's headers (`server.header_timeout`).
    Headers = 0,
    /// An HTTP/1 request is being proxied: Pingora's per-read timeouts apply.
    Busy = 1,
    /// Between HTTP/1 requests (`server.idle_timeout`).
    Idle = 2,
    /// HTTP/2: only stalled request bodies (`server.body_timeout`) close it.
    H2 = 3,
}

impl Phase {
    fn from_u8(value: u8) -> Phase {
        match value {
            0 => Phase::Headers,
            1 => Phase::Busy,
            2 => Phase::Idle,
            _ => Phase::H2,
        }
    }
}

/// One accepted connection: the address of its [`SocketDigest`], which the accept loop
/// makes once per connection and which the connection's stream and every request on it
/// share (h1 and h2 alike) until the connection closes. No two open connections have the
/// same key, whatever addresses they have or declare; the watch is unregistered before the
/// digest can be freed and its address reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ConnKey(usize);

impl ConnKey {
    /// The key of the connection `digest` belongs to.
    pub(crate) fn of(digest: &Arc<SocketDigest>) -> ConnKey {
        ConnKey(Arc::as_ptr(digest) as usize)
    }
}

const SHARDS: usize = 16;
type Shard = Mutex<HashMap<ConnKey, Arc<ConnWatch>>>;
static WATCHES: LazyLock<[Shard; SHARDS]> =
    LazyLock::new(|| std::array::from_fn(|_| Mutex::new(HashMap::new())));

fn shard(key: &ConnKey) -> &'static Shard {
    // Allocations are aligned: the low bits say nothing.
    &WATCHES[(key.0 >> 6) % SHARDS]
}

/// The watch of the open connection `digest` belongs to, if it is guarded.
pub(crate) fn watch_for(digest: &Arc<SocketDigest>) -> Option<Arc<ConnWatch>> {
    let key = ConnKey::of(digest);
    shard(&key)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .cloned()
}

/// Registers the watch of a newly accepted connection.
pub(super) fn register(key: ConnKey, watch: Arc<ConnWatch>) {
    shard(&key)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, watch);
}

/// Forgets a connection's watch; called before its socket closes, so the key cannot be
/// reused meanwhile.
pub(super) fn unregister(key: &ConnKey) {
    shard(key)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(key);
}

/// What the proxy tells a connection about the request it is handling.
pub(crate) struct ConnWatch {
    timeouts: ClientTimeouts,
    origin: Instant,
    /// A [`Phase`] as `u8`, shared with the proxy's threads.
    phase: AtomicU8,
    /// End of the current headers or idle phase, in nanoseconds after `origin`.
    deadline: AtomicU64,
    /// HTTP/2 request bodies being received: id → last progress (ns after `origin`).
    bodies: Mutex<HashMap<u64, u64>>,
    next_body: AtomicU64,
    /// The reader of an HTTP/2 connection, woken when a body starts so it arms its timer.
    pub(super) reader: AtomicWaker,
}

impl ConnWatch {
    pub(super) fn new(timeouts: ClientTimeouts, accepted: Instant) -> ConnWatch {
        ConnWatch {
            timeouts,
            origin: accepted,
            phase: AtomicU8::new(Phase::Headers as u8),
            deadline: AtomicU64::new(nanos(timeouts.header)),
            bodies: Mutex::new(HashMap::new()),
            next_body: AtomicU64::new(0),
            reader: AtomicWaker::new(),
        }
    }

    fn now(&self) -> u64 {
        nanos(self.origin.elapsed())
    }

    pub(super) fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// The request headers are parsed; from here the body and upstream timeouts apply.
    pub(crate) fn request_started(&self, http2: bool) {
        self.set_phase(if http2 { Phase::H2 } else { Phase::Busy });
    }

    /// An HTTP/1 response is complete: the connection idles until the next request.
    pub(crate) fn request_finished(&self) {
        if self.phase() == Phase::Busy {
            self.deadline
                .store(self.now() + nanos(self.timeouts.idle), Ordering::Relaxed);
            self.set_phase(Phase::Idle);
        }
    }

    /// Bytes arrived; an idle connection starts its next request's header deadline.
    /// True when that happened.
    pub(super) fn input_arrived(&self) -> bool {
        if self.phase() != Phase::Idle {
            return false;
        }
        self.deadline
            .store(self.now() + nanos(self.timeouts.header), Ordering::Relaxed);
        self.set_phase(Phase::Headers);
        true
    }

    /// An HTTP/2 request body starts; the connection closes if it stalls.
    pub(crate) fn body_started(self: &Arc<Self>) -> BodyProgress {
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
    pub(super) fn deadline(&self) -> Option<(Instant, &'static str)> {
        let at = |ns: u64| self.origin + Duration::from_nanos(ns);
        match self.phase() {
            Phase::Headers => Some((
                at(self.deadline.load(Ordering::Relaxed)),
                "request headers not received within server.header_timeout",
            )),
            Phase::Idle => Some((
                at(self.deadline.load(Ordering::Relaxed)),
                "connection idle for server.idle_timeout",
            )),
            Phase::H2 => self.lock_bodies().values().min().map(|&last| {
                (
                    at(last + nanos(self.timeouts.body)),
                    "request body stalled for server.body_timeout",
                )
            }),
            Phase::Busy => None,
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX / 4)
}

/// One HTTP/2 request body in progress; dropping it ends the watch.
pub(crate) struct BodyProgress {
    watch: Arc<ConnWatch>,
    id: u64,
}

impl BodyProgress {
    /// Part of the body arrived (or was released by the upload throttle).
    pub(crate) fn touch(&self) {
        let now = self.watch.now();
        self.watch.lock_bodies().insert(self.id, now);
    }
}

impl Drop for BodyProgress {
    fn drop(&mut self) {
        self.watch.lock_bodies().remove(&self.id);
    }
}
