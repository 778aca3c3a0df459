//! The admin listener (issue 8): Prometheus metrics that show pushes, pulls, tokens and
//! failed logins; `/healthz`; `/readyz` following the registry nodes' health.

mod common;

use std::time::Duration;

use common::auth::{auth_yaml, login};
use common::{curl, edge_with_node, free_port, push_blob, wait_for};

/// Scrapes `/metrics` and parses it as Prometheus text.
fn scrape(admin: u16) -> prometheus_parse::Scrape {
    let r = curl(&[&format!("http://127.0.0.1:{admin}/metrics")]);
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let text = String::from_utf8(r.body).unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("metrics parse as Prometheus text")
}

/// The value of `name` whose labels include every pair in `labels` (summed), or 0.
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(buckets) => {
                buckets.iter().map(|b| b.count).fold(0.0, f64::max)
            }
            prometheus_parse::Value::Summary(_) => 0.0,
        })
        .sum()
}

#[test]
fn metrics_show_traffic_and_readyz_follows_the_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let extra = format!(
        "{}admin:\n  listen: \"127.0.0.1:{admin}\"\n",
        auth_yaml(dir.path(), "")
    );
    let (certs, mut registry, edge) = edge_with_node(dir.path(), &extra);
    let ca = certs.ca_dir.join("ca.crt");
    let ca_arg = ca.to_str().unwrap();

    let before = scrape(admin);
    assert_eq!(
        value(&before, "registry_edge_tokens_issued_total", &[]),
        0.0
    );

    // A failed login, a login, a push and a pull with the token.
    assert_eq!(
        login(
            &edge,
            ca_arg,
            "alice",
            "wrong",
            "repository:alice/app:pull,push"
        )
        .status,
        401
    );
    let ok = login(
        &edge,
        ca_arg,
        "alice",
        "pw-alice",
        "repository:alice/app:pull,push",
    );
    assert_eq!(ok.status, 200);
    let token = ok.json()["token"].as_str().unwrap().to_string();
    let bearer = format!("Authorization: Bearer {token}");
    let blob = vec![4u8; 300_000];
    let digest = push_blob(&edge.url(""), &ca, "alice/app", &blob, &["-H", &bearer]);
    let pulled = curl(&[
        "--cacert",
        ca_arg,
        "-H",
        &bearer,
        &edge.url(&format!("/v2/alice/app/blobs/{digest}")),
    ]);
    assert_eq!(pulled.status, 200);

    let after = scrape(admin);
    let push_201 = [("class", "push"), ("status", "201")];
    assert_eq!(
        value(&after, "registry_edge_requests_total", &push_201),
        1.0
    );
    assert!(
        value(
            &after,
            "registry_edge_requests_total",
            &[("class", "push"), ("status", "202")]
        ) >= 1.0
    );
    assert_eq!(
        value(
            &after,
            "registry_edge_requests_total",
            &[("class", "pull"), ("status", "200")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "registry_edge_requests_total",
            &[("class", "auth"), ("status", "401")]
        ),
        1.0
    );
    assert_eq!(value(&after, "registry_edge_tokens_issued_total", &[]), 1.0);
    assert_eq!(value(&after, "registry_edge_failed_logins_total", &[]), 1.0);
    // Histograms: POST + PUT pushes; the pull went through a node.
    assert!(
        value(
            &after,
            "registry_edge_request_duration_seconds",
            &[("class", "push")]
        ) >= 2.0
    );
    assert!(
        value(
            &after,
            "registry_edge_upstream_duration_seconds",
            &[("class", "pull")]
        ) >= 1.0
    );
    assert!(value(&after, "registry_edge_received_bytes_total", &[]) >= blob.len() as f64);
    assert!(value(&after, "registry_edge_sent_bytes_total", &[]) >= blob.len() as f64);
    assert!(
        value(
            &after,
            "registry_edge_tls_handshakes_total",
            &[("result", "ok")]
        ) >= 4.0
    );
    assert_eq!(
        value(
            &after,
            "registry_edge_upstream_node_healthy",
            &[("node", &registry.addr())]
        ),
        1.0
    );
    assert!(
        after
            .samples
            .iter()
            .any(|s| s.metric == "registry_edge_active_connections"),
        "active connections gauge"
    );

    // Health for load balancers.
    let health = |path: &str| curl(&[&format!("http://127.0.0.1:{admin}{path}")]).status;
    assert_eq!(health("/healthz"), 200);
    assert_eq!(health("/readyz"), 200);
    registry.stop();
    wait_for(
        "/readyz to report no healthy node",
        Duration::from_secs(30),
        || (health("/readyz") == 503).then_some(()),
    );
    assert_eq!(health("/healthz"), 200, "the process itself is fine");
    assert_eq!(
        value(
            &scrape(admin),
            "registry_edge_upstream_node_healthy",
            &[("node", &registry.addr())]
        ),
        0.0
    );
    registry.restart();
    wait_for("/readyz to recover", Duration::from_secs(30), || {
        (health("/readyz") == 200).then_some(())
    });

    // The admin port is not served on the public listeners.
    let public = curl(&["--cacert", ca_arg, &edge.url("/metrics")]);
    assert!(!String::from_utf8_lossy(&public.body).contains("registry_edge_"));
}
