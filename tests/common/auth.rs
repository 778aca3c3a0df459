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

/// The registry's own htpasswd `auth:` block over [`htpasswd`]'s users: proxy-only mode,
/// where the registry checks the clients' passwords and the edge checks nothing.
pub fn registry_htpasswd_block(dir: &Path) -> String {
    format!(
        "auth:\n  htpasswd:\n    realm: basic-realm\n    path: {}\n",
        htpasswd(dir).display()
    )
}

pub fn registry_auth_block(dir: &Path) -> String {
    format!(
        "auth:\n  token:\n    realm: https://127.0.0.1:1/jwt/auth\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
        dir.join("certs/registry-auth.crt").display()
    )
}

/// Like [`super::edge_with_node`], with the node configured for token auth
/// ([`registry_auth_block`]); `extra` (usually an `auth:` section) is appended to the
/// edge's config.
pub fn edge_with_token_node(
    dir: &Path,
    extra: &str,
) -> (super::Certs, super::Registry, super::Edge) {
    let certs = super::make_certs(dir);
    let registry = super::Registry::start_with(dir, "node", &registry_auth_block(dir));
    let edge = super::Edge::start(
        dir,
        &certs,
        &super::upstream_yaml(&[registry.addr()], "repository_hash"),
        extra,
    );
    (certs, registry, edge)
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

/// The edge's `auth:` section with the dev signing key, a `users:` body (lines indented
/// by four spaces) and ACL rules (YAML flow maps).
pub fn auth_yaml_with(dir: &Path, users: &str, acl: &[&str]) -> String {
    let rules: String = acl.iter().map(|r| format!("    - {r}\n")).collect();
    format!(
        "auth:\n  token:\n    service: {SERVICE}\n    issuer: {ISSUER}\n    signing_key: {key}\n    certificate: {crt}\n    expiration: 5m\n  \
         users:\n{users}  acl:\n{rules}",
        key = dir.join("certs/registry-auth.key").display(),
        crt = dir.join("certs/registry-auth.crt").display(),
    )
}

/// What a realm answer's token grants: `(type:name, actions)` pairs, empty when the
/// answer holds no token.
pub fn granted(answer: &super::CurlResult) -> Vec<(String, Vec<String>)> {
    use base64::Engine;
    let Some(token) = answer.json()["token"].as_str().map(str::to_string) else {
        return Vec::new();
    };
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    claims["access"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            let actions = entry["actions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
                .collect();
            let name = format!(
                "{}:{}",
                entry["type"].as_str().unwrap(),
                entry["name"].as_str().unwrap()
            );
            (name, actions)
        })
        .collect()
}

/// The registry error code of an answer (`UNAUTHORIZED`, `UNAVAILABLE`, …), or `""`.
pub fn error_code(answer: &super::CurlResult) -> String {
    answer.json()["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The OAuth2 password grant with `offline_token=true`: the refresh token, if issued.
pub fn refresh_token_for(
    edge: &super::Edge,
    ca: &str,
    user: &str,
    password: &str,
) -> Option<String> {
    let form = format!(
        "grant_type=password&service={SERVICE}&client_id=test&offline_token=true&username={}&password={}",
        percent(user),
        percent(password)
    );
    let answer = super::curl(&["--cacert", ca, "--data", &form, &edge.url("/jwt/auth")]);
    answer.json()["refresh_token"].as_str().map(str::to_string)
}

/// The OAuth2 refresh grant asking for `scope`.
pub fn refresh(
    edge: &super::Edge,
    ca: &str,
    refresh_token: &str,
    scope: &str,
) -> super::CurlResult {
    let form = format!(
        "grant_type=refresh_token&service={SERVICE}&client_id=test&refresh_token={refresh_token}&scope={}",
        percent(scope)
    );
    super::curl(&["--cacert", ca, "--data", &form, &edge.url("/jwt/auth")])
}

fn percent(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
