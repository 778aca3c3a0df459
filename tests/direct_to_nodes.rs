//! The requests the edge itself sends to registry nodes (the cache's confirmation `HEAD`,
//! the policy's tag lookups) go straight to the node, like the proxied traffic, even with
//! `HTTP_PROXY` & co. set: they carry the client's `Authorization` (issue 29, item 7).

mod common;

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{curl, make_certs, upstream_yaml, Edge, Registry};

/// A listener that counts the connections made to it (a proxy nobody should use).
fn recording_listener() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (addr, seen)
}

#[test]
fn requests_the_edge_sends_to_nodes_never_go_through_an_environment_proxy() {
    let dir = tempfile::tempdir().unwrap();
    // Proxy-only mode: the registry checks the clients' passwords itself, so the cache's
    // HEAD and the policy's lookups carry the client's Authorization.
    let registry = Registry::start_with(
        dir.path(),
        "node",
        &common::auth::registry_htpasswd_block(dir.path()),
    );
    let certs = make_certs(dir.path());
    let admin = common::free_port();
    let (proxy, used) = recording_listener();
    let proxy_url = format!("http://{proxy}");
    let env: Vec<(&str, &str)> = [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ]
    .into_iter()
    .map(|name| (name, proxy_url.as_str()))
    .chain([("NO_PROXY", ""), ("no_proxy", "")])
    .collect();
    let https_port = common::free_port();
    let http_port = common::free_port();
    let yaml = format!(
        "server:\n  https_listen: [\"127.0.0.1:{https_port}\"]\n  http_listen: [\"127.0.0.1:{http_port}\"]\n  \
         shutdown_grace: 1s\ntls:\n  certificates:\n    - cert: {}\n      key: {}\n{}\
         admin:\n  listen: \"127.0.0.1:{admin}\"\ncache:\n  dir: {}\n  max_size: 1GiB\n\
         policy:\n  state_dir: {}\n  immutable_tags:\n    - {{ name: \"**\", tags: [\"v*\"] }}\n",
        certs.tls_crt.display(),
        certs.tls_key.display(),
        upstream_yaml(&[registry.addr()], "repository_hash"),
        dir.path().join("cache").display(),
        dir.path().join("policy").display(),
    );
    let edge = Edge::start_config_env(dir.path(), https_port, http_port, &yaml, &env);
    let ca = certs.ca_dir.join("ca.crt");
    let ca_arg = ca.to_str().unwrap();
    common::wait_for("the edge", std::time::Duration::from_secs(30), || {
        (curl(&["--cacert", ca_arg, &edge.url("/v2/")]).status != 0).then_some(())
    });
    let creds = ["-u", "alice:pw-alice"];
    let base = edge.url("");
    let config = common::push_blob(&base, &ca, "direct/app", b"{}", &creds);
    let layer = common::push_blob(&base, &ca, "direct/app", &[4u8; 50_000], &creds);

    // A pull by digest fills the cache; the next is answered from it once the node, asked
    // with a HEAD, says this client may have it.
    let blob = edge.url(&format!("/v2/direct/app/blobs/{layer}"));
    for _ in 0..2 {
        let got = curl(&["--cacert", ca_arg, "-u", "alice:pw-alice", &blob]);
        assert_eq!(got.status, 200, "{}", got.text());
        assert_eq!(got.body.len(), 50_000);
    }
    let through_proxy = |what: &str| {
        assert_eq!(
            used.load(Ordering::SeqCst),
            0,
            "{what} went through HTTP_PROXY; edge log:\n{}",
            edge.log_text()
        )
    };
    through_proxy("the cache's HEAD");
    let metrics = common::admin_metrics(admin);
    let hits = common::metric(&metrics, "registry_edge_cache_events_total{event=\"hit\"}");
    assert_eq!(
        hits,
        Some(1.0),
        "the second pull came from the cache:\n{metrics}"
    );

    // A protected tag: the policy asks the node which digest the tag points to.
    let manifest = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": layer, "size": 50_000}]}))
    .unwrap();
    let file = dir.path().join("manifest.json");
    std::fs::write(&file, &manifest).unwrap();
    let data = format!("@{}", file.display());
    for attempt in ["new tag", "the same manifest again"] {
        let put = curl(&[
            "--cacert",
            ca_arg,
            "-u",
            "alice:pw-alice",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
            "--data-binary",
            &data,
            &edge.url("/v2/direct/app/manifests/v1"),
        ]);
        assert_eq!(put.status, 201, "{attempt}: {}", put.text());
    }
    through_proxy("the policy's tag lookup");
}
