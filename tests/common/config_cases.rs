//! The table behind `tests/config_rules.rs` and `tests/config_users.rs`: a row is a config
//! file's name, its text and what `check` must say (valid, or refused with a message naming
//! the file and the offending key); rows go through the library calls the `check` command
//! makes, every row runs, and a table fails once, listing every row that did not hold.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use registry_edge::config;
use registry_edge::load::load_all;

/// What `check` must say about one config.
pub enum Expect {
    Valid,
    /// Refused, with a message naming the file and containing every fragment.
    Refused(&'static [&'static str]),
}

pub struct Case {
    /// The config's file name (relative paths in it resolve against the fixture folder).
    pub file: &'static str,
    pub yaml: String,
    pub expect: Expect,
}

pub fn valid(file: &'static str, yaml: impl Into<String>) -> Case {
    Case {
        file,
        yaml: yaml.into(),
        expect: Expect::Valid,
    }
}

pub fn refused(
    file: &'static str,
    yaml: impl Into<String>,
    fragments: &'static [&'static str],
) -> Case {
    Case {
        file,
        yaml: yaml.into(),
        expect: Expect::Refused(fragments),
    }
}

/// The password in the `shared_state` rows' Redis URLs: no message may repeat it.
pub const REDIS_PASSWORD: &str = "s3cret-pw";

/// What `registry-edge check` does, in-process: validate the text (`config::parse`, which
/// reads no file), then load every file the config names (`load::load_all`, which reads the
/// config again from `path`). The error is the message `check` prints.
pub fn check(path: &Path, text: &str) -> Result<(), String> {
    config::parse(path, text).map_err(|e| e.to_string())?;
    std::fs::write(path, text).unwrap();
    load_all(path).map(drop).map_err(|e| e.to_string())
}

/// Checks every case in `dir`; fails once at the end, listing every case that did not hold
/// (a panic counts as not holding: `check` must refuse, never crash).
pub fn assert_cases(dir: &Path, cases: Vec<Case>) {
    let total = cases.len();
    let mut failures = Vec::new();
    for Case { file, yaml, expect } in cases {
        let path = dir.join(file);
        let outcome = match catch_unwind(AssertUnwindSafe(|| check(&path, &yaml))) {
            Ok(outcome) => outcome,
            Err(panic) => {
                let why = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("?");
                failures.push(format!("{file}: panicked: {why}"));
                continue;
            }
        };
        match (expect, outcome) {
            (Expect::Valid, Ok(())) => {}
            (Expect::Valid, Err(message)) => {
                failures.push(format!("{file}: should be valid, refused: {message}"))
            }
            (Expect::Refused(fragments), Ok(())) => {
                failures.push(format!("{file}: should be refused naming {fragments:?}"))
            }
            (Expect::Refused(fragments), Err(message)) => {
                let missing: Vec<_> = std::iter::once(file)
                    .chain(fragments.iter().copied())
                    .filter(|f| !message.contains(f))
                    .collect();
                if !missing.is_empty() {
                    failures.push(format!("{file}: {missing:?} missing from: {message}"));
                }
                if message.contains(REDIS_PASSWORD) {
                    failures.push(format!("{file}: the message repeats a password: {message}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

/// A folder with dev certificates in `certs/` (TLS pair, token-signing pair) and a second,
/// unrelated pair in `other/`.
pub fn fixtures() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    registry_edge::certgen::generate(
        &dir.path().join("certs"),
        &["registry.test".into(), "localhost".into()],
    )
    .unwrap();
    registry_edge::certgen::generate(&dir.path().join("other"), &["other.test".into()]).unwrap();
    dir
}

/// A valid config with both listeners, one certificate and one node; rows edit its text.
pub fn base(cert: &str, key: &str) -> String {
    format!(
        "server:\n  https_listen: [\"127.0.0.1:8443\"]\n  http_listen: [\"127.0.0.1:8080\"]\n\
         tls:\n  certificates:\n    - {{ cert: {cert}, key: {key} }}\n\
         upstream:\n  nodes: [\"127.0.0.1:5000\"]\n  read_timeout: 900s\n"
    )
}

pub fn good() -> String {
    base("certs/tls.crt", "certs/tls.key")
}
