//! Two real registry nodes with `repository_hash`: affinity, failover when a node
//! stops, rejoin when it returns, and 503 when none is left.

mod common;

use std::time::Duration;

use common::{curl, make_certs, push_blob, upstream_yaml, wait_for, Edge, Registry};

#[test]
fn repository_affinity_failover_and_rejoin() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let mut nodes = [
        Registry::start(dir.path(), "a"),
        Registry::start(dir.path(), "b"),
    ];
    let edge = Edge::start(
        dir.path(),
        &certs,
        &upstream_yaml(&[nodes[0].addr(), nodes[1].addr()], "repository_hash"),
        "",
    );
    let base = format!("https://127.0.0.1:{}", edge.https_port);
    let ca = certs.ca_dir.join("ca.crt");
    let ca_arg = ca.to_str().unwrap().to_string();

    // Every upload and pull of one repository lands on one node.
    let repo = "team/one";
    let blobs: Vec<String> = (0..3)
        .map(|i| push_blob(&base, &ca, repo, format!("blob {i}").as_bytes(), &[]))
        .collect();
    let owner = (0..2)
        .find(|&i| nodes[i].has_blob(repo, &blobs[0]))
        .expect("some node stores the blob");
    let other = 1 - owner;
    for blob in &blobs {
        assert!(
            nodes[owner].has_blob(repo, blob),
            "all of {repo} on one node"
        );
        assert!(
            !nodes[other].has_blob(repo, blob),
            "none of {repo} on the other node"
        );
        let pulled = curl(&[
            "--cacert",
            &ca_arg,
            &format!("{base}/v2/{repo}/blobs/{blob}"),
        ]);
        assert_eq!(pulled.status, 200, "pull through the edge");
    }

    // Hashing spreads repositories over both nodes (16 repositories all on one node: p = 2^-15).
    let mut used = [false, false];
    for i in 0..16 {
        let name = format!("spread/r{i}");
        let blob = push_blob(&base, &ca, &name, b"x", &[]);
        for (n, node) in nodes.iter().enumerate() {
            used[n] |= node.has_blob(&name, &blob);
        }
    }
    assert_eq!(used, [true, true], "both nodes receive repositories");

    // The owner stops: the repository's requests move to the survivor.
    nodes[owner].stop();
    let moved = wait_for(
        "a push to succeed on the surviving node",
        Duration::from_secs(20),
        || {
            let started = curl(&[
                "--cacert",
                &ca_arg,
                "-X",
                "POST",
                &format!("{base}/v2/{repo}/blobs/uploads/"),
            ]);
            (started.status == 202).then(|| push_blob(&base, &ca, repo, b"after failover", &[]))
        },
    );
    assert!(
        nodes[other].has_blob(repo, &moved),
        "new upload stored on the survivor"
    );

    // The owner returns: once the health check sees it, the repository goes back to it.
    nodes[owner].restart();
    wait_for(
        "the returning node to serve its repository again",
        Duration::from_secs(20),
        || {
            let head = curl(&[
                "--cacert",
                &ca_arg,
                "-I",
                &format!("{base}/v2/{repo}/blobs/{}", blobs[0]),
            ]);
            (head.status == 200).then_some(())
        },
    );

    // No node left: 503 in the registry's JSON format, at once.
    nodes[0].stop();
    nodes[1].stop();
    let down = wait_for(
        "the edge to report no healthy node",
        Duration::from_secs(20),
        || {
            let r = curl(&["--cacert", &ca_arg, &format!("{base}/v2/")]);
            (r.status == 503).then_some(r)
        },
    );
    assert_eq!(down.header("content-type"), Some("application/json"));
    assert_eq!(
        down.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    assert_eq!(down.json()["errors"][0]["code"], "UNAVAILABLE");
    assert!(
        edge.log_text().contains("status=503"),
        "the access log records the 503"
    );
}
