//! Forwarding headers as a registry node sees them, with and without a trusted proxy.
//! The upstream here is a tiny header-echo server: the only way to observe what the edge sends.

mod common;

use common::curl;

/// Header lines the upstream received, lowercased names.
fn seen(body: &[u8]) -> (String, Vec<(String, String)>) {
    let text = String::from_utf8_lossy(body).to_string();
    let mut lines = text.lines();
    let request_line = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (request_line, headers)
}

fn get<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

const SPOOFED: &[&str] = &[
    "-H",
    "X-Forwarded-Host: evil.example",
    "-H",
    "X-Forwarded-Proto: http",
    "-H",
    "X-Forwarded-For: 198.51.100.1",
    "-H",
    "X-Forwarded-Port: 80",
    "-H",
    "Forwarded: for=198.51.100.1;host=evil.example;proto=http",
    "-H",
    "X-Real-IP: 198.51.100.1",
    "-H",
    "Range: bytes=0-99",
    "-H",
    "Docker-Upload-UUID: 1234",
    "-H",
    "Connection: X-Hop",
    "-H",
    "X-Hop: secret",
    "-H",
    "Authorization: Bearer sekrit-token-123",
];

#[test]
fn untrusted_client_headers_are_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, _upstream, edge) = common::echo::echo_edge(dir.path(), "");
    let ca = certs.ca_dir.join("ca.crt");
    let url = edge.url("/v2/lib/app/blobs/uploads/u1?_state=abc%3D&digest=sha256:00");
    for http in ["--http1.1", "--http2"] {
        let mut args = vec!["--cacert", ca.to_str().unwrap(), http];
        args.extend_from_slice(SPOOFED);
        args.push(&url);
        let result = curl(&args);
        assert_eq!(result.status, 200, "{http}: {}", result.stderr);
        let (request_line, headers) = seen(&result.body);
        assert_eq!(
            request_line,
            "GET /v2/lib/app/blobs/uploads/u1?_state=abc%3D&digest=sha256:00 HTTP/1.1",
            "{http}: query string untouched, HTTP/1.1 upstream"
        );
        let host = format!("127.0.0.1:{}", edge.https_port);
        assert_eq!(
            get(&headers, "host"),
            [host.as_str()],
            "{http}: Host kept with its port"
        );
        assert_eq!(get(&headers, "x-forwarded-host"), [host.as_str()], "{http}");
        assert_eq!(get(&headers, "x-forwarded-proto"), ["https"], "{http}");
        assert_eq!(get(&headers, "x-forwarded-for"), ["127.0.0.1"], "{http}");
        assert_eq!(get(&headers, "x-real-ip"), ["127.0.0.1"], "{http}");
        assert!(get(&headers, "forwarded").is_empty(), "{http}");
        assert!(get(&headers, "x-forwarded-port").is_empty(), "{http}");
        if http == "--http1.1" {
            // h2 has no Connection header (curl drops it), so this applies to HTTP/1.1 only.
            assert!(
                get(&headers, "x-hop").is_empty(),
                "hop-by-hop header named in Connection"
            );
        }
        assert_eq!(get(&headers, "range"), ["bytes=0-99"], "{http}");
        assert_eq!(get(&headers, "docker-upload-uuid"), ["1234"], "{http}");
        let seen_text = String::from_utf8_lossy(&result.body);
        assert_eq!(
            get(&headers, "authorization"),
            ["Bearer sekrit-token-123"],
            "{http}: {seen_text}"
        );
    }
    // The access line is written after the response: poll for it.
    let log = common::wait_for("the access log", std::time::Duration::from_secs(10), || {
        let log = edge.log_text();
        (log.matches("registry_edge::access").count() >= 2).then_some(log)
    });
    assert!(!log.contains("sekrit"), "credentials never logged");
    assert!(!log.contains("_state="), "query strings never logged");
}

#[test]
fn trusted_load_balancer_headers_are_kept_as_one_origin() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, _upstream, edge) = common::echo::echo_edge(
        dir.path(),
        "forwarded:\n  trusted_proxies: [\"127.0.0.0/8\"]\n",
    );
    let ca = certs.ca_dir.join("ca.crt");
    let url = edge.url("/v2/");
    let result = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "-H",
        "X-Forwarded-For: 203.0.113.9",
        "-H",
        "X-Forwarded-Proto: http",
        "-H",
        "X-Forwarded-Host: registry.example.com",
        "-H",
        "X-Forwarded-Port: 8080",
        "-H",
        "Forwarded: for=203.0.113.9;proto=http",
        &url,
    ]);
    assert_eq!(result.status, 200, "{}", result.stderr);
    let (_, headers) = seen(&result.body);
    assert_eq!(get(&headers, "x-forwarded-for"), ["203.0.113.9, 127.0.0.1"]);
    assert_eq!(get(&headers, "x-real-ip"), ["203.0.113.9"]);
    assert_eq!(get(&headers, "x-forwarded-proto"), ["http"]);
    // The balancer's port joins the host (as the registry would join it), and the headers
    // the registry could build another origin from are not passed on.
    assert_eq!(
        get(&headers, "x-forwarded-host"),
        ["registry.example.com:8080"]
    );
    assert!(get(&headers, "x-forwarded-port").is_empty());
    assert!(get(&headers, "forwarded").is_empty());
}

#[test]
fn upstream_connections_are_reused() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, _upstream, edge) = common::echo::echo_edge(dir.path(), "");
    let ca = certs.ca_dir.join("ca.crt");
    // Separate client connections: only the edge's upstream pool can make the count grow.
    let counts: Vec<u32> = (0..4)
        .map(|_| {
            let r = curl(&[
                "--cacert",
                ca.to_str().unwrap(),
                &edge.url("/v2/pooled/tags/list"),
            ]);
            assert_eq!(r.status, 200);
            r.header("x-served-on-connection").unwrap().parse().unwrap()
        })
        .collect();
    assert!(
        counts.iter().any(|&n| n >= 2),
        "keep-alive pooling upstream: {counts:?}"
    );
}
