//! Backend failures are logged with their whole cause (issue 29, item 6): an OIDC issuer,
//! an LDAPS server and an http authenticator whose certificate is a CA certificate used as
//! the server's own (what `openssl req -x509` makes by default; Go clients accept it,
//! rustls refuses it). The servers are `openssl s_server`: the fault is in the TLS
//! handshake, before any OIDC, LDAP or HTTP is spoken.

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use common::auth::{auth_yaml_with, edge_with_token_node, login};
use common::{openssl_cert, wait_for, Proc};

/// A self-signed certificate for 127.0.0.1 as `openssl req -x509` makes it: a CA
/// certificate (basicConstraints CA:TRUE). (certificate, key)
fn ca_as_server_cert(dir: &Path) -> (String, String) {
    let keygen = ["ecparam", "-genkey", "-name", "prime256v1"];
    let (crt, key) = openssl_cert(dir, "127.0.0.1", &keygen);
    (crt.display().to_string(), key.display().to_string())
}

/// `openssl s_server` with that certificate on a free loopback port.
fn tls_server(crt: &str, key: &str) -> (Proc, u16) {
    let port = common::free_port();
    let proc = Proc::spawn(
        Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-cert", crt, "-key", key])
            .args(["-accept", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for(
        "openssl s_server to listen",
        Duration::from_secs(20),
        || TcpStream::connect(("127.0.0.1", port)).ok(),
    );
    (proc, port)
}

/// An unsigned JWT naming `issuer`: enough for the edge to go and fetch the issuer's keys.
fn token_from(issuer: &str) -> String {
    let part = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    format!(
        "{}.{}.c2ln",
        part(serde_json::json!({"alg": "RS256", "kid": "k1", "typ": "JWT"})),
        part(serde_json::json!({"iss": issuer, "aud": "registry-edge", "sub": "job"}))
    )
}

#[test]
fn a_ca_certificate_used_as_a_servers_own_is_named_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = ca_as_server_cert(dir.path());
    let (_oidc, oidc_port) = tls_server(&crt, &key);
    let (_ldaps, ldaps_port) = tls_server(&crt, &key);
    std::fs::write(dir.path().join("bind.secret"), "pw").unwrap();
    std::fs::write(dir.path().join("htpasswd"), "").unwrap();
    let issuer = format!("https://127.0.0.1:{oidc_port}");
    let users = format!(
        "    htpasswd: {htpasswd}\n    cache_ttl: 0s\n    oidc:\n      - {{ issuer: \"{issuer}\", \
         audience: registry-edge, username: ci, ca: {crt} }}\n    ldap:\n      url: \
         ldaps://127.0.0.1:{ldaps_port}\n      ca: {crt}\n      bind_dn: cn=registry\n      \
         bind_password_file: {secret}\n      user_base: dc=example\n      user_filter: \
         \"(uid={{user}})\"\n      timeout: 5s\n",
        htpasswd = dir.path().join("htpasswd").display(),
        secret = dir.path().join("bind.secret").display(),
    );
    let acl = ["{ account: \"*\", name: \"${account}/**\", actions: [pull] }"];
    let (certs, _registry, edge) =
        edge_with_token_node(dir.path(), &auth_yaml_with(dir.path(), &users, &acl));
    let ca = certs.ca_dir.join("ca.crt").display().to_string();
    let scope = "repository:ci/app:pull";
    // Each login finds its backend unavailable (503), and the log says why.
    let oidc = login(&edge, &ca, "ci", &token_from(&issuer), scope);
    assert_eq!(oidc.status, 503, "{}", oidc.text());
    let ldap = login(&edge, &ca, "someone", "pw", scope);
    assert_eq!(ldap.status, 503, "{}", ldap.text());
    for (what, marker) in [
        ("OIDC", "OIDC keys could not be fetched"),
        ("LDAP", "LDAP unavailable"),
    ] {
        let line = wait_for(what, Duration::from_secs(10), || {
            edge.log_text()
                .lines()
                .find(|l| l.contains(marker))
                .map(str::to_string)
        });
        assert!(line.contains("CaUsedAsEndEntity"), "{what}: {line}");
        assert!(
            line.contains("presents a CA certificate as its own"),
            "{what}: the words an operator can act on: {line}"
        );
    }
}
