//! SIGTERM: the listeners close, an upload already streaming finishes (its answer saying
//! `Connection: close`, issue 29), then the process exits.

mod common;

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use common::raw::{read_all, statuses, upload};
use common::{curl, make_certs, tls_connect, upstream_yaml, wait_for, Edge, Registry};

#[test]
fn in_flight_upload_completes_after_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let registry = Registry::start(dir.path(), "node");
    let admin = common::free_port();
    let mut edge = Edge::start_with(
        dir.path(),
        &certs,
        "  shutdown_grace: 20s\n",
        &upstream_yaml(&[registry.addr()], "repository_hash"),
        &format!("admin:\n  listen: \"127.0.0.1:{admin}\"\n"),
    );
    let ca = certs.ca_dir.join("ca.crt").to_str().unwrap().to_string();
    let location = common::start_upload(&edge.url("/v2/slow/upload/blobs/uploads/"), &ca, &[]);

    // 4 MiB at 1 MiB/s: still streaming when the signal arrives.
    let upload = common::spawn_slow_patch(dir.path(), &ca, location, 4 << 20);
    wait_for(
        "the registry to receive upload bytes",
        Duration::from_secs(20),
        || (registry.upload_bytes_stored("slow/upload") > 0).then_some(()),
    );

    let killed = Command::new("kill")
        .args(["-TERM", &edge.proc.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    // New connections are refused once the listeners close...
    wait_for("the listener to close", Duration::from_secs(10), || {
        (curl(&["--cacert", &ca, "--max-time", "2", &edge.url("/v2/")]).status == 0).then_some(())
    });
    // Load balancers are told to stop sending clients.
    let readyz = curl(&[&format!("http://127.0.0.1:{admin}/readyz")]);
    assert_eq!(
        readyz.status,
        503,
        "{}",
        String::from_utf8_lossy(&readyz.body)
    );
    // ...while the upload that was streaming completes.
    let done = upload.join().unwrap();
    assert_eq!(
        done.status, 202,
        "in-flight upload finished: {}",
        done.stderr
    );
    assert_eq!(done.header("range"), Some("0-4194303"));
    // ...and the process exits once it has, long before the 20 s grace is over.
    wait_for(
        "the edge to exit once nothing is in flight",
        Duration::from_secs(10),
        || (!edge.proc.is_running()).then_some(()),
    );
    assert!(edge.log_text().contains("no request in flight, exiting"));
}

#[test]
fn sigterm_with_nothing_in_flight_exits_at_once_not_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let registry = Registry::start(dir.path(), "node");
    let mut edge = Edge::start_with(
        dir.path(),
        &certs,
        "  shutdown_grace: 8s\n",
        &upstream_yaml(&[registry.addr()], "repository_hash"),
        "",
    );
    let ca = certs.ca_dir.join("ca.crt");
    // Idle connections held open across the signal: HTTP/1.1 keep-alive (after one request)
    // and h2 (after one stream). Neither is a request in flight; both must be closed by the
    // edge (the h2 one with GOAWAY), or the drain would wait for them until the grace.
    let mut h1 = common::tls_connect(edge.https_port, &ca, &["http/1.1"]);
    h1.write_all(b"GET /v2/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    assert_eq!(common::read_head(&mut h1).0, 200);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let h2_closed = runtime.block_on(async {
        let (client, connection) = common::h2client::connect(edge.https_port, &ca).await;
        let closed = tokio::spawn(connection);
        let mut client = client.ready().await.unwrap();
        let request = http::Request::get(edge.url("/v2/")).body(()).unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        assert_eq!(response.await.unwrap().status(), 200);
        // The client handle stays alive, so only the server can end this connection.
        std::mem::forget(client);
        // Boxed in an Option: the block's value is the connection's task, awaited later.
        Some(closed)
    });
    let killed = Command::new("kill")
        .args(["-TERM", &edge.proc.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // `docker stop` waits 10 s before SIGKILL; Pingora alone would sleep all 8 s here.
    wait_for(
        "the edge to exit well before its 8 s grace",
        Duration::from_secs(4),
        || (!edge.proc.is_running()).then_some(()),
    );
    let log = edge.log_text();
    assert!(log.contains("no request in flight, exiting"), "{log}");
    runtime.block_on(async {
        let closed = h2_closed.expect("the h2 connection task");
        let ended = tokio::time::timeout(Duration::from_secs(5), closed).await;
        assert!(ended.is_ok(), "the h2 connection was closed by the edge");
    });
}

#[test]
fn a_request_outlasting_the_grace_is_cut_at_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let registry = Registry::start(dir.path(), "node");
    let mut edge = Edge::start_with(
        dir.path(),
        &certs,
        "  shutdown_grace: 2s\n",
        &upstream_yaml(&[registry.addr()], "repository_hash"),
        "",
    );
    let ca = certs.ca_dir.join("ca.crt").to_str().unwrap().to_string();
    let location = common::start_upload(&edge.url("/v2/slow/upload/blobs/uploads/"), &ca, &[]);
    // 60 MiB at 1 MiB/s: far longer than the grace.
    let upload = common::spawn_slow_patch(dir.path(), &ca, location, 60 << 20);
    wait_for(
        "the registry to receive upload bytes",
        Duration::from_secs(20),
        || (registry.upload_bytes_stored("slow/upload") > 0).then_some(()),
    );
    let killed = Command::new("kill")
        .args(["-TERM", &edge.proc.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    wait_for(
        "the edge to exit when the grace is over",
        Duration::from_secs(15),
        || (!edge.proc.is_running()).then_some(()),
    );
    assert!(
        edge.log_text().contains("still in flight; exiting"),
        "{}",
        edge.log_text()
    );
    let done = upload.join().unwrap();
    assert_ne!(done.status, 202, "the cut upload did not complete");
}

/// An answer a request in flight gets during a drain (SIGTERM) says `Connection: close`, as
/// the connection then closes: over raw HTTP/1.1 (no `Expect`), for a proxied upload and for
/// the edge's own answer.
#[test]
fn answers_finished_during_a_drain_say_the_connection_closes() {
    let dir = tempfile::tempdir().unwrap();
    let certs = common::make_certs(dir.path());
    let registry = Registry::start(dir.path(), "node");
    let edge = Edge::start_with(
        dir.path(),
        &certs,
        "  shutdown_grace: 20s\n",
        &common::upstream_yaml(&[registry.addr()], "repository_hash"),
        "",
    );
    let ca = certs.ca_dir.join("ca.crt");
    let body = vec![9u8; 64 << 10];
    let request = upload(&edge, &ca, "wire/drain", &body);
    let (head, rest) = request.split_at(request.len() - 1000);
    let mut uploading = tls_connect(edge.https_port, &ca, &["http/1.1"]);
    uploading.write_all(head).unwrap();
    uploading.flush().unwrap();
    // An own answer (a bad name) still waiting for its body, too.
    let mut refused = tls_connect(edge.https_port, &ca, &["http/1.1"]);
    refused
        .write_all(
            b"PUT /v2/Bad/manifests/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n\r\nab",
        )
        .unwrap();
    common::wait_for(
        "the upload to reach the registry",
        Duration::from_secs(20),
        || (registry.upload_bytes_stored("wire/drain") > 0).then_some(()),
    );
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &edge.proc.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    common::wait_for("the drain to begin", Duration::from_secs(20), || {
        edge.log_text().contains("graceful stop").then_some(())
    });
    uploading.write_all(rest).unwrap();
    let answer = read_all(&mut uploading);
    assert_eq!(statuses(&answer), [201], "{answer}");
    assert!(answer.contains("Connection: close"), "{answer}");
    refused.write_all(b"cd").unwrap();
    let answer = read_all(&mut refused);
    assert!(answer.contains("Connection: close"), "{answer}");
}
