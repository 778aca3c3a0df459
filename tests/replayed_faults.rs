//! Faults found by replaying public bug reports (issue 29) that need the real registry with
//! token auth and `policy:`: refusals decided from a body after `Expect: 100-continue`,
//! tokens with clock skew, and push budgets spent on pushes the edge refused.
//!
//! skopeo (containers/image, Go's net/http) never sends `Expect: 100-continue` for these
//! requests, so curl and raw sockets send it here.

mod common;

use std::io::{Read, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use common::auth::{login, ISSUER, SERVICE};
use common::policy::Setup;
use common::{curl, tls_connect, CurlResult};

/// Quota 1 MiB on `alice/app` (namespaces two segments deep), `v*` tags of `alice/imm`
/// immutable (admin exempt), and bodies over 4 MiB refused.
const POLICY: &str = "  namespace_depth: 2\n  quotas:\n    namespaces: { alice/app: 1MiB }\n  \
    immutable_tags:\n    - { name: \"alice/imm\", tags: [\"v*\"] }\n    - exempt_accounts: [admin]\n\
    limits:\n  max_body_size: 4194304\n";

/// Pushes limited to 3 per account (admin exempt), with no refill during a test.
const PUSH_LIMIT: &str =
    "rate_limits:\n  push: { key: account, per_minute: 1, burst: 3, exempt_accounts: [admin] }\n";

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// An OCI manifest whose config and layer are `blobs` (digest, size).
fn manifest(config: (&str, u64), layer: (&str, u64)) -> Vec<u8> {
    let descriptor = |(digest, size): (&str, u64)| serde_json::json!({"mediaType": "application/octet-stream", "digest": digest, "size": size});
    serde_json::to_vec(
        &serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": descriptor(config), "layers": [descriptor(layer)]}),
    )
    .unwrap()
}

/// A digest no registry holds (its descriptor's size is what the edge counts).
fn unknown_digest(seed: u8) -> String {
    common::digest(&[seed; 7])
}

fn bearer_for(s: &Setup, user: &str, repository: &str) -> String {
    let scope = format!("repository:{repository}:pull,push");
    let answer = login(&s.edge, &s.ca(), user, &format!("pw-{user}"), &scope);
    format!(
        "Authorization: Bearer {}",
        answer.json()["token"].as_str().unwrap()
    )
}

/// `alice/imm:v1` pushed by admin (exempt from the push limit): returns its manifest.
fn protected_tag(s: &Setup) -> Vec<u8> {
    let admin = bearer_for(s, "admin", "alice/imm");
    let base = format!("https://127.0.0.1:{}", s.edge.https_port);
    let ca = s.certs.ca_dir.join("ca.crt");
    let config = common::push_blob(&base, &ca, "alice/imm", b"{}", &["-H", &admin]);
    let layer = common::push_blob(&base, &ca, "alice/imm", b"layer", &["-H", &admin]);
    let body = manifest((&config, 2), (&layer, 5));
    let file = s.dir.path().join("v1.json");
    std::fs::write(&file, &body).unwrap();
    let put = curl(&[
        "--cacert",
        &s.ca(),
        "-X",
        "PUT",
        "-H",
        &admin,
        "-H",
        &format!("Content-Type: {OCI_MANIFEST}"),
        "--data-binary",
        &format!("@{}", file.display()),
        &s.edge.url("/v2/alice/imm/manifests/v1"),
    ]);
    assert_eq!(put.status, 201, "{}", put.text());
    body
}

/// A 403 `DENIED` in the registry's JSON format whose message contains `says`.
fn assert_denied(what: &str, got: &CurlResult, says: &str) {
    assert_eq!(got.status, 403, "{what}: {} {}", got.text(), got.stderr);
    assert_eq!(got.json()["errors"][0]["code"], "DENIED", "{what}");
    assert!(got.text().contains(says), "{what}: {}", got.text());
}

/// Writes `head` with `Expect: 100-continue` on a fresh HTTP/1.1 connection, waits for the
/// interim `100 Continue`, sends `body`, and returns the final answer's head and body.
fn raw_expect_continue(s: &Setup, head: &str, body: &[u8]) -> String {
    let mut tls = tls_connect(
        s.edge.https_port,
        &s.certs.ca_dir.join("ca.crt"),
        &["http/1.1"],
    );
    tls.write_all(head.as_bytes()).unwrap();
    let (status, interim) = common::read_head(&mut tls);
    assert_eq!(
        status, 100,
        "the registry's 100 Continue comes first: {interim}"
    );
    tls.write_all(body).unwrap();
    let mut rest = Vec::new();
    let _ = tls.read_to_end(&mut rest);
    let after = interim
        .split_once("\r\n\r\n")
        .map_or("", |(_, after)| after);
    format!("{after}{}", String::from_utf8_lossy(&rest))
}

/// Every refusal the edge decides from a body reaches a client that sent `Expect:
/// 100-continue` and was told to go on: after the registry's `100 Continue`, over HTTP/1.1,
/// and over HTTP/2 (curl and raw sockets).
#[test]
fn refusals_decided_from_the_body_reach_clients_that_expect_100_continue() {
    let s = Setup::policy(POLICY);
    let v1 = protected_tag(&s);
    let alice_imm = bearer_for(&s, "alice", "alice/imm");
    let alice_app = bearer_for(&s, "alice", "alice/app");
    let moved = manifest((&unknown_digest(1), 2), (&unknown_digest(2), 5));
    let over = manifest(
        (&unknown_digest(3), 600 << 10),
        (&unknown_digest(4), 600 << 10),
    );
    let big = s.dir.path().join("big.blob");
    std::fs::write(&big, vec![7u8; 2 << 20]).unwrap();
    let big_arg = format!("@{}", big.display());
    let expect = ["-H", "Expect: 100-continue"];
    let ca = s.ca();
    for version in ["--http1.1", "--http2"] {
        let what = |case: &str| format!("{case} over {version}");
        // A protected tag moved to another manifest.
        let mut args = vec![version];
        args.extend(expect);
        let got = s.put_manifest("alice/imm", "v1", &moved, &args);
        assert_denied(
            &what("immutable tag"),
            &got,
            "tag v1 of alice/imm is immutable",
        );
        // A manifest that takes its namespace over the quota.
        let got = s.put_manifest("alice/app", "big", &over, &args);
        assert_denied(
            &what("manifest over quota"),
            &got,
            "would exceed its storage quota",
        );
        // A chunked PATCH that passes the quota while it streams.
        let location = common::start_upload(
            &s.edge.url("/v2/alice/app/blobs/uploads/"),
            &s.ca(),
            &["-H", &alice_app],
        );
        let mut args = vec!["--cacert", &ca, version, "-X", "PATCH", "-H", &alice_app];
        args.extend(expect);
        args.extend([
            "-H",
            "Transfer-Encoding: chunked",
            "-H",
            "Content-Type: application/octet-stream",
        ]);
        args.extend(["--data-binary", &big_arg, &location]);
        let got = curl(&args);
        assert_denied(&what("chunked PATCH over quota"), &got, "storage quota");
    }
    assert_eq!(
        s.manifest("alice/imm", "v1").0,
        common::digest(&v1),
        "the tag moved"
    );

    // Raw HTTP/1.1: the interim 100, then the refusal on the same connection.
    let head = format!(
        "PUT /v2/alice/imm/manifests/v1 HTTP/1.1\r\nHost: localhost\r\n{alice_imm}\r\n\
         Content-Type: {OCI_MANIFEST}\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        moved.len()
    );
    let answer = raw_expect_continue(&s, &head, &moved);
    assert!(answer.starts_with("HTTP/1.1 403 "), "{answer}");
    assert!(answer.contains("\"code\":\"DENIED\""), "{answer}");
    let head = format!(
        "PUT /v2/alice/app/manifests/big HTTP/1.1\r\nHost: localhost\r\n{alice_app}\r\n\
         Content-Type: {OCI_MANIFEST}\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
    );
    let mut chunked = format!("{:x}\r\n", over.len()).into_bytes();
    chunked.extend_from_slice(&over);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let answer = raw_expect_continue(&s, &head, &chunked);
    assert!(answer.starts_with("HTTP/1.1 403 "), "{answer}");
    assert!(answer.contains("storage quota"), "{answer}");
    // The access line records the final answer, not the interim 100.
    let log = s.edge.log_text();
    assert!(
        !log.lines()
            .any(|l| l.contains("registry_edge::access") && l.contains("status=100")),
        "{log}"
    );
}

/// A registry token signed with the edge's own key, `nbf` and `exp` shifted by `skew`
/// seconds (positive: issued by a clock ahead of this one).
fn skewed_token(s: &Setup, repository: &str, skew: i64) -> String {
    registry_edge::auth::token::jwt_crypto::install();
    let certs = s.dir.path().join("certs");
    let key = std::fs::read(certs.join("registry-auth.key")).unwrap();
    let crt = std::fs::read_to_string(certs.join("registry-auth.crt")).unwrap();
    let der: String = crt.lines().filter(|l| !l.starts_with("-----")).collect();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = serde_json::json!({
        "iss": ISSUER, "aud": SERVICE, "sub": "alice",
        "iat": now + skew, "nbf": now + skew, "exp": now + skew + 10,
        "jti": format!("skew-{skew}"),
        "access": [{"type": "repository", "name": repository, "actions": ["pull", "push"]}],
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.x5c = Some(vec![der]);
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&key).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

/// A token whose times are off by half a minute either way (another instance's clock) is
/// accepted at the edge as the registry accepts it: 60 s of leeway, as distribution allows.
#[test]
fn tokens_the_registry_accepts_despite_clock_skew_pass_the_edge() {
    let s = Setup::policy("");
    let repository = "alice/skew";
    for (what, skew) in [("nbf 30 s ahead", 30), ("exp 30 s past", -40)] {
        let token = skewed_token(&s, repository, skew);
        let bearer = format!("Authorization: Bearer {token}");
        let path = format!("/v2/{repository}/tags/list");
        // The registry itself: 404 NAME_UNKNOWN (an empty repository) means accepted.
        let direct = curl(&[
            "-H",
            &bearer,
            &format!("http://{}{path}", s.registry.addr()),
        ]);
        assert_eq!(direct.status, 404, "registry, {what}: {}", direct.text());
        for version in ["--http1.1", "--http2"] {
            let edge = curl(&[
                "--cacert",
                &s.ca(),
                version,
                "-H",
                &bearer,
                &s.edge.url(&path),
            ]);
            assert_eq!(edge.status, 404, "edge {version}, {what}: {}", edge.text());
        }
    }
    // Past the leeway both refuse it.
    let token = skewed_token(&s, repository, -80);
    let bearer = format!("Authorization: Bearer {token}");
    let edge = curl(&[
        "--cacert",
        &s.ca(),
        "-H",
        &bearer,
        &s.edge.url("/v2/alice/skew/tags/list"),
    ]);
    assert_eq!(edge.status, 401, "{}", edge.text());
}

/// `RateLimit-Remaining` of an answer, as a number.
fn remaining(got: &CurlResult) -> u32 {
    let value = got
        .header("ratelimit-remaining")
        .unwrap_or_else(|| panic!("no RateLimit-Remaining: {} {:?}", got.status, got.headers));
    value.split(';').next().unwrap().parse().unwrap()
}

/// A push the edge refuses costs no push budget, whatever refuses it: the admission's size
/// check, the policy once the body arrived (immutable tag, quota), over HTTP/1.1 and HTTP/2.
/// After many refusals the account still has its whole burst.
#[test]
fn pushes_the_edge_refuses_cost_no_push_budget() {
    let s = Setup::policy(&format!("{POLICY}{PUSH_LIMIT}"));
    protected_tag(&s);
    let moved = manifest((&unknown_digest(5), 2), (&unknown_digest(6), 5));
    let over = manifest(
        (&unknown_digest(7), 600 << 10),
        (&unknown_digest(8), 600 << 10),
    );
    // A namespace without a quota: only the size limit refuses these.
    let alice_free = bearer_for(&s, "alice", "alice/free");
    let uploads = s.edge.url("/v2/alice/free/blobs/uploads/");
    let too_big = s.dir.path().join("too-big.blob");
    std::fs::write(&too_big, vec![1u8; 5 << 20]).unwrap();
    let too_big = format!("@{}", too_big.display());
    for round in 0..2 {
        for version in ["--http1.1", "--http2"] {
            let what = format!("round {round} {version}");
            let got = s.put_manifest("alice/imm", "v1", &moved, &[version]);
            assert_denied(&format!("immutable, {what}"), &got, "is immutable");
            let got = s.put_manifest("alice/app", "big", &over, &[version]);
            assert_denied(&format!("quota, {what}"), &got, "storage quota");
            // A monolithic upload declaring more than limits.max_body_size.
            let got = curl(&[
                "--cacert",
                &s.ca(),
                version,
                "-X",
                "POST",
                "-H",
                &alice_free,
                "--data-binary",
                &too_big,
                &uploads,
            ]);
            assert_eq!(got.status, 413, "{what}: {}", got.text());
        }
    }
    // Twelve refusals later, the whole burst of three is still there.
    let mut left = Vec::new();
    let upload_start = || {
        curl(&[
            "--cacert",
            &s.ca(),
            "-X",
            "POST",
            "-H",
            &alice_free,
            &uploads,
        ])
    };
    for _ in 0..3 {
        let got = upload_start();
        assert_eq!(got.status, 202, "{}", got.text());
        left.push(remaining(&got));
    }
    assert_eq!(left, [2, 1, 0]);
    let got = upload_start();
    assert_eq!(got.status, 429, "the limit still holds: {}", got.text());
}
