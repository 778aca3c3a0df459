//! The plain-HTTP listener redirects everything to the HTTPS listener.

mod common;

use common::{curl, free_port, make_certs, upstream_yaml, Edge};

fn redirect_edge(dir: &std::path::Path) -> Edge {
    let certs = make_certs(dir);
    // No registry is needed: redirects never reach a node.
    let nodes = [format!("127.0.0.1:{}", free_port())];
    Edge::start(dir, &certs, &upstream_yaml(&nodes, "round_robin"), "")
}

#[test]
fn redirects_keep_path_query_and_method_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let edge = redirect_edge(dir.path());
    let plain = format!(
        "http://127.0.0.1:{}/v2/lib/app/blobs/uploads/abc?_state=xyz&digest=sha256:00",
        edge.http_port
    );
    let expected = format!(
        "https://127.0.0.1:{}/v2/lib/app/blobs/uploads/abc?_state=xyz&digest=sha256:00",
        edge.https_port
    );

    let get = curl(&[plain.as_str()]);
    assert_eq!(get.status, 301);
    assert_eq!(get.header("location"), Some(expected.as_str()));
    assert_eq!(
        get.header("server"),
        None,
        "no Server header that leaks a version"
    );

    let head = curl(&["-I", plain.as_str()]);
    assert_eq!(head.status, 301);

    let put = curl(&["-X", "PUT", "--data-binary", "layer bytes", plain.as_str()]);
    assert_eq!(put.status, 308, "non-GET methods keep method and body");
    assert_eq!(put.header("location"), Some(expected.as_str()));

    // The Host the client used is kept (its port replaced by the https port).
    let named = curl(&["-H", "Host: registry.test:80", plain.as_str()]);
    assert_eq!(
        named.header("location"),
        Some(
            format!(
                "https://registry.test:{}/v2/lib/app/blobs/uploads/abc?_state=xyz&digest=sha256:00",
                edge.https_port
            )
            .as_str()
        )
    );

    // Following the redirect reaches the TLS listener (which answers, here with 503: no node).
    let ca = dir.path().join("ca/ca.crt");
    let followed = curl(&[
        "-L",
        "--cacert",
        ca.to_str().unwrap(),
        &format!("http://127.0.0.1:{}/v2/", edge.http_port),
    ]);
    assert_eq!(followed.status, 503);
}

#[test]
fn external_url_is_the_redirect_target() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let nodes = [format!("127.0.0.1:{}", free_port())];
    let edge = Edge::start_with(
        dir.path(),
        &certs,
        "  external_url: https://registry.example.com\n  shutdown_grace: 1s\n",
        &upstream_yaml(&nodes, "round_robin"),
        "",
    );
    let url = format!(
        "http://127.0.0.1:{}/v2/x/manifests/latest?a=b",
        edge.http_port
    );
    let get = curl(&[url.as_str()]);
    assert_eq!(get.status, 301);
    assert_eq!(
        get.header("location"),
        Some("https://registry.example.com/v2/x/manifests/latest?a=b")
    );
    let put = curl(&["-X", "PUT", "-d", "x", url.as_str()]);
    assert_eq!(put.status, 308);
    assert_eq!(
        put.header("location"),
        Some("https://registry.example.com/v2/x/manifests/latest?a=b")
    );
}
