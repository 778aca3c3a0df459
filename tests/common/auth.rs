//! Token-auth fixtures shared by the auth and rate-limit tests: users, the edge's
//! `auth:` section and the registry's matching `auth.token` block.

use std::path::Path;

pub const SERVICE: &str = "container_registry";
pub const ISSUER: &str = "registry-edge-test";

pub fn htpasswd(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("htpasswd");
    let lines: Vec<String> = [
        ("alice", "pw-alice"),
        ("bob", "pw-bob"),
        ("admin", "pw-admin"),
        ("ci-bot", "pw-ci-bot"),
    ]
    .iter()
    .map(|(u, p)| registry_edge::registry_config::htpasswd_line(u, p, 4).unwrap())
    .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

pub fn auth_yaml(dir: &Path, extra: &str) -> String {
    format!(
        "auth:\n  token:\n    service: {SERVICE}\n    issuer: {ISSUER}\n    signing_key: {key}\n    certificate: {crt}\n    expiration: 5m\n  \
         users:\n    htpasswd: {htpasswd}\n  acl:\n    \
         - {{ account: admin, name: \"**\", actions: [\"*\"] }}\n    \
         - {{ account: admin, type: registry, name: catalog, actions: [\"*\"] }}\n    \
         - {{ account: \"*\", name: \"${{account}}/**\", actions: [pull, push, delete] }}\n    \
         - {{ account: \"\", name: \"public/*\", actions: [pull] }}\n    \
         - {{ account: \"*\", name: \"public/*\", actions: [pull] }}\n{extra}",
        key = dir.join("certs/registry-auth.key").display(),
        crt = dir.join("certs/registry-auth.crt").display(),
        htpasswd = htpasswd(dir).display(),
    )
}

pub fn registry_auth_block(dir: &Path) -> String {
    format!(
        "auth:\n  token:\n    realm: https://127.0.0.1:1/jwt/auth\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
        dir.join("certs/registry-auth.crt").display()
    )
}

/// GET on the edge's token realm with Basic credentials and one `scope` value.
pub fn login(
    edge: &super::Edge,
    ca: &str,
    user: &str,
    password: &str,
    scope: &str,
) -> super::CurlResult {
    let url = format!("{}?service={SERVICE}&scope={scope}", edge.url("/jwt/auth"));
    super::curl(&["--cacert", ca, "-u", &format!("{user}:{password}"), &url])
}
