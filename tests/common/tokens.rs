//! `registry-edge token …` as the access-token tests run it: the command, a token created
//! (its secret), a token as `token list --json` shows it.

use std::path::Path;
use std::process::{Command, Output};

use super::EDGE_BIN;

/// Runs `registry-edge token ARGS… --config CONFIG`.
pub fn token_command(config: &Path, args: &[&str]) -> Output {
    Command::new(EDGE_BIN)
        .arg("token")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `token create --name NAME ARGS…`: the secret.
pub fn create(config: &Path, name: &str, args: &[&str]) -> String {
    let mut all = vec!["create", "--name", name];
    all.extend_from_slice(args);
    let out = token_command(config, &all);
    assert!(out.status.success(), "token create failed: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let secret = stdout
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .unwrap_or_else(|| panic!("no secret in: {stdout}"));
    assert!(
        secret.starts_with("rgt_") && secret.len() >= 4 + 43,
        "{secret}"
    );
    secret.to_string()
}

/// `token list --json`: the token named `name`.
pub fn listed(config: &Path, name: &str) -> serde_json::Value {
    let out = token_command(config, &["list", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} not listed: {all}"))
}
