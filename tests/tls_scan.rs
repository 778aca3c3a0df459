//! TLS scan (issue 7): sslyze (PyPI, installed by `scripts/install-deps`) checks the TLS
//! listener against Mozilla's "intermediate" profile. The only finding allowed is
//! certificate path validation: the scan runs with a self-signed development certificate,
//! which no public trust store accepts; everything the edge itself decides must comply.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::edge_with_node;

/// How to run sslyze here: the tool venv `install-deps` makes, else `sslyze`, else the module.
fn sslyze() -> Command {
    let venv = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(".cache/registry-edge/sslyze/bin/sslyze");
    if venv.exists() {
        return Command::new(venv);
    }
    let on_path = Command::new("sslyze").arg("--help").output();
    if on_path.is_ok_and(|o| o.status.success()) {
        return Command::new("sslyze");
    }
    let mut module = Command::new("python3");
    module.args(["-m", "sslyze"]);
    module
}

#[test]
fn tls_listener_matches_mozilla_intermediate() {
    let dir = tempfile::tempdir().unwrap();
    let (_certs, _registry, edge) = edge_with_node(dir.path(), "");
    let json_path = dir.path().join("scan.json");
    let out = sslyze()
        .arg(format!("127.0.0.1:{}", edge.https_port))
        .arg("--mozilla_config=intermediate")
        .arg(format!("--json_out={}", json_path.display()))
        .output()
        .expect("sslyze runs (scripts/install-deps installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");

    // The compliance verdict: nothing but the untrusted development certificate.
    let (_, verdict) = text
        .split_once("COMPLIANCE AGAINST TLS CONFIGURATION")
        .unwrap_or_else(|| panic!("sslyze did not check compliance: {text}"));
    let findings: Vec<&str> = verdict
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("* ") && l.contains(':'))
        .collect();
    assert!(
        text.contains("Checking results against Mozilla's \"intermediate\""),
        "sslyze did not check compliance: {text}"
    );
    assert!(
        findings
            .iter()
            .all(|f| f.starts_with("* certificate_path_validation:")),
        "findings other than the self-signed certificate: {findings:#?}"
    );

    let scan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    let result = &scan["server_scan_results"][0]["scan_result"];
    for old in [
        "ssl_2_0_cipher_suites",
        "ssl_3_0_cipher_suites",
        "tls_1_0_cipher_suites",
        "tls_1_1_cipher_suites",
    ] {
        let accepted = &result[old]["result"]["accepted_cipher_suites"];
        assert_eq!(
            accepted.as_array().map(Vec::len),
            Some(0),
            "{old}: {accepted}"
        );
    }
    for current in ["tls_1_2_cipher_suites", "tls_1_3_cipher_suites"] {
        let accepted = result[current]["result"]["accepted_cipher_suites"]
            .as_array()
            .unwrap_or_else(|| panic!("{current} missing"));
        assert!(!accepted.is_empty(), "{current}: none accepted");
        for suite in accepted {
            let name = suite["cipher_suite"]["name"].as_str().unwrap();
            // Forward secret AEAD suites only.
            assert!(
                name.starts_with("TLS_ECDHE_") || !name.contains("_WITH_"),
                "{name} is not forward secret"
            );
            assert!(
                name.contains("GCM") || name.contains("CHACHA20"),
                "{name} is not AEAD"
            );
        }
    }
    assert_eq!(
        result["tls_compression"]["result"]["supports_compression"],
        false
    );
    let renegotiation = &result["session_renegotiation"]["result"];
    assert_eq!(renegotiation["supports_secure_renegotiation"], true);
    assert_eq!(
        renegotiation["is_vulnerable_to_client_renegotiation_dos"],
        false
    );
    assert_eq!(
        result["heartbleed"]["result"]["is_vulnerable_to_heartbleed"],
        false
    );
    assert_eq!(
        result["openssl_ccs_injection"]["result"]["is_vulnerable_to_ccs_injection"],
        false
    );
}
