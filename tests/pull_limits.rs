//! Pull limits (`rate_limits.pull`) and ACL `from:` rules against the real registry with
//! token auth, clients placed by a trusted proxy's `X-Forwarded-For`: anonymous clients
//! counted per address (two IPv6 addresses of one /64 share a budget), accounts per
//! account, manifest `GET`s only (not `HEAD`s, not blobs), answers from the cache counted
//! the same, Docker Hub's headers decreasing, 429 with `Retry-After`, exempt accounts; then
//! one token allowed from one network and refused from another.

mod common;

use common::auth::{auth_yaml, granted, login, registry_auth_block, SERVICE};
use common::{curl, make_certs, skopeo_push, tiny_oci_layout, upstream_yaml, Checks, CurlResult};
use common::{Edge, Registry};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn extra(dir: &std::path::Path) -> String {
    format!(
        "    - {{ account: \"\", name: \"internal/**\", actions: [pull], from: [\"10.0.0.0/8\", \"fd00::/8\"] }}\n\
         forwarded:\n  trusted_proxies: [\"127.0.0.0/8\"]\n\
         cache:\n  dir: {}\n  max_size: 1GiB\n\
         rate_limits:\n  pull:\n    anonymous: {{ per_hour: 1, burst: 3 }}\n    \
         authenticated: {{ per_hour: 1, burst: 2 }}\n    exempt_accounts: [admin, ci-bot]\n",
        dir.join("cache").display()
    )
}

/// An anonymous (or `user:password`) token for `scope`, asked from `client`.
fn token(edge: &Edge, ca: &str, creds: Option<&str>, scope: &str, client: &str) -> String {
    let url = format!("{}?service={SERVICE}&scope={scope}", edge.url("/jwt/auth"));
    let forwarded = format!("X-Forwarded-For: {client}");
    let mut args = vec!["--cacert", ca, "-H", &forwarded];
    if let Some(creds) = creds {
        args.extend(["-u", creds]);
    }
    args.push(&url);
    let answer = curl(&args);
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json()["token"].as_str().unwrap().to_string()
}

/// `method` on `path` with the bearer `token`, from `client`, with `X-Request-Id: id`.
fn ask(
    edge: &Edge,
    ca: &str,
    (method, path): (&str, &str),
    token: &str,
    client: &str,
) -> CurlResult {
    let (auth, forwarded) = (
        format!("Authorization: Bearer {token}"),
        format!("X-Forwarded-For: {client}"),
    );
    let accept = format!("Accept: {OCI_MANIFEST}");
    let mut args = vec!["--cacert", ca, "-H", &auth, "-H", &forwarded, "-H", &accept];
    match method {
        "HEAD" => args.push("-I"),
        _ => args.extend(["-X", method]),
    }
    let url = edge.url(path);
    args.push(&url);
    curl(&args)
}

/// (`RateLimit-Limit`, `RateLimit-Remaining`, `Docker-RateLimit-Source`) of an answer.
fn standing(answer: &CurlResult) -> (Option<String>, Option<String>, Option<String>) {
    let header = |name| answer.header(name).map(str::to_string);
    (
        header("ratelimit-limit"),
        header("ratelimit-remaining"),
        header("docker-ratelimit-source"),
    )
}

fn counted(
    limit: &str,
    remaining: u32,
    source: &str,
) -> (Option<String>, Option<String>, Option<String>) {
    (
        Some(limit.to_string()),
        Some(format!(
            "{remaining};w={}",
            limit.split_once(";w=").unwrap().1
        )),
        Some(source.to_string()),
    )
}

#[test]
fn pulls_are_limited_per_address_and_account_and_from_rules_follow_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let mut registry = Registry::start_with(dir.path(), "node", &registry_auth_block(dir.path()));
    let edge = Edge::start(
        dir.path(),
        &certs,
        &upstream_yaml(&[registry.addr()], "repository_hash"),
        &auth_yaml(dir.path(), &extra(dir.path())),
    );
    let ca = certs.ca_dir.join("ca.crt").to_str().unwrap().to_string();
    let layout = tiny_oci_layout(&dir.path().join("image"));
    for repository in ["public/img", "internal/img"] {
        let target = format!("docker://127.0.0.1:{}/{repository}:v1", edge.https_port);
        let out = skopeo_push(
            certs.ca_dir.to_str().unwrap(),
            Some("admin:pw-admin"),
            &layout,
            &target,
            &[],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let by_tag = ("GET", "/v2/public/img/manifests/v1");
    let anonymous = token(&edge, &ca, None, "repository:public/img:pull", "192.0.2.1");
    let mut checks = Checks::new();

    checks.run(
        "anonymous pulls count per /64, HEADs and blobs do not, then 429",
        || {
            let first = ask(&edge, &ca, by_tag, &anonymous, "2001:db8::1");
            assert_eq!(first.status, 200, "{}", first.text());
            assert_eq!(standing(&first), counted("3;w=10800", 2, "2001:db8::/64"));
            let config = first.json()["config"]["digest"]
                .as_str()
                .unwrap()
                .to_string();
            let head = ask(&edge, &ca, ("HEAD", by_tag.1), &anonymous, "2001:db8::1");
            assert_eq!(
                (head.status, standing(&head).1),
                (200, None),
                "a HEAD is not counted"
            );
            let blob = ask(
                &edge,
                &ca,
                ("GET", &format!("/v2/public/img/blobs/{config}")),
                &anonymous,
                "2001:db8::1",
            );
            assert_eq!(
                (blob.status, standing(&blob).1),
                (200, None),
                "a blob is not counted"
            );
            let second = ask(&edge, &ca, by_tag, &anonymous, "2001:db8::ffff:2");
            assert_eq!(
                standing(&second),
                counted("3;w=10800", 1, "2001:db8::/64"),
                "same /64"
            );
            let third = ask(&edge, &ca, by_tag, &anonymous, "2001:db8::1");
            assert_eq!(standing(&third).1.as_deref(), Some("0;w=10800"));
            let limited = ask(&edge, &ca, by_tag, &anonymous, "2001:db8::3");
            assert_eq!(limited.status, 429, "{}", limited.text());
            assert_eq!(limited.json()["errors"][0]["code"], "TOOMANYREQUESTS");
            assert!(
                limited
                    .header("retry-after")
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
                    >= 1
            );
            assert_eq!(standing(&limited), counted("3;w=10800", 0, "2001:db8::/64"));
            let other = ask(&edge, &ca, by_tag, &anonymous, "2001:db8:0:1::1");
            assert_eq!(
                standing(&other),
                counted("3;w=10800", 2, "2001:db8:0:1::/64"),
                "another /64"
            );
        },
    );
    checks.run(
        "answers from the cache carry the headers and count the same",
        || {
            let manifest = ask(&edge, &ca, by_tag, &anonymous, "198.51.100.7");
            let digest = manifest
                .header("docker-content-digest")
                .unwrap()
                .to_string();
            let by_digest = ("GET", format!("/v2/public/img/manifests/{digest}"));
            let fill = ask(
                &edge,
                &ca,
                (by_digest.0, &by_digest.1),
                &anonymous,
                "198.51.100.7",
            );
            assert_eq!(standing(&fill), counted("3;w=10800", 1, "198.51.100.7"));
            let cached = ask(
                &edge,
                &ca,
                (by_digest.0, &by_digest.1),
                &anonymous,
                "198.51.100.7",
            );
            assert_eq!(cached.status, 200);
            assert_eq!(standing(&cached), counted("3;w=10800", 0, "198.51.100.7"));
            let served: Vec<String> = edge
                .log_text()
                .lines()
                .filter(|l| {
                    l.contains("method=GET") && l.contains(&digest) && l.contains("upstream=cache")
                })
                .map(str::to_string)
                .collect();
            assert!(!served.is_empty(), "no manifest answered from the cache");
            assert_eq!(
                ask(
                    &edge,
                    &ca,
                    (by_digest.0, &by_digest.1),
                    &anonymous,
                    "198.51.100.7"
                )
                .status,
                429
            );
            assert!(
                edge.log_text().contains("limited:pull"),
                "the access line says limited:pull"
            );
        },
    );
    checks.run("accounts are counted by account; exempt ones never", || {
        let alice = token(
            &edge,
            &ca,
            Some("alice:pw-alice"),
            "repository:public/img:pull",
            "192.0.2.1",
        );
        for remaining in [1, 0] {
            let answer = ask(&edge, &ca, by_tag, &alice, "192.0.2.50");
            assert_eq!(standing(&answer), counted("2;w=7200", remaining, "alice"));
        }
        assert_eq!(ask(&edge, &ca, by_tag, &alice, "192.0.2.51").status, 429);
        let bot = token(
            &edge,
            &ca,
            Some("ci-bot:pw-ci-bot"),
            "repository:public/img:pull",
            "192.0.2.1",
        );
        for _ in 0..5 {
            let answer = ask(&edge, &ca, by_tag, &bot, "192.0.2.50");
            assert_eq!((answer.status, standing(&answer).1), (200, None));
        }
    });
    checks.run(
        "a from: rule grants where the client is, and its token works only there",
        || {
            let scope = "repository:internal/img:pull";
            let inside = token(&edge, &ca, None, scope, "10.1.2.3");
            let manifest = ("GET", "/v2/internal/img/manifests/v1");
            assert_eq!(ask(&edge, &ca, manifest, &inside, "10.1.2.3").status, 200);
            assert_eq!(ask(&edge, &ca, manifest, &inside, "fd00::5").status, 200);
            let replayed = ask(&edge, &ca, manifest, &inside, "192.0.2.9");
            assert_eq!(
                replayed.status,
                401,
                "the same token from outside: {}",
                replayed.text()
            );
            let url = format!("{}?service={SERVICE}&scope={scope}", edge.url("/jwt/auth"));
            let outside = curl(&["--cacert", &ca, "-H", "X-Forwarded-For: 192.0.2.9", &url]);
            assert!(granted(&outside).is_empty(), "granted from outside");
            // The rule selects anonymous clients only; alice (from 127.0.0.1) gets nothing.
            assert!(granted(&login(&edge, &ca, "alice", "pw-alice", scope)).is_empty());
        },
    );
    checks.run(
        "the edge's own failure to a counted pull carries the standing too",
        || {
            registry.stop();
            let failed = ask(&edge, &ca, by_tag, &anonymous, "203.0.113.9");
            assert!(failed.status >= 500, "{}: {}", failed.status, failed.text());
            assert_eq!(standing(&failed), counted("3;w=10800", 2, "203.0.113.9"));
        },
    );
    checks.finish();
}
