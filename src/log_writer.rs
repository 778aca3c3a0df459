//! Where log lines go: standard output, with access lines buffered per thread.
//!
//! An access line per request is the edge's most frequent write. Handing each one to a
//! writer thread cost a channel send and a wake-up per request (a third runnable thread on
//! two cores); writing each one directly would cost a `write` per request. Instead, as
//! nginx's `access_log … buffer=64k flush=1s`, access lines (`registry_edge::access`) are
//! appended to a buffer of the worker thread that formatted them and written out when it
//! passes [`FLUSH_BYTES`] or at the latest after the flush interval (`REGISTRY_EDGE_LOG_FLUSH`,
//! default 1s; `0s` writes every line at once). Every other line is written at once, after
//! the buffered access lines, so the log keeps its order around warnings and errors. Nothing
//! is lost on a graceful stop: dropping the [`FlushGuard`] writes what is buffered. A
//! `SIGKILL` loses at most one interval of access lines, as with nginx.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// A thread's buffer is written out once it holds this many bytes.
pub const FLUSH_BYTES: usize = 64 * 1024;

/// The `tracing` target of access lines.
const ACCESS_TARGET: &str = "registry_edge::access";

/// Buffers, one per worker thread (by a thread-local index).
const SHARDS: usize = 32;

struct Shared {
    shards: Box<[Mutex<Vec<u8>>]>,
    /// Unbuffered (`Duration::ZERO`): every line is written at once.
    buffered: bool,
}

impl Shared {
    /// Writes `bytes` to standard output; errors are dropped (a log write must never fail a
    /// request, and there is nowhere left to report it).
    fn emit(bytes: &[u8]) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(bytes);
        let _ = out.flush();
    }

    /// Writes out one shard, keeping it locked so its lines stay in order.
    fn flush_shard(shard: &Mutex<Vec<u8>>) {
        let mut buffer = shard.lock().unwrap_or_else(|e| e.into_inner());
        if !buffer.is_empty() {
            Shared::emit(&buffer);
            buffer.clear();
        }
    }

    fn flush_all(&self) {
        self.shards.iter().for_each(Shared::flush_shard);
    }
}

/// The `MakeWriter` for the `tracing` subscriber.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

/// Writes what is buffered when dropped, and stops the thread that flushes every interval.
pub struct FlushGuard {
    shared: Arc<Shared>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl LogWriter {
    /// A writer flushing access lines every `interval` (zero: unbuffered), and its guard.
    pub fn start(interval: Duration) -> (LogWriter, FlushGuard) {
        let shared = Arc::new(Shared {
            shards: (0..SHARDS).map(|_| Mutex::new(Vec::new())).collect(),
            buffered: !interval.is_zero(),
        });
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let thread = shared.buffered.then(|| {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::Builder::new()
                .name("log-flush".into())
                .spawn(move || {
                    let (lock, wake) = &*stop;
                    let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
                    while !*stopped {
                        stopped = match wake.wait_timeout(stopped, interval) {
                            Ok((guard, _)) => guard,
                            Err(e) => e.into_inner().0,
                        };
                        shared.flush_all();
                    }
                })
                .ok()
        });
        let guard = FlushGuard {
            shared: shared.clone(),
            stop,
            thread: thread.flatten(),
        };
        (LogWriter { shared }, guard)
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        let (lock, wake) = &*self.stop;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.shared.flush_all();
    }
}

thread_local! {
    /// This thread's shard.
    static SHARD: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS
    };
}

/// One event's writer: the thread's buffer (access lines) or standard output at once.
pub struct EventWriter<'a> {
    shared: &'a Shared,
    access: bool,
}

impl Write for EventWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if !(self.access && self.shared.buffered) {
            // What was buffered goes first, so a warning follows the requests before it.
            self.shared.flush_all();
            Shared::emit(bytes);
            return Ok(bytes.len());
        }
        let shard = &self.shared.shards[SHARD.with(|s| *s)];
        let mut buffer = shard.lock().unwrap_or_else(|e| e.into_inner());
        buffer.extend_from_slice(bytes);
        if buffer.len() >= FLUSH_BYTES {
            Shared::emit(&buffer);
            buffer.clear();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = EventWriter<'a>;

    fn make_writer(&'a self) -> EventWriter<'a> {
        EventWriter {
            shared: &self.shared,
            access: false,
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> EventWriter<'a> {
        EventWriter {
            shared: &self.shared,
            access: meta.target() == ACCESS_TARGET,
        }
    }
}
