//! Documentation as tests: the configuration reference is what the code prints, every
//! complete config in the docs passes `check`, every relative link resolves, and the systemd
//! unit's install steps give the service user what it needs. (The migration guide's minimal
//! config also serves a push and a pull: `tests/shipped_configs.rs`.)

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::docs::{complete_blocks, doc_files, link_targets, provide_files, ROOT};
use common::{skip_here, EDGE_BIN};
use registry_edge::config::reference::{classified_names, key_docs};

#[test]
fn the_configuration_reference_is_what_the_code_prints() {
    let out = Command::new(EDGE_BIN)
        .arg("config-reference")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let committed =
        std::fs::read_to_string(Path::new(ROOT).join("docs/configuration.md")).unwrap_or_default();
    assert!(
        printed == committed,
        "docs/configuration.md differs from what the code prints; regenerate it with\n  \
         target/debug/registry-edge config-reference > docs/configuration.md"
    );
}

#[test]
fn every_key_is_described_defaulted_and_classified() {
    let docs = key_docs();
    assert!(docs.len() > 100, "only {} keys", docs.len());
    let mut problems = Vec::new();
    for doc in &docs {
        let section = doc.kind == "section";
        if doc.description.is_empty() {
            problems.push(format!("{}: no doc comment", doc.path));
        }
        if !doc.required && doc.default.is_none() {
            problems.push(format!(
                "{}: optional without a `Default …` sentence",
                doc.path
            ));
        }
        if !section && doc.applied.is_none() {
            problems.push(format!("{}: no key table classifies it", doc.path));
        }
    }
    let paths: Vec<String> = docs.iter().map(|d| d.path.replace("[]", "")).collect();
    for name in classified_names() {
        if !paths.iter().any(|p| p == name) {
            problems.push(format!("key table entry {name:?} names no key of the file"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn every_relative_link_resolves() {
    let mut broken = Vec::new();
    let files = doc_files();
    assert!(files.len() >= 5, "{files:?}");
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") || target.starts_with('#') {
                continue;
            }
            let path = target.split('#').next().unwrap_or_default();
            if !file.parent().unwrap().join(path).exists() {
                broken.push(format!("{}: {target}", file.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links that resolve to nothing: {broken:#?}"
    );
}

#[test]
fn every_complete_config_in_the_docs_passes_check() {
    let mut checked = 0;
    let mut refused = Vec::new();
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, block) in complete_blocks(&text).into_iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let mut config: serde_yaml::Value = match serde_yaml::from_str(&block) {
                Ok(config) => config,
                Err(e) => {
                    refused.push(format!("{} block {}: not YAML: {e}", file.display(), n + 1));
                    continue;
                }
            };
            provide_files(&mut config, dir.path());
            let path = dir.path().join("registry-edge.yaml");
            std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
            let out = Command::new(EDGE_BIN)
                .args(["check", "--config"])
                .arg(&path)
                .output()
                .unwrap();
            checked += 1;
            if !out.status.success() {
                refused.push(format!(
                    "{} block {}: {}",
                    file.display(),
                    n + 1,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
    }
    assert!(
        checked >= 2,
        "only {checked} complete configs found in the docs"
    );
    assert!(refused.is_empty(), "{refused:#?}");
}

/// What systemd does for the unit before it starts the service: its `User=` and the
/// folders of `CacheDirectory=`, `StateDirectory=` and `RuntimeDirectory=` with their modes.
struct Unit {
    user: String,
    folders: Vec<(PathBuf, u32)>,
    install_steps: Vec<String>,
}

fn read_unit() -> Unit {
    let text = std::fs::read_to_string(Path::new(ROOT).join("conf/registry-edge.service")).unwrap();
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::trim)
    };
    let mut folders = Vec::new();
    for (kind, base) in [
        ("Cache", "/var/cache"),
        ("State", "/var/lib"),
        ("Runtime", "/run"),
    ] {
        if let Some(name) = value(&format!("{kind}Directory")) {
            let mode = value(&format!("{kind}DirectoryMode")).unwrap_or("0755");
            let mode = u32::from_str_radix(mode, 8).unwrap();
            folders.push((Path::new(base).join(name), mode));
        }
    }
    // The steps are the indented lines of the opening comment.
    let install_steps = text
        .lines()
        .skip_while(|l| !l.starts_with("# systemd unit"))
        .skip(1)
        .map_while(|l| l.strip_prefix("#   "))
        .map(str::to_string)
        .collect();
    Unit {
        user: value("User").unwrap().to_string(),
        folders,
        install_steps,
    }
}

fn sh(step: &str) -> std::process::Output {
    Command::new("sh")
        .args(["-euc", step])
        .current_dir(ROOT)
        .output()
        .unwrap()
}

fn as_user(user: &str, args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", user, "--"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_systemd_install_steps_let_the_service_user_read_its_config_and_write_its_folders() {
    const TEST: &str =
        "the_systemd_install_steps_let_the_service_user_read_its_config_and_write_its_folders";
    if unsafe_not_root() {
        return skip_here(TEST, "the install steps run as root (useradd, /etc, /var)");
    }
    let unit = read_unit();
    let installed = ["/etc/registry-edge", "/usr/local/bin/registry-edge"];
    let owned: Vec<PathBuf> = installed
        .iter()
        .map(PathBuf::from)
        .chain(unit.folders.iter().map(|(p, _)| p.clone()))
        .collect();
    if let Some(present) = owned.iter().find(|p| p.exists()) {
        return skip_here(
            TEST,
            &format!("{} exists: an installation is present", present.display()),
        );
    }
    let had_user = sh(&format!("getent passwd {}", unit.user)).status.success();
    let cleanup = Cleanup(owned.clone(), (!had_user).then(|| unit.user.clone()));

    // The steps as written, with this build's binary; systemctl is not run (no systemd here).
    assert!(unit.install_steps.len() >= 4, "{:?}", unit.install_steps);
    for step in &unit.install_steps {
        if step.contains("systemctl") {
            continue;
        }
        let step = step.replace("target/release/registry-edge", EDGE_BIN);
        let out = sh(&step);
        assert!(
            out.status.success(),
            "{step}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // What systemd does at start.
    for (folder, mode) in &unit.folders {
        std::fs::create_dir_all(folder).unwrap();
        let out = sh(&format!(
            "chown {0}:{0} {1} && chmod {mode:o} {1}",
            unit.user,
            folder.display()
        ));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The files the example names, installed as docs/operations.md says (0640 root:group).
    let certs = tempfile::tempdir().unwrap();
    registry_edge::certgen::generate(certs.path(), &["registry.example.com".to_string()]).unwrap();
    let line = registry_edge::registry_config::htpasswd_line("alice", "pw", 4).unwrap();
    std::fs::write(certs.path().join("htpasswd"), format!("{line}\n")).unwrap();
    for (from, to) in [
        ("tls.crt", "tls.crt"),
        ("tls.key", "tls.key"),
        ("registry-auth.key", "registry-auth.key"),
        ("registry-auth.crt", "registry-auth.crt"),
        ("htpasswd", "htpasswd"),
    ] {
        let out = sh(&format!(
            "install -m 0640 -o root -g {} {} /etc/registry-edge/{to}",
            unit.user,
            certs.path().join(from).display()
        ));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The example with its cache and usage store where the unit's folders are.
    let config = "/etc/registry-edge/registry-edge.yaml";
    let with_folders = "/etc/registry-edge/with-folders.yaml";
    let mut text = std::fs::read_to_string(config).unwrap();
    text.push_str(
        "cache:\n  dir: /var/cache/registry-edge\n  max_size: 1GiB\n\
         policy:\n  state_dir: /var/lib/registry-edge/policy\n",
    );
    std::fs::write(with_folders, text).unwrap();
    sh(&format!(
        "chgrp {} {with_folders} && chmod 0640 {with_folders}",
        unit.user
    ));

    for file in [config, with_folders] {
        let out = as_user(
            &unit.user,
            &["/usr/local/bin/registry-edge", "check", "--config", file],
        );
        assert!(
            out.status.success(),
            "as {}: check {file}: {}",
            unit.user,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for (folder, _) in &unit.folders {
        let probe = folder.join("written-by-the-service-user");
        let out = as_user(&unit.user, &["touch", probe.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "as {}: {}",
            unit.user,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    drop(cleanup);
}

fn unsafe_not_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() != 0 }
}

/// Removes what the install created, and the user when the test created it.
struct Cleanup(Vec<PathBuf>, Option<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_dir_all(path).or_else(|_| std::fs::remove_file(path));
        }
        let _ = std::fs::remove_file("/etc/systemd/system/registry-edge.service");
        if let Some(user) = &self.1 {
            let _ = sh(&format!("userdel {user}"));
        }
    }
}
