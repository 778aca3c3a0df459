//! Every answer the edge writes itself, asked for over HTTP/2 as docker, containerd and
//! Go-based clients ask: GET and HEAD with curl `--http2`, and HEAD with a plain h2
//! client that, like Go's transport, treats any DATA frame after a HEAD's headers as a
//! protocol error. Each answer must be the registry's JSON error (HEAD: the same head,
//! `Content-Length` of the GET body, no body, the stream ended on the HEADERS frame).

mod common;

use common::auth::{auth_yaml, edge_with_token_node, SERVICE};
use common::{curl, make_certs, upstream_yaml, Checks, CurlResult, Edge};

/// GET and HEAD of `url` over h2 with `extra` curl arguments: both answer `status` with
/// the registry error `code`; the HEAD carries GET's length and headers.
#[track_caller]
fn assert_get_and_head(ca: &str, url: &str, extra: &[&str], status: u16, code: &str) {
    let ask = |method: &[&str]| -> CurlResult {
        let mut args = vec!["--http2", "--cacert", ca];
        args.extend_from_slice(method);
        args.extend_from_slice(extra);
        args.push(url);
        curl(&args)
    };
    let get = ask(&[]);
    assert_eq!(get.http_version, "2", "not h2: {url}");
    assert_eq!(get.status, status, "GET {url}: {}", get.text());
    assert_eq!(
        get.json()["errors"][0]["code"],
        code,
        "GET {url}: {}",
        get.text()
    );
    assert_eq!(get.header("content-type"), Some("application/json"));
    assert_eq!(
        get.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    // curl writes a HEAD answer's head where the body would go: [`h2_head`] checks frames.
    let head = ask(&["--head"]);
    assert_eq!(head.http_version, "2");
    assert_eq!(head.status, status, "HEAD {url}");
    assert_eq!(
        head.header("content-length").map(str::to_string),
        Some(get.body.len().to_string()),
        "HEAD {url}: Content-Length is not the GET body's"
    );
    assert_eq!(head.header("content-type"), Some("application/json"));
    assert_eq!(
        head.header("www-authenticate"),
        get.header("www-authenticate"),
        "HEAD {url}: another challenge than GET's"
    );
}

/// HEAD of `path` on one h2 connection: (status, DATA bytes received after the head).
/// Pingora ends every stream with a DATA frame (empty after a HEAD answer) because it
/// ignores the end flag on headers; Go's transport refuses only DATA frames with bytes
/// after a HEAD (`processData`: "received DATA on a HEAD request").
fn h2_head(port: u16, ca: &std::path::Path, path: &str) -> (u16, usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, connection) = common::h2client::connect(port, ca).await;
        tokio::spawn(connection);
        let mut client = client.ready().await.unwrap();
        let request = http::Request::head(format!("https://localhost:{port}{path}"))
            .body(())
            .unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        let timeout = std::time::Duration::from_secs(20);
        let response = tokio::time::timeout(timeout, response)
            .await
            .unwrap()
            .unwrap();
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut data = 0;
        while let Some(chunk) = body.data().await {
            data += chunk.map(|c| c.len()).unwrap_or(0);
        }
        (status, data)
    })
}

#[test]
fn own_answers_over_h2_get_and_head() {
    let dir = tempfile::tempdir().unwrap();
    let limits = "rate_limits:\n  push: { key: account, per_minute: 1, burst: 1 }\n";
    let (certs, _registry, edge) = edge_with_token_node(
        dir.path(),
        &format!(
            "{}{limits}policy:\n  state_dir: {}\n  quotas:\n    namespaces: {{ alice: 0 }}\n",
            auth_yaml(
                dir.path(),
                "  failed_logins: { per_client_ip: 2, per_account: 100 }\n"
            ),
            dir.path().join("policy").display()
        ),
    );
    // A second edge in read-only mode whose only node never answers.
    let dead = common::free_port();
    let down = Edge::start(
        &dir.path().join("down"),
        &make_certs(&dir.path().join("down")),
        &upstream_yaml(&[format!("127.0.0.1:{dead}")], "repository_hash"),
        "maintenance:\n  read_only: true\n",
    );
    let ca_path = certs.ca_dir.join("ca.crt");
    let ca = ca_path.to_str().unwrap();
    let down_ca_path = dir.path().join("down/ca/ca.crt");
    let down_ca = down_ca_path.to_str().unwrap();
    let realm = |query: &str| edge.url(&format!("/jwt/auth?service={SERVICE}{query}"));
    let scope = "&scope=repository:alice/app:pull,push";

    let mut checks = Checks::new();
    checks.run("401 without a token", || {
        assert_get_and_head(ca, &edge.url("/v2/"), &[], 401, "UNAUTHORIZED");
        let manifest = edge.url("/v2/alice/app/manifests/v1");
        assert_get_and_head(ca, &manifest, &[], 401, "UNAUTHORIZED");
        assert_eq!(
            h2_head(edge.https_port, &ca_path, "/v2/alice/app/manifests/v1"),
            (401, 0)
        );
    });
    checks.run("400 for an invalid repository name", || {
        let url = edge.url("/v2/Not..Valid/manifests/v1");
        assert_get_and_head(ca, &url, &[], 400, "NAME_INVALID");
        let path = "/v2/Not..Valid/manifests/v1";
        assert_eq!(h2_head(edge.https_port, &ca_path, path), (400, 0));
    });
    checks.run("429 for a push over the limit", || {
        let token = curl(&[
            "--http2",
            "--cacert",
            ca,
            "-u",
            "bob:pw-bob",
            &realm("&scope=repository:bob/app:pull,push"),
        ]);
        let token = token.json()["token"].as_str().unwrap().to_string();
        let bearer = format!("Authorization: Bearer {token}");
        let start = edge.url("/v2/bob/app/blobs/uploads/");
        let post = |_: u8| {
            curl(&[
                "--http2", "--cacert", ca, "-H", &bearer, "-X", "POST", &start,
            ])
        };
        assert_eq!(post(1).status, 202);
        let refused = post(2);
        assert_eq!(refused.http_version, "2");
        assert_eq!(refused.status, 429, "{}", refused.text());
        assert_eq!(refused.json()["errors"][0]["code"], "TOOMANYREQUESTS");
        assert!(refused.header("retry-after").is_some());
    });
    checks.run("403 for a push over the namespace's quota", || {
        let token = curl(&["--http2", "--cacert", ca, "-u", "alice:pw-alice", &realm(scope)]);
        let token = token.json()["token"].as_str().unwrap().to_string();
        let bearer = format!("Authorization: Bearer {token}");
        let start = edge.url("/v2/alice/app/blobs/uploads/");
        let refused = curl(&["--http2", "--cacert", ca, "-H", &bearer, "-X", "POST", &start]);
        assert_eq!(refused.http_version, "2");
        assert_eq!(refused.status, 403, "{}", refused.text());
        assert_eq!(refused.json()["errors"][0]["code"], "DENIED");
        // A manifest is refused once its body is read, before the registry sees it.
        let manifest = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","size":10},"layers":[]}"#;
        let put = curl(&[
            "--http2",
            "--cacert",
            ca,
            "-H",
            &bearer,
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
            "-X",
            "PUT",
            "--data-binary",
            manifest,
            &edge.url("/v2/alice/app/manifests/v1"),
        ]);
        assert_eq!(put.status, 403, "{}", put.text());
        assert_eq!(put.json()["errors"][0]["code"], "DENIED");
        assert!(put.text().contains("would exceed its storage quota"), "{}", put.text());
    });
    checks.run("429 after failed logins, from the realm", || {
        // Wrong passwords get 401 until the client's allowance (2 a minute) is spent.
        let wrong = &["-u", "alice:wrong"];
        assert_get_and_head(ca, &realm(scope), wrong, 401, "UNAUTHORIZED");
        let login = || {
            curl(&[
                "--http2",
                "--cacert",
                ca,
                "-u",
                "alice:wrong",
                &realm(scope),
            ])
        };
        let statuses: Vec<u16> = (0..3).map(|_| login().status).collect();
        assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
        assert_get_and_head(ca, &realm(scope), wrong, 429, "TOOMANYREQUESTS");
        assert!(
            login().header("retry-after").is_some(),
            "429 without Retry-After"
        );
    });
    checks.run("405 in read-only mode", || {
        let url = down.url("/v2/team/app/manifests/v1");
        for method in ["DELETE", "PUT"] {
            let answer = curl(&["--http2", "--cacert", down_ca, "-X", method, &url]);
            assert_eq!(answer.http_version, "2");
            assert_eq!(answer.status, 405, "{method}: {}", answer.text());
            assert_eq!(answer.json()["errors"][0]["code"], "UNSUPPORTED");
        }
    });
    checks.run("503 when no registry node is healthy", || {
        let url = down.url("/v2/team/app/manifests/v1");
        // The health check marks the node down within a few intervals.
        common::wait_for(
            "the node to be marked down",
            std::time::Duration::from_secs(10),
            || (curl(&["--http2", "--cacert", down_ca, &url]).status == 503).then_some(()),
        );
        assert_get_and_head(down_ca, &url, &[], 503, "UNAVAILABLE");
        assert_eq!(
            h2_head(down.https_port, &down_ca_path, "/v2/team/app/manifests/v1"),
            (503, 0)
        );
    });
    checks.finish();
}
