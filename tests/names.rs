//! Repository names outside the distribution grammar, and percent-encodings that would
//! make the registry route a request differently from the edge, are refused at the edge
//! with 400 NAME_INVALID; nothing reaches a node, and push limits cannot be sidestepped.

mod common;

use common::curl;

#[test]
fn invalid_names_and_hidden_separators_stop_at_the_edge() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, upstream, edge) = common::echo::echo_edge(
        dir.path(),
        "rate_limits:\n  push: { key: client_ip, per_minute: 1, burst: 1 }\n",
    );
    let ca = certs.ca_dir.join("ca.crt");
    let ca = ca.to_str().unwrap();
    let request = |method: &str, path: &str| {
        curl(&[
            "--cacert",
            ca,
            "--path-as-is",
            "-X",
            method,
            &edge.url(path),
        ])
    };

    let long = format!("/v2/{}/manifests/latest", "a".repeat(256));
    let refused = [
        ("GET", "/v2/../etc/manifests/latest"),
        ("GET", "/v2/%2e%2e/etc/manifests/latest"),
        ("GET", "/v2/Upper/Case/manifests/latest"),
        ("GET", "/v2/a//b/manifests/latest"),
        ("GET", long.as_str()),
        // The registry decodes %2F: these would be an upload start for "team/app" there.
        ("POST", "/v2/team/app/blobs%2Fuploads/"),
        ("POST", "/v2/team%2Fapp/blobs/uploads/"),
    ];
    for (method, path) in refused {
        let r = request(method, path);
        assert_eq!(r.status, 400, "{method} {path}");
        assert_eq!(r.header("content-type"), Some("application/json"), "{path}");
        assert_eq!(r.json()["errors"][0]["code"], "NAME_INVALID", "{path}");
    }
    assert!(
        upstream.seen.lock().unwrap().is_empty(),
        "nothing reached the node: {:?}",
        upstream.seen.lock().unwrap()
    );

    // Encoded characters that do not hide a separator decode and pass, sent on as the client wrote them.
    let r = request("GET", "/v2/team/app/blobs/sha256%3A00");
    assert_eq!(r.status, 200);
    assert!(
        String::from_utf8_lossy(&r.body).starts_with("GET /v2/team/app/blobs/sha256%3A00 HTTP/1.1")
    );

    // The push budget (1) cannot be sidestepped by encoding the route.
    assert_eq!(request("POST", "/v2/team/app/blobs/uploads/").status, 200);
    assert_eq!(request("POST", "/v2/team/app/blobs/uploads/").status, 429);
    assert_eq!(request("POST", "/v2/team/app/blobs%2Fuploads/").status, 400);
    assert_eq!(
        upstream.seen.lock().unwrap().len(),
        2,
        "only the admitted start and the digest GET reached the node"
    );
}
