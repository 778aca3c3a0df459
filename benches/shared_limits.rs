//! Push-start admission latency: the in-memory limiter against the same limit kept in
//! Redis (`shared_state.redis`, a real `redis-server` on loopback), one after the other
//! in the same run. Prints p50 and p99 of each and their ratio.
//!
//! Run: `cargo bench --bench shared_limits` (20,000 admissions each). Under `cargo test
//! --benches` it runs 500 of each as a smoke test.

use std::collections::HashSet;
use std::net::TcpStream;
use std::num::NonZeroU32;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use registry_edge::config::{LimitKey, PushLimit};
use registry_edge::config::{OnUnavailable, RedisSettings};
use registry_edge::limits::{Admission, PushLimiter};
use registry_edge::shared_state::SharedState;

struct RedisServer(Child);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis(dir: &std::path::Path) -> (RedisServer, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed (scripts/install-deps)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (RedisServer(child), port)
}

fn limit() -> PushLimit {
    PushLimit {
        key: LimitKey::Account,
        per_minute: NonZeroU32::MAX,
        burst: NonZeroU32::MAX,
        exempt_accounts: HashSet::new(),
    }
}

/// Latencies of `n` admissions, sorted.
async fn measure(limiter: &PushLimiter, n: usize) -> Vec<Duration> {
    let mut took = Vec::with_capacity(n);
    for i in 0..n {
        let account = format!("user-{}", i % 100);
        let started = Instant::now();
        let admission = limiter.admit(Some(&account), "127.0.0.1").await;
        took.push(started.elapsed());
        assert!(
            matches!(admission, Admission::Admitted { .. }),
            "{admission:?}"
        );
    }
    took.sort();
    took
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 20_000 } else { 500 };
    let dir = tempfile::tempdir().unwrap();
    let (_redis, port) = start_redis(dir.path());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let local = PushLimiter::new(limit(), None);
        let shared = SharedState::new(RedisSettings {
            url: format!("redis://127.0.0.1:{port}/0"),
            key_prefix: "bench:".into(),
            timeout: Duration::from_secs(1),
            on_unavailable: OnUnavailable::Deny,
        })
        .unwrap();
        let in_redis = PushLimiter::new(limit(), Some(shared.clone()));
        // Warm-up: connection, script load (EVALSHA then SCRIPT LOAD once), caches.
        measure(&in_redis, 200).await;
        measure(&local, 200).await;
        let local = measure(&local, n).await;
        let redis = measure(&in_redis, n).await;
        assert!(shared.is_up(), "Redis answered every admission");
        let (l50, l99) = (percentile(&local, 0.5), percentile(&local, 0.99));
        let (r50, r99) = (percentile(&redis, 0.5), percentile(&redis, 0.99));
        println!("push-start admission latency, {n} admissions each, same run:");
        println!("  in-memory (governor): p50 {l50:?}  p99 {l99:?}");
        println!("  Redis (EVALSHA, loopback): p50 {r50:?}  p99 {r99:?}");
        println!(
            "  Redis / in-memory: p50 {:.0}x  p99 {:.0}x",
            r50.as_secs_f64() / l50.as_secs_f64().max(1e-9),
            r99.as_secs_f64() / l99.as_secs_f64().max(1e-9)
        );
    });
}
