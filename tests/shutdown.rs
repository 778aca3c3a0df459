//! SIGTERM: the listeners close, an upload already streaming finishes, then the process exits.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{curl, make_certs, upstream_yaml, wait_for, Edge, Registry};

#[test]
fn in_flight_upload_completes_after_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let registry = Registry::start(dir.path(), "node");
    let mut edge = Edge::start_with(
        dir.path(),
        &certs,
        "  shutdown_grace: 20s\n",
        &upstream_yaml(&[registry.addr()], "repository_hash"),
        "",
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
    let ca = certs.ca_dir.join("ca.crt").to_str().unwrap().to_string();
    // An idle keep-alive connection is not a request in flight.
    assert_eq!(curl(&["--cacert", &ca, &edge.url("/v2/")]).status, 200);
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
