//! The cache shared between requests, against the real registry: concurrent cold pulls of
//! one digest cause one registry fetch; proxy-only mode asks the registry with each
//! client's credentials; a digest cached for one repository serves another only once the
//! registry says it holds it; a cached OCI manifest goes only to clients whose `Accept`
//! lists it, as the registry's own answers do.

mod common;

use std::time::Duration;

use common::cache::{noise, push_blob, Setup};
use common::{
    admin_metrics, curl, free_port, make_certs, metric, tiny_oci_layout, upstream_yaml, wait_for,
    Checks, Edge, Registry,
};

/// Eight clients pulling one cold blob at once cause one registry fetch (counted in the
/// registry's access log): every answer comes from that fetch's fill.
#[test]
fn concurrent_cold_pulls_cause_one_registry_fetch() {
    let s = Setup::cache("");
    let bytes = noise(20_000_000, 3);
    let digest = push_blob(&s, "cold", &bytes);
    let token = s.token("alice", "repository:alice/cold:pull");
    let path = format!("/v2/alice/cold/blobs/{digest}");
    // The pair is confirmed first (a HEAD goes to the registry and fills nothing).
    let head = s.get("alice/cold", &path, &["-I"]);
    assert_eq!(head.status, 200);
    let url = s.edge.url(&path);
    let ca = s.ca();
    let pulls: Vec<_> = (0..8)
        .map(|_| {
            let (url, ca, bearer) = (
                url.clone(),
                ca.clone(),
                format!("Authorization: Bearer {token}"),
            );
            std::thread::spawn(move || curl(&["--cacert", &ca, "-H", &bearer, &url]))
        })
        .collect();
    for pull in pulls {
        let answer = pull.join().unwrap();
        assert_eq!(answer.status, 200);
        assert!(answer.body == bytes, "a pull got other bytes");
    }
    assert_eq!(
        s.registry.requests("GET", &path),
        1,
        "GETs the registry answered:\n{}",
        s.registry.log_text()
    );
    let log = s.edge.log_text();
    let from_cache = log
        .lines()
        .filter(|l| l.contains("method=GET") && l.contains(&digest) && l.contains("upstream=cache"))
        .count();
    assert_eq!(from_cache, 8, "answers from the cache:\n{log}");
}

/// Without `auth` at the edge (proxy only), a cached body is served only after the
/// registry answered a `HEAD` with the client's own credentials: here the registry checks
/// htpasswd users itself.
#[test]
fn proxy_only_mode_asks_the_registry_with_the_clients_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start_with(
        dir.path(),
        "node",
        &common::auth::registry_htpasswd_block(dir.path()),
    );
    let certs = make_certs(dir.path());
    let admin = free_port();
    let extra = format!(
        "admin:\n  listen: \"127.0.0.1:{admin}\"\ncache:\n  dir: {}\n  max_size: 1GiB\n",
        dir.path().join("cache").display()
    );
    let edge = Edge::start(
        dir.path(),
        &certs,
        &upstream_yaml(&[registry.addr()], "repository_hash"),
        &extra,
    );
    let ca = certs.ca_dir.join("ca.crt");
    let bytes = noise(2_000_000, 5);
    let base = format!("https://127.0.0.1:{}", edge.https_port);
    let digest = common::push_blob(&base, &ca, "alice/app", &bytes, &["-u", "alice:pw-alice"]);
    let get = |repo: &str, creds: &str| {
        curl(&[
            "--cacert",
            ca.to_str().unwrap(),
            "-u",
            creds,
            &edge.url(&format!("/v2/{repo}/blobs/{digest}")),
        ])
    };
    let events = |event: &str| {
        let text = admin_metrics(admin);
        metric(
            &text,
            &format!("registry_edge_cache_events_total{{event=\"{event}\"}}"),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(get("alice/app", "alice:pw-alice").status, 200);
    wait_for("the fill", Duration::from_secs(10), || {
        (events("fill") >= 1.0).then_some(())
    });

    let mut checks = Checks::new();
    checks.run(
        "the registry's 200 to the HEAD lets the cache answer",
        || {
            let hits = events("hit");
            let answer = get("alice/app", "alice:pw-alice");
            assert_eq!(answer.status, 200);
            assert!(answer.body == bytes);
            assert_eq!(events("hit"), hits + 1.0, "not answered from the cache");
        },
    );
    checks.run(
        "wrong credentials get the registry's 401, not the blob",
        || {
            let hits = events("hit");
            let answer = get("alice/app", "alice:wrong");
            assert_eq!(answer.status, 401);
            assert!(answer.body.len() < 1000);
            assert_eq!(events("hit"), hits);
        },
    );
    checks.run(
        "a repository without the blob gets the registry's 404",
        || {
            assert_eq!(get("alice/other", "alice:pw-alice").status, 404);
        },
    );
    checks.finish();
}

/// A layer cached for one repository is served for another only after the registry
/// answered a HEAD for that repository: a cross-repository mount makes the second hold it.
#[test]
fn another_repository_is_served_once_the_registry_says_it_holds_the_digest() {
    let mut s = Setup::cache("");
    let bytes = noise(2_000_000, 7);
    let digest = push_blob(&s, "first", &bytes);
    let path = |repo: &str| format!("/v2/alice/{repo}/blobs/{digest}");
    assert_eq!(s.get("alice/first", &path("first"), &[]).status, 200);
    wait_for("the fill", Duration::from_secs(10), || {
        (s.metric("fill") >= 1.0).then_some(())
    });
    // Not in alice/second yet: the registry's answer to the HEAD is 404.
    assert_eq!(s.get("alice/second", &path("second"), &[]).status, 404);
    // A mount puts it there (the registry links the existing blob).
    let token = s.token(
        "alice",
        "repository:alice/second:pull,push&scope=repository:alice/first:pull",
    );
    let mount = s.edge.url(&format!(
        "/v2/alice/second/blobs/uploads/?mount={digest}&from=alice/first"
    ));
    let mounted = curl(&[
        "--cacert",
        &s.ca(),
        "-X",
        "POST",
        "-H",
        &format!("Authorization: Bearer {token}"),
        &mount,
    ]);
    assert_eq!(mounted.status, 201, "{}", mounted.text());
    let hits = s.metric("hit");
    let answer = s.get("alice/second", &path("second"), &[]);
    assert_eq!(answer.status, 200);
    assert!(answer.body == bytes);
    assert_eq!(
        s.metric("hit"),
        hits + 1.0,
        "the second repository's pull was not answered from the cache"
    );
    // Confirmed now: answered with the registry stopped.
    s.registry.stop();
    assert_eq!(s.get("alice/second", &path("second"), &[]).status, 200);
}

/// The registry answers an OCI manifest by digest only to a client whose `Accept` lists
/// its media type (a 404 to the others); the cache answers the same way, and such a 404
/// does not make the edge forget that the repository holds the manifest.
#[test]
fn a_cached_oci_manifest_goes_only_to_clients_that_accept_it() {
    let mut s = Setup::cache("");
    let source = tiny_oci_layout(&s.dir.path().join("layout"));
    let digest = s.push_image_digest("alice", &source, "alice/oci:v1");
    let path = format!("/v2/alice/oci/manifests/{digest}");
    let oci = "Accept: application/vnd.oci.image.manifest.v1+json";
    let first = s.get("alice/oci", &path, &["-H", oci]);
    assert_eq!(first.status, 200, "{}", first.text());
    wait_for("the fill", Duration::from_secs(10), || {
        (s.metric("fill") >= 1.0).then_some(())
    });
    let docker_only = "Accept: application/vnd.docker.distribution.manifest.v2+json";
    for accept in [docker_only, "Accept: */*"] {
        let refused = s.get("alice/oci", &path, &["-H", accept]);
        assert_eq!(refused.status, 404, "{accept}: {}", refused.text());
        assert!(
            refused.text().contains("MANIFEST_UNKNOWN"),
            "{}",
            refused.text()
        );
    }
    // Still known to be held: answered from the cache with the registry stopped.
    s.registry.stop();
    let again = s.get("alice/oci", &path, &["-H", oci]);
    assert_eq!(again.status, 200, "{}", again.text());
    assert!(again.body == first.body);
    let status = s.get("alice/oci", &path, &["-H", docker_only]).status;
    assert!(
        matches!(status, 502 | 503),
        "{status}: not for the registry to say"
    );
}
