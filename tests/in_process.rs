//! The in-process tier: the gateway built by the library's own `load::load_all` and
//! `server::build` (what `registry-edge run` calls), run on a thread of the test process in
//! front of an ad-hoc origin on 127.0.0.1:0 (Pingora's `pingora-proxy/tests/test_upstream.rs`
//! pattern). No binary is spawned; the server stops through Pingora's `ShutdownSignalWatch`
//! when its handle drops. Real clients (curl) still talk to it over loopback TLS.

mod common;

use std::path::Path;
use std::thread::JoinHandle;
use std::time::Duration;

use common::echo::EchoUpstream;
use common::{curl, free_port, make_certs, upstream_yaml, wait_for, Certs};
use pingora::server::{RunArgs, ShutdownSignal, ShutdownSignalWatch};
use tokio::sync::watch;

/// Tells the in-process server to stop when the test says so (instead of on a signal).
struct StopWhenTold(watch::Receiver<bool>);

#[async_trait::async_trait]
impl ShutdownSignalWatch for StopWhenTold {
    async fn recv(&self) -> ShutdownSignal {
        let mut told = self.0.clone();
        // A dropped sender stops the server too.
        let _ = told.wait_for(|stop| *stop).await;
        ShutdownSignal::FastShutdown
    }
}

/// The gateway running on a thread of this process; stopped and joined on drop.
struct InProcessEdge {
    https_port: u16,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl InProcessEdge {
    /// Writes a config with listeners on reserved ports, the dev certificate, `upstream`
    /// and `extra`, then loads, builds and runs it as `registry-edge run` would.
    fn start(dir: &Path, certs: &Certs, upstream: &str, extra: &str) -> InProcessEdge {
        let (https_port, http_port) = (free_port(), free_port());
        let path = dir.join("in-process.yaml");
        std::fs::write(
            &path,
            format!(
                "server:\n  https_listen: [\"127.0.0.1:{https_port}\"]\n  \
                 http_listen: [\"127.0.0.1:{http_port}\"]\n  threads: 1\n  shutdown_grace: 1s\n\
                 tls:\n  certificates:\n    - cert: {}\n      key: {}\n{upstream}\n{extra}\n",
                certs.tls_crt.display(),
                certs.tls_key.display()
            ),
        )
        .unwrap();
        let loaded = registry_edge::load::load_all(&path).unwrap_or_else(|e| panic!("{e}"));
        let (server, _drain) = registry_edge::server::build(loaded).unwrap();
        let (stop, told) = watch::channel(false);
        let thread = std::thread::spawn(move || {
            server.run(RunArgs {
                shutdown_signal: Box::new(StopWhenTold(told)),
            })
        });
        let edge = InProcessEdge {
            https_port,
            stop,
            thread: Some(thread),
        };
        let ca = certs.ca_dir.join("ca.crt");
        let url = edge.url("/v2/");
        wait_for(
            "the in-process edge to accept TLS",
            Duration::from_secs(30),
            || (curl(&["--cacert", ca.to_str().unwrap(), &url]).status != 0).then_some(()),
        );
        edge
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.https_port)
    }
}

impl Drop for InProcessEdge {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn a_request_reaches_the_origin_with_the_edges_forwarding_headers() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let origin = EchoUpstream::start();
    let edge = InProcessEdge::start(
        dir.path(),
        &certs,
        &upstream_yaml(std::slice::from_ref(&origin.addr), "round_robin"),
        "",
    );
    let ca = certs.ca_dir.join("ca.crt");
    let got = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "-H",
        "X-Forwarded-Proto: http",
        &edge.url("/v2/in/process/tags/list"),
    ]);
    assert_eq!(got.status, 200, "{}", got.stderr);
    let seen = String::from_utf8_lossy(&got.body).to_ascii_lowercase();
    assert!(
        seen.starts_with("get /v2/in/process/tags/list http/1.1"),
        "{seen}"
    );
    // The client's claim is replaced: the edge terminated TLS itself.
    assert!(seen.contains("x-forwarded-proto: https\r\n"), "{seen}");
    assert!(!seen.contains("x-forwarded-proto: http\r\n"), "{seen}");
    assert!(seen.contains("x-real-ip: 127.0.0.1\r\n"), "{seen}");

    // The handle stops what it started: the listener is gone once it drops. Pingora shuts
    // its runtimes down in the background after `run` returns, so the socket closes a moment
    // after the join: poll with a deadline.
    let port = edge.https_port;
    drop(edge);
    wait_for(
        "the in-process edge to stop listening after its handle dropped",
        Duration::from_secs(10),
        || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .is_err()
                .then_some(())
        },
    );
}
