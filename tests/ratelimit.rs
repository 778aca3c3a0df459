//! Push-start rate limits keyed by account, against the real registry in token mode:
//! burst then 429 with Retry-After and RateLimit headers, other accounts and pulls
//! unaffected, exempt accounts, and a real client (skopeo) finishing once allowed.

mod common;

use std::time::Duration;

use common::auth::{auth_yaml, edge_with_token_node, login};
use common::{curl, wait_for, Edge};

fn token(edge: &Edge, ca: &str, user: &str, password: &str, scope: &str) -> String {
    let r = login(edge, ca, user, password, scope);
    assert_eq!(r.status, 200);
    r.json()["token"].as_str().unwrap().to_string()
}

fn push_start(edge: &Edge, ca: &str, token: &str, repo: &str) -> common::CurlResult {
    curl(&[
        "--cacert",
        ca,
        "-X",
        "POST",
        "-H",
        &format!("Authorization: Bearer {token}"),
        &edge.url(&format!("/v2/{repo}/blobs/uploads/")),
    ])
}

#[test]
fn push_starts_are_limited_per_account() {
    let dir = tempfile::tempdir().unwrap();
    let limits = "rate_limits:\n  push: { key: account, per_minute: 60, burst: 3, exempt_accounts: [ci-bot] }\n";
    let (certs, _registry, edge) = edge_with_token_node(
        dir.path(),
        &format!("{}{limits}", auth_yaml(dir.path(), "")),
    );
    let ca = certs.ca_dir.join("ca.crt").to_str().unwrap().to_string();
    let alice = token(
        &edge,
        &ca,
        "alice",
        "pw-alice",
        "repository:alice/app:pull,push",
    );
    let bob = token(&edge, &ca, "bob", "pw-bob", "repository:bob/app:pull,push");
    let bot = token(
        &edge,
        &ca,
        "ci-bot",
        "pw-ci-bot",
        "repository:ci-bot/app:pull,push",
    );

    // A cell refills every second, so on a slow machine a refill may land inside the
    // burst: the first answer is exact, the rest only counts down until the 429.
    let mut remaining = Vec::new();
    let limited = loop {
        let r = push_start(&edge, &ca, &alice, "alice/app");
        if r.status == 429 {
            break r;
        }
        assert_eq!(r.status, 202);
        assert_eq!(r.header("ratelimit-limit"), Some("60;w=60"));
        remaining.push(r.header("ratelimit-remaining").unwrap().to_string());
        assert!(remaining.len() <= 10, "never limited: {remaining:?}");
    };
    assert_eq!(remaining[0], "2;w=60", "{remaining:?}");
    assert!(
        remaining.len() >= 3,
        "the burst of 3 is admitted: {remaining:?}"
    );
    assert_eq!(limited.header("content-type"), Some("application/json"));
    assert_eq!(limited.json()["errors"][0]["code"], "TOOMANYREQUESTS");
    let retry_after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    assert_eq!(limited.header("ratelimit-remaining"), Some("0;w=60"));

    assert_eq!(
        push_start(&edge, &ca, &bob, "bob/app").status,
        202,
        "another account is unaffected"
    );
    let pull = curl(&[
        "--cacert",
        &ca,
        "-H",
        &format!("Authorization: Bearer {alice}"),
        &edge.url("/v2/alice/app/tags/list"),
    ]);
    assert_ne!(pull.status, 429, "pulls are never counted");
    assert_ne!(pull.status, 401);
    for _ in 0..5 {
        assert_eq!(
            push_start(&edge, &ca, &bot, "ci-bot/app").status,
            202,
            "exempt account"
        );
    }
    wait_for("a cell to free up", Duration::from_secs(10), || {
        (push_start(&edge, &ca, &alice, "alice/app").status == 202).then_some(())
    });

    // A real client with the budget spent finishes once the limit allows: skopeo retries
    // the 429s on bodiless POSTs itself (honouring Retry-After); a 429 on the manifest PUT
    // (a request with a body, which containers/image never retries) fails that attempt,
    // and --retry-times repeats the copy, whose blobs are then already there.
    while push_start(&edge, &ca, &alice, "alice/app").status == 202 {}
    let layout = common::tiny_oci_layout(&dir.path().join("image"));
    let target = format!("docker://127.0.0.1:{}/alice/limited:v1", edge.https_port);
    let out = common::skopeo_push(
        certs.ca_dir.to_str().unwrap(),
        Some("alice:pw-alice"),
        &layout,
        &target,
        &["--retry-times", "5"],
    );
    assert!(
        out.status.success(),
        "skopeo finishes under the limit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        edge.log_text().contains("status=429"),
        "skopeo was limited on the way"
    );
}

#[test]
fn upload_bandwidth_cap_slows_but_never_fails_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, registry, edge) = common::edge_with_node(
        dir.path(),
        "rate_limits:\n  upload_bytes: { key: client_ip, per_second: 1048576, burst: 1048576 }\n",
    );
    let ca = certs.ca_dir.join("ca.crt");
    // 3 MiB against a 1 MiB burst: the stream must be held, and must arrive intact.
    let bytes: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let base = format!("https://127.0.0.1:{}", edge.https_port);
    let digest = common::push_blob(&base, &ca, "throttled/app", &bytes, &[]);
    assert!(registry.has_blob("throttled/app", &digest));
    let throttled_ms = common::put_throttled_ms(&edge, "throttled/app");
    assert!(
        throttled_ms > 0,
        "the upload was held by the cap: {throttled_ms} ms"
    );
}
