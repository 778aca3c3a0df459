//! `policy.immutable_tags` against the real registry and skopeo: a protected tag keeps its
//! digest and its manifest, for token auth at the edge (the edge asks the registry with a
//! token it signs) and in proxy-only mode (with the client's own credentials).

mod common;

use common::policy::Setup;
use common::{make_certs, skopeo_push, upstream_yaml, Edge, Registry};

const RULES: &str =
    "  immutable_tags:\n    - { name: \"**\", tags: [\"v[0-9]*\"] }\n    - exempt_accounts: [admin]\n";

#[test]
fn immutable_tags_keep_their_digest_and_their_manifest() {
    let s = Setup::policy(RULES);
    s.push("alice", 1 << 20, 100, "alice/imm:v1.0")
        .expect("a new tag");
    let (first, _) = s.manifest("alice/imm", "v1.0");
    let refused = s.push("alice", 1 << 20, 200, "alice/imm:v1.0").unwrap_err();
    assert!(refused.contains("denied"), "{refused}");
    assert!(
        refused.contains("tag v1.0 of alice/imm is immutable"),
        "{refused}"
    );
    assert_eq!(s.manifest("alice/imm", "v1.0").0, first, "the tag moved");
    s.push("alice", 1 << 20, 100, "alice/imm:v1.0")
        .expect("the same content again");
    s.push("alice", 1 << 20, 200, "alice/imm:latest")
        .expect("a tag no rule names");
    s.push("admin", 1 << 20, 200, "alice/imm:v1.0")
        .expect("an exempt account");
    let (second, _) = s.manifest("alice/imm", "v1.0");
    assert_ne!(second, first);
    // v1.0 points to the second manifest now: it cannot be deleted; the first can.
    let kept = s.delete("alice", "alice/imm", &second);
    assert_eq!(kept.status, 403, "{}", kept.text());
    assert_eq!(kept.json()["errors"][0]["code"], "DENIED");
    assert!(
        kept.text().contains("tag v1.0 of alice/imm is immutable"),
        "{}",
        kept.text()
    );
    assert_eq!(s.delete("alice", "alice/imm", &first).status, 202);
}

/// Without `auth` at the edge the registry checks users itself (htpasswd): the edge's
/// `HEAD` of the tag carries the client's `Authorization`, so the rule holds there too.
#[test]
fn proxy_only_mode_checks_tags_with_the_clients_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start_with(
        dir.path(),
        "node",
        &common::auth::registry_htpasswd_block(dir.path()),
    );
    let certs = make_certs(dir.path());
    let extra = format!(
        "policy:\n  state_dir: {}\n{RULES}",
        dir.path().join("policy").display()
    );
    let edge = Edge::start(
        dir.path(),
        &certs,
        &upstream_yaml(&[registry.addr()], "repository_hash"),
        &extra,
    );
    let push = |seed: u64, tag: &str| {
        let layout = dir.path().join(format!("image-{seed}"));
        let source = match layout.exists() {
            true => format!("oci:{}:x", layout.display()),
            false => common::images::noise_image(&layout, "x", 1 << 20, seed),
        };
        let out = skopeo_push(
            certs.ca_dir.to_str().unwrap(),
            Some("alice:pw-alice"),
            &source,
            &format!("docker://127.0.0.1:{}/alice/imm:{tag}", edge.https_port),
            &[],
        );
        match out.status.success() {
            true => Ok(()),
            false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        }
    };
    push(100, "v1.0").expect("a new tag");
    let refused = push(200, "v1.0").unwrap_err();
    assert!(
        refused.contains("tag v1.0 of alice/imm is immutable"),
        "{refused}"
    );
    push(100, "v1.0").expect("the same content again");
}
