//! TLS termination: certificates by SNI (RSA PKCS#1/PKCS#8, EC SEC1/PKCS#8), the first as
//! default, TLS 1.2 and 1.3 only, ALPN h2 and http/1.1. Inspected with `openssl s_client`.

mod common;

use std::process::{Command, Stdio};

use common::{curl, free_port, make_certs, upstream_yaml, Edge};

/// What `openssl s_client` reports for a handshake: (succeeded, subject, ALPN line).
fn handshake(port: u16, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec!["s_client", "-connect"];
    let target = format!("127.0.0.1:{port}");
    args.push(&target);
    args.extend_from_slice(extra);
    let out = Command::new("openssl")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let subject = text
        .lines()
        .find(|l| l.starts_with("subject="))
        .unwrap_or("")
        .to_string();
    let alpn = text
        .lines()
        .find(|l| l.contains("ALPN"))
        .unwrap_or("")
        .to_string();
    let ok = text.contains("BEGIN CERTIFICATE") && !text.contains("Cipher is (NONE)");
    (ok, subject, alpn)
}

#[test]
fn certificates_by_sni_with_rsa_and_ec_keys() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let (rsa1_crt, rsa1_key) =
        common::openssl_cert(dir.path(), "rsa1.test", &["genrsa", "-traditional", "2048"]);
    let (rsa8_crt, rsa8_key) = common::openssl_cert(
        dir.path(),
        "rsa8.test",
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ],
    );
    let (ec_crt, ec_key) = common::openssl_cert(
        dir.path(),
        "sec1.test",
        &["ecparam", "-name", "prime256v1", "-genkey", "-noout"],
    );
    assert!(
        std::fs::read_to_string(&rsa1_key)
            .unwrap()
            .contains("BEGIN RSA PRIVATE KEY"),
        "PKCS#1"
    );
    assert!(
        std::fs::read_to_string(&ec_key)
            .unwrap()
            .contains("BEGIN EC PRIVATE KEY"),
        "SEC1"
    );
    let extra = format!(
        "    - {{ cert: {}, key: {} }}\n    - {{ cert: {}, key: {} }}\n    - {{ cert: {}, key: {}, server_names: [alias.test] }}\n",
        rsa1_crt.display(), rsa1_key.display(), rsa8_crt.display(), rsa8_key.display(), ec_crt.display(), ec_key.display()
    );
    // Append entries to the harness's tls.certificates list (the first stays the default).
    let nodes = [format!("127.0.0.1:{}", free_port())];
    let edge = Edge::start_with(
        dir.path(),
        &certs,
        "  shutdown_grace: 1s\n",
        &format!("{extra}{}", upstream_yaml(&nodes, "round_robin")),
        "",
    );

    let cases = [
        ("rsa1.test", "CN = rsa1.test"),
        ("rsa8.test", "CN = rsa8.test"),
        ("alias.test", "CN = sec1.test"),
        ("registry.test", "CN = registry.test"),
        ("unknown.test", "CN = registry.test"),
    ];
    for (name, expected) in cases {
        let (ok, subject, _) = handshake(edge.https_port, &["-servername", name]);
        assert!(ok, "{name}: handshake failed");
        assert!(
            subject.contains(expected),
            "{name}: served {subject:?}, expected {expected}"
        );
    }
    let (ok, subject, _) = handshake(edge.https_port, &["-noservername"]);
    assert!(
        ok && subject.contains("CN = registry.test"),
        "no SNI gets the default: {subject}"
    );

    // A real client verifies the SNI-chosen RSA chain end to end.
    let resolve = format!("rsa1.test:{0}:127.0.0.1", edge.https_port);
    let url = format!("https://rsa1.test:{}/v2/", edge.https_port);
    let r = curl(&[
        "--resolve",
        &resolve,
        "--cacert",
        rsa1_crt.to_str().unwrap(),
        &url,
    ]);
    assert_ne!(
        r.status, 0,
        "TLS with the RSA certificate failed: {}",
        r.stderr
    );
}

#[test]
fn tls_versions_and_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let nodes = [format!("127.0.0.1:{}", free_port())];
    let edge = Edge::start(
        dir.path(),
        &certs,
        &upstream_yaml(&nodes, "round_robin"),
        "",
    );
    let port = edge.https_port;
    assert!(handshake(port, &["-tls1_2"]).0, "TLS 1.2 accepted");
    assert!(handshake(port, &["-tls1_3"]).0, "TLS 1.3 accepted");
    assert!(
        !handshake(port, &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]).0,
        "TLS 1.1 refused"
    );
    assert!(
        handshake(port, &["-alpn", "h2,http/1.1"]).2.contains("h2"),
        "h2 offered"
    );
    assert!(
        handshake(port, &["-alpn", "http/1.1"])
            .2
            .contains("http/1.1"),
        "http/1.1 offered"
    );
}
