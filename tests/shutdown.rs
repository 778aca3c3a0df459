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
    wait_for(
        "the edge to exit after the grace period",
        Duration::from_secs(40),
        || (!edge.proc.is_running()).then_some(()),
    );
}
