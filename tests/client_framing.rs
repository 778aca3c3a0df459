//! Framing and addressing faults new users hit (issue 15): the edge's own answers to HEAD
//! on h1 and h2, tokens the realm issues vs. the header limit, HTTP/1.0 clients, requests
//! without `Host`, and the realm URL behind a trusted load balancer. Where the right
//! behaviour is what the registry does on its own, the test asks the registry too.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::auth::{auth_yaml, edge_with_token_node, SERVICE};
use common::{curl, make_certs, tls_connect, upstream_yaml, Certs, Edge, Registry};

struct Setup {
    dir: tempfile::TempDir,
    certs: Certs,
    registry: Registry,
    edge: Edge,
    admin: u16,
}

impl Setup {
    /// The real registry with token auth behind an edge with an `auth:` section; `extra` is
    /// appended to the edge's config.
    fn start(extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let admin = common::free_port();
        let (certs, registry, edge) = edge_with_token_node(
            dir.path(),
            &format!(
                "{}admin:\n  listen: \"127.0.0.1:{admin}\"\n{extra}",
                auth_yaml(dir.path(), "")
            ),
        );
        Setup {
            dir,
            certs,
            registry,
            edge,
            admin,
        }
    }

    fn ca(&self) -> String {
        self.certs
            .ca_dir
            .join("ca.crt")
            .to_str()
            .unwrap()
            .to_string()
    }

    /// curl against the edge with the test CA.
    fn curl(&self, args: &[&str]) -> common::CurlResult {
        let ca = self.ca();
        let mut all = vec!["--cacert", ca.as_str()];
        all.extend_from_slice(args);
        curl(&all)
    }

    fn token(&self, user: &str, scopes: &[String]) -> common::CurlResult {
        let mut url = format!("{}?service={SERVICE}", self.edge.url("/jwt/auth"));
        for scope in scopes {
            url.push_str(&format!("&scope={scope}"));
        }
        self.curl(&["-u", &format!("{user}:pw-{user}"), &url])
    }
}

/// A HEAD answer: the status curl saw, with no body and a clean end of stream.
fn assert_headers_only(what: &str, got: &common::CurlResult, status: u16) {
    assert_eq!(got.status, status, "{what}: {}", got.stderr);
    assert_no_body_after_head(what, got);
}

/// A HEAD answer ended cleanly and carried no body.
fn assert_no_body_after_head(what: &str, got: &common::CurlResult) {
    assert!(
        got.stderr.is_empty(),
        "{what}: curl reported {}",
        got.stderr
    );
    // `curl -I` writes the header block where a body would go: no JSON may follow it.
    let body = String::from_utf8_lossy(&got.body);
    assert!(
        !body.contains("\"errors\""),
        "{what}: a HEAD answer had a body: {body}"
    );
}

#[test]
fn the_edges_own_answers_to_head_are_headers_only_on_h1_and_h2() {
    let s = Setup::start("maintenance:\n  read_only: false\n");
    let cases = [
        // (what, path, status): each written by the edge itself.
        ("401 without a token", "/v2/alice/app/manifests/latest", 401),
        ("400 invalid name", "/v2/Alice/app/manifests/latest", 400),
        ("400 from the realm (HEAD is not GET)", "/jwt/auth", 400),
    ];
    for version in ["--http1.1", "--http2"] {
        for (what, path, status) in cases {
            let got = s.curl(&[version, "-I", &s.edge.url(path)]);
            assert_headers_only(&format!("{what} {version}"), &got, status);
            // The length of the body a GET gets is fine on HEAD.
            let length: usize = got.header("content-length").unwrap().parse().unwrap();
            assert!(length > 0, "{what}: Content-Length {length}");
            let expected = if version == "--http2" { "2" } else { "1.1" };
            assert_eq!(got.http_version, expected);
        }
    }
    // The plain-HTTP redirect and the admin listener.
    let redirect = curl(&["-I", &format!("http://127.0.0.1:{}/v2/", s.edge.http_port)]);
    assert_headers_only("redirect", &redirect, 301);
    for path in ["/metrics", "/healthz", "/nowhere"] {
        let got = curl(&["-I", &format!("http://127.0.0.1:{}{path}", s.admin)]);
        let status = if path == "/nowhere" { 404 } else { 200 };
        assert_headers_only(path, &got, status);
    }

    // HTTP/1.1 keep-alive: a body after a HEAD answer would be read as the next response.
    let mut tls = tls_connect(
        s.edge.https_port,
        &s.certs.ca_dir.join("ca.crt"),
        &["http/1.1"],
    );
    tls.write_all(b"HEAD /v2/alice/app/manifests/latest HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let (status, head) = common::read_head(&mut tls);
    assert_eq!(status, 401, "{head}");
    let after_head = head.split_once("\r\n\r\n").unwrap().1;
    assert!(
        after_head.is_empty(),
        "bytes after a HEAD answer: {after_head}"
    );
    assert!(head.contains("Content-Length: "), "{head}");
    tls.write_all(
        b"GET /v2/alice/app/tags/list HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut rest = Vec::new();
    let _ = tls.read_to_end(&mut rest);
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.starts_with("HTTP/1.1 401"),
        "the next answer on the connection comes first: {rest}"
    );
}

#[test]
fn answers_through_fail_to_proxy_are_headers_only_for_head() {
    // Every node down: 503 from the edge, through Pingora's failure path.
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let dead = format!("127.0.0.1:{}", common::free_port());
    let edge = Edge::start(
        dir.path(),
        &certs,
        &upstream_yaml(&[dead], "round_robin"),
        "",
    );
    let ca = certs.ca_dir.join("ca.crt");
    for version in ["--http1.1", "--http2"] {
        let got = curl(&[
            "--cacert",
            ca.to_str().unwrap(),
            version,
            "-I",
            &edge.url("/v2/any/manifests/latest"),
        ]);
        let what = format!("no node {version}");
        assert!(matches!(got.status, 502 | 503), "{what}: {}", got.status);
        assert_no_body_after_head(&what, &got);
    }
}

#[test]
fn the_realm_never_issues_a_token_the_edge_would_refuse() {
    let s = Setup::start("");
    let scopes = |n: usize| -> Vec<String> {
        (0..n)
            .map(|i| format!("repository:ns/repository-with-a-longer-name-{i:03}:pull"))
            .collect()
    };
    // 600 scopes: the token would be ~70 KB, over the 64 KiB header limit every request
    // carrying it would hit; the realm says so instead of issuing it.
    let refused = s.token("admin", &scopes(600));
    let length = refused.json()["token"].as_str().map(str::len);
    assert_eq!(refused.status, 400, "issued a token of {length:?} bytes");
    let error = &refused.json()["errors"][0];
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("fewer scopes"), "{message}");
    assert!(
        message.contains(&registry_edge::auth::endpoint::MAX_TOKEN_BYTES.to_string()),
        "{message}"
    );

    // The largest token the realm does issue passes the edge on h1 and h2.
    let issued = s.token("admin", &scopes(300));
    assert_eq!(issued.status, 200, "{:?}", issued.json()["errors"]);
    let token = issued.json()["token"].as_str().unwrap().to_string();
    assert!(token.len() > 30_000, "a large token: {} bytes", token.len());
    assert!(token.len() <= registry_edge::auth::endpoint::MAX_TOKEN_BYTES);
    let bearer = format!("Authorization: Bearer {token}");
    for version in ["--http1.1", "--http2"] {
        let got = s.curl(&[
            version,
            "-H",
            &bearer,
            &s.edge
                .url("/v2/ns/repository-with-a-longer-name-299/tags/list"),
        ]);
        // The registry itself answers: the repository does not exist.
        assert_eq!(got.status, 404, "{version}: {}", got.stderr);
        assert_eq!(got.json()["errors"][0]["code"], "NAME_UNKNOWN");
    }
    // The same token straight to the registry, for comparison.
    let direct = curl(&[
        "-H",
        &bearer,
        &format!(
            "http://{}/v2/ns/repository-with-a-longer-name-299/tags/list",
            s.registry.addr()
        ),
    ]);
    assert_eq!(direct.status, 404);
}

#[test]
fn an_oversized_header_block_gets_the_same_431_json_on_h1_and_h2() {
    let s = Setup::start("");
    let big = "a".repeat(70 * 1024);
    // HTTP/1.1 with curl.
    let got = s.curl(&[
        "--http1.1",
        "-H",
        &format!("X-Big: {big}"),
        &s.edge.url("/v2/"),
    ]);
    assert_eq!(got.status, 431, "h1: {}", got.stderr);
    assert_eq!(got.json()["errors"][0]["code"], "UNSUPPORTED");
    assert_eq!(got.header("content-type"), Some("application/json"));
    // HTTP/1.1 HEAD: the same 431, headers only.
    let mut tls = tls_connect(
        s.edge.https_port,
        &s.certs.ca_dir.join("ca.crt"),
        &["http/1.1"],
    );
    let head = format!("HEAD /v2/ HTTP/1.1\r\nHost: localhost\r\nX-Big: {big}\r\n\r\n");
    let _ = tls.write_all(head.as_bytes());
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    let (block, after) = answer.split_once("\r\n\r\n").unwrap();
    assert!(block.starts_with("HTTP/1.1 431"), "{block}");
    assert!(block.contains("Content-Length: "), "{block}");
    assert!(after.is_empty(), "a body after the HEAD answer: {after}");
    // h2: curl's nghttp2 will not send a header block over 64 KiB, so a plain h2 client does.
    let answers = h2_gets(&s, &[("x-big", &big), ("x-small", "1")]);
    let (status, content_type, body) = &answers[0];
    assert_eq!(*status, 431, "h2: {}", String::from_utf8_lossy(body));
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let json: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(json["errors"][0]["code"], "UNSUPPORTED");
    // The connection survives: its next request is answered (by the token check).
    assert_eq!(answers[1].0, 401);
}

/// One h2 connection (TLS, ALPN h2) sending GET /v2/ once per `(name, value)` extra header,
/// one after the other: (status, content-type, body) of each.
fn h2_gets(s: &Setup, requests: &[(&str, &str)]) -> Vec<(u16, Option<String>, Vec<u8>)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let ca = s.certs.ca_dir.join("ca.crt");
        let (client, connection) = common::h2client::connect(s.edge.https_port, &ca).await;
        tokio::spawn(connection);
        let mut answers = Vec::new();
        for (name, value) in requests {
            let mut client = client.clone().ready().await.unwrap();
            let request = http::Request::get(s.edge.url("/v2/"))
                .header(*name, *value)
                .body(())
                .unwrap();
            let (response, _) = client.send_request(request, true).unwrap();
            let timeout = std::time::Duration::from_secs(20);
            let response = tokio::time::timeout(timeout, response)
                .await
                .unwrap()
                .unwrap();
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string());
            let mut body = response.into_body();
            let mut bytes = Vec::new();
            while let Some(chunk) = body.data().await {
                let chunk = chunk.unwrap();
                let _ = body.flow_control().release_capacity(chunk.len());
                bytes.extend_from_slice(&chunk);
            }
            answers.push((status, content_type, bytes));
        }
        answers
    })
}

/// Sends `request` raw over TLS (HTTP/1.x) and reads until the edge closes.
fn raw(s: &Setup, request: &str) -> String {
    let mut tls = tls_connect(
        s.edge.https_port,
        &s.certs.ca_dir.join("ca.crt"),
        &["http/1.1"],
    );
    tls.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

/// The same, in plain HTTP straight to the registry.
fn raw_direct(registry: &Registry, request: &str) -> String {
    let mut tcp = TcpStream::connect(registry.addr()).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    tcp.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let _ = tcp.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

fn head_has(response: &str, header: &str) -> bool {
    let head = response.split("\r\n\r\n").next().unwrap_or("");
    head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with(&header.to_ascii_lowercase())
    })
}

#[test]
fn http10_clients_get_close_delimited_bodies_and_requests_without_host_are_handled() {
    // No auth here: an HTTP/1.0 client with a token is not the point.
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let registry = Registry::start(dir.path(), "node");
    let edge = Edge::start(
        dir.path(),
        &certs,
        &upstream_yaml(&[registry.addr()], "repository_hash"),
        "",
    );
    let s = Setup {
        dir,
        certs,
        registry,
        edge,
        admin: 0,
    };
    // 40 tags of 120 characters: a tag list of ~5 KB, which the registry sends chunked to
    // HTTP/1.1 clients.
    let layout = common::tiny_oci_layout(&s.dir.path().join("image"));
    let manifest_path = std::fs::read_dir(s.dir.path().join("image/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("\"layers\":[")))
        .unwrap();
    let seed = format!("docker://{}/big/list:seed", s.registry.addr());
    let out = common::skopeo(&["copy", "--dest-tls-verify=false", &layout, &seed]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest = manifest_path.to_str().unwrap().to_string();
    for i in 0..40 {
        let tag = format!("t{i:02}-{}", "x".repeat(116));
        let put = curl(&[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
            "--data-binary",
            &format!("@{manifest}"),
            &format!("http://{}/v2/big/list/manifests/{tag}", s.registry.addr()),
        ]);
        assert_eq!(put.status, 201, "{}", String::from_utf8_lossy(&put.body));
    }
    let over_11 = curl(&[&format!(
        "http://{}/v2/big/list/tags/list",
        s.registry.addr()
    )]);
    assert_eq!(
        over_11.header("transfer-encoding"),
        Some("chunked"),
        "the registry chunks it for 1.1"
    );

    // HTTP/1.0 with Host: the whole list, close-delimited (or with a length), never chunked.
    let request = "GET /v2/big/list/tags/list HTTP/1.0\r\nHost: localhost\r\n\r\n";
    for (who, response) in [
        ("edge", raw(&s, request)),
        ("registry", raw_direct(&s.registry, request)),
    ] {
        assert!(response.starts_with("HTTP/1."), "{who}: {response}");
        assert!(response.contains(" 200 "), "{who}: {response}");
        assert!(
            !head_has(&response, "transfer-encoding"),
            "{who}: {response}"
        );
        assert!(
            !head_has(&response, "connection: keep-alive"),
            "{who}: {response}"
        );
        let body = response.split_once("\r\n\r\n").unwrap().1;
        let list: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{who}: {e}: {body}"));
        assert_eq!(list["tags"].as_array().unwrap().len(), 41, "{who}");
    }

    // HTTP/1.0 without Host: the registry answers it directly, and so does it through the
    // edge (which gives the request the listener's authority).
    let request = "GET /v2/big/list/tags/list HTTP/1.0\r\n\r\n";
    for (who, response) in [
        ("edge", raw(&s, request)),
        ("registry", raw_direct(&s.registry, request)),
    ] {
        assert!(response.contains(" 200 "), "{who}: {response}");
        assert!(
            !head_has(&response, "transfer-encoding"),
            "{who}: {response}"
        );
    }
    // HTTP/1.1 without Host is a 400 (RFC 9112 §3.2), from the edge in the registry's JSON.
    let response = raw(
        &s,
        "GET /v2/big/list/tags/list HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    let body = response.split_once("\r\n\r\n").unwrap().1;
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert!(json["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("Host"));
    let direct = raw_direct(
        &s.registry,
        "GET /v2/ HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert!(direct.starts_with("HTTP/1.1 400"), "{direct}");
}

#[test]
fn behind_a_trusted_load_balancer_every_url_names_the_public_host() {
    let s = Setup::start("forwarded:\n  trusted_proxies: [\"127.0.0.1/32\"]\n");
    let lb = [
        "-H",
        "Host: edge-1.internal:8443",
        "-H",
        "X-Forwarded-Host: registry.example.com",
        "-H",
        "X-Forwarded-Proto: https",
    ];
    // The challenge's realm.
    let mut args = lb.to_vec();
    let url = s.edge.url("/v2/");
    args.push(&url);
    let challenge = s.curl(&args);
    assert_eq!(challenge.status, 401);
    let www = challenge.header("www-authenticate").unwrap();
    assert!(
        www.starts_with("Bearer realm=\"https://registry.example.com/jwt/auth\""),
        "{www}"
    );
    // A failed login's Basic realm.
    let mut args = lb.to_vec();
    let realm = format!("{}?service={SERVICE}", s.edge.url("/jwt/auth"));
    args.extend(["-u", "alice:wrong", realm.as_str()]);
    let failed = s.curl(&args);
    assert_eq!(failed.status, 401);
    let basic = failed.header("www-authenticate").unwrap();
    assert_eq!(
        basic,
        "Basic realm=\"https://registry.example.com/jwt/auth\""
    );
    // Upload Locations (written by the registry from X-Forwarded-Host) agree with the realm.
    let token = s.token("alice", &["repository:alice/app:pull,push".into()]);
    let token = token.json()["token"].as_str().unwrap().to_string();
    let mut args = lb.to_vec();
    let bearer = format!("Authorization: Bearer {token}");
    let start = s.edge.url("/v2/alice/app/blobs/uploads/");
    args.extend(["-H", bearer.as_str(), "-X", "POST", start.as_str()]);
    let upload = s.curl(&args);
    assert_eq!(upload.status, 202);
    let location = upload.header("location").unwrap();
    assert!(
        location.starts_with("https://registry.example.com/v2/alice/app/blobs/uploads/"),
        "{location}"
    );
    // The plain-HTTP redirect too.
    let redirect = curl(&[
        "-H",
        "Host: edge-1.internal:8080",
        "-H",
        "X-Forwarded-Host: registry.example.com",
        &format!("http://127.0.0.1:{}/v2/", s.edge.http_port),
    ]);
    assert_eq!(redirect.status, 301);
    assert_eq!(
        redirect.header("location"),
        Some("https://registry.example.com/v2/")
    );

    // From a peer that is not trusted, the same headers change nothing.
    let u = Setup::start("");
    let mut args = lb.to_vec();
    let url = u.edge.url("/v2/");
    args.push(&url);
    let www = u.curl(&args);
    let www = www.header("www-authenticate").unwrap();
    assert!(
        www.starts_with("Bearer realm=\"https://edge-1.internal:8443/jwt/auth\""),
        "{www}"
    );
}

#[test]
fn the_access_log_names_the_account_of_a_token_that_lacks_the_scope() {
    let s = Setup::start("");
    // alice may pull public/*, not push there.
    let token = s.token("alice", &["repository:public/app:pull,push".into()]);
    let token = token.json()["token"].as_str().unwrap().to_string();
    let bearer = format!("Authorization: Bearer {token}");
    let refused = s.curl(&[
        "-H",
        &bearer,
        "-X",
        "POST",
        &s.edge.url("/v2/public/app/blobs/uploads/"),
    ]);
    assert_eq!(refused.status, 401);
    assert!(refused
        .header("www-authenticate")
        .unwrap()
        .contains("insufficient_scope"));
    let line = common::wait_for(
        "the refusal's access line",
        std::time::Duration::from_secs(10),
        || {
            s.edge
                .log_text()
                .lines()
                .find(|l| l.contains("method=POST") && l.contains("/v2/public/app/blobs/uploads/"))
                .map(str::to_string)
        },
    );
    assert!(line.contains("account=alice"), "{line}");
    assert!(line.contains("status=401"), "{line}");
}
