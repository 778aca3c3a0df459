//! Every configuration shipped in `conf/` runs: with only its addresses and file paths
//! pointed at this machine, a real client logs in, pushes and pulls through it. (`check`
//! alone passed the compose config whose ACL refused every push.)

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{curl, free_port, make_certs, skopeo, tiny_oci_layout, Edge, Registry, EDGE_BIN};
use serde::Deserialize;
use serde_yaml::Value;

/// Sets `value` at `path` in a YAML mapping, creating mappings on the way.
fn set(yaml: &mut Value, path: &[&str], value: Value) {
    let (last, parents) = path.split_last().unwrap();
    let mut node = yaml;
    for key in parents {
        node = &mut node[*key];
    }
    node[*last] = value;
}

fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).unwrap()
}

/// Runs `shipped` (a path under conf/) in front of a real registry and pushes and pulls
/// an image through it as alice.
fn push_and_pull_with(shipped: &str) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(shipped);
    let config = serde_yaml::from_str(&std::fs::read_to_string(&source).unwrap()).unwrap();
    push_and_pull_through(shipped, config);
}

/// Runs `config` (named `shipped` in messages) in front of a real registry and pushes and
/// pulls an image through it as alice.
fn push_and_pull_through(shipped: &str, mut config: Value) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let certs = make_certs(root);
    let (https, http, admin) = (free_port(), free_port(), free_port());
    let dev = |name: &str| Value::String(root.join("certs").join(name).display().to_string());

    // Addresses and files of this machine; everything else (ACL, limits, timeouts) as shipped.
    set(
        &mut config,
        &["server", "https_listen"],
        yaml(&format!("[\"127.0.0.1:{https}\"]")),
    );
    set(
        &mut config,
        &["server", "http_listen"],
        yaml(&format!("[\"127.0.0.1:{http}\"]")),
    );
    if config["server"].get("external_url").is_some() {
        set(
            &mut config,
            &["server", "external_url"],
            yaml(&format!("https://localhost:{https}")),
        );
    }
    if config["server"].get("pid_file").is_some() {
        let pid = root.join("edge.pid").display().to_string();
        set(&mut config, &["server", "pid_file"], Value::String(pid));
    }
    set(
        &mut config,
        &["tls", "certificates"],
        yaml(&format!(
            "[{{ cert: {:?}, key: {:?} }}]",
            certs.tls_crt, certs.tls_key
        )),
    );
    if config.get("admin").is_some() {
        set(
            &mut config,
            &["admin", "listen"],
            yaml(&format!("\"127.0.0.1:{admin}\"")),
        );
    }
    let authenticated = config.get("auth").is_some();
    if authenticated {
        set(
            &mut config,
            &["auth", "token", "signing_key"],
            dev("registry-auth.key"),
        );
        set(
            &mut config,
            &["auth", "token", "certificate"],
            dev("registry-auth.crt"),
        );
        let htpasswd = root.join("htpasswd");
        let line = registry_edge::registry_config::htpasswd_line("alice", "pw-alice", 4).unwrap();
        std::fs::write(&htpasswd, format!("{line}\n")).unwrap();
        set(
            &mut config,
            &["auth", "users", "htpasswd"],
            Value::String(htpasswd.display().to_string()),
        );
    }
    // The registry first (its address goes into the edge's node list); its auth block is
    // what `registry-edge registry-config` prints for this config, as docs/authentication.md says.
    let edge_config = root.join("edge.yaml");
    set(
        &mut config,
        &["upstream", "nodes"],
        yaml("[\"127.0.0.1:1\"]"),
    );
    std::fs::write(&edge_config, serde_yaml::to_string(&config).unwrap()).unwrap();
    let auth_block = if authenticated {
        let out = Command::new(EDGE_BIN)
            .args(["registry-config", "--config"])
            .arg(&edge_config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    } else {
        String::new()
    };
    let registry = Registry::start_with(root, "node", &auth_block);
    set(
        &mut config,
        &["upstream", "nodes"],
        yaml(&format!("[\"{}\"]", registry.addr())),
    );
    let mut edge = Edge::start_config(root, https, http, &serde_yaml::to_string(&config).unwrap());
    let ca = certs.ca_dir.join("ca.crt");
    let url = edge.url("/v2/");
    let ready = || curl(&["--cacert", ca.to_str().unwrap(), url.as_str()]).status != 0;
    if let Err(why) = edge.proc.wait_started(Duration::from_secs(30), ready) {
        panic!(
            "{shipped}: the edge did not start: {why}\n{}",
            edge.log_text()
        );
    }

    let layout = tiny_oci_layout(&root.join("image"));
    let cert_dir = certs.ca_dir.to_str().unwrap();
    let target = format!("docker://localhost:{https}/alice/app:v1");
    let mut push = vec!["copy", "--dest-cert-dir", cert_dir];
    let mut pull = vec!["copy", "--src-cert-dir", cert_dir];
    if authenticated {
        push.extend(["--dest-creds", "alice:pw-alice"]);
        pull.extend(["--src-creds", "alice:pw-alice"]);
    }
    push.extend([layout.as_str(), target.as_str()]);
    let out = skopeo(&push);
    assert!(
        out.status.success(),
        "{shipped}: alice pushes to her namespace: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        edge.log_text()
    );
    let pulled = format!("oci:{}:v1", root.join("pulled").display());
    pull.extend([target.as_str(), pulled.as_str()]);
    let out = skopeo(&pull);
    assert!(
        out.status.success(),
        "{shipped}: alice pulls: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if authenticated {
        // And the login a `docker login` does: a token for no scope.
        let login = curl(&[
            "--cacert",
            ca.to_str().unwrap(),
            "-u",
            "alice:pw-alice",
            &format!(
                "https://localhost:{https}{}?service={}",
                config["auth"]["token"]["realm_path"]
                    .as_str()
                    .unwrap_or("/jwt/auth"),
                config["auth"]["token"]["service"].as_str().unwrap()
            ),
        ]);
        assert_eq!(login.status, 200, "{shipped}: login");
    }
}

/// The migration guide's first complete config (the minimal proxy-only one), as an
/// operator coming from nginx would copy it.
#[test]
fn the_migration_guides_minimal_config_serves_a_push_and_a_pull() {
    let guide = "docs/migrating-from-nginx.md";
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(guide)).unwrap();
    let blocks = common::docs::complete_blocks(&text);
    let first = blocks
        .first()
        .expect("the guide has a ```yaml complete block");
    let config: Value = serde_yaml::from_str(first).unwrap();
    assert!(
        config.get("auth").is_none(),
        "the minimal config is proxy-only"
    );
    push_and_pull_through(guide, config);
}

#[test]
fn every_shipped_config_serves_a_login_a_push_and_a_pull() {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let mut shipped: Vec<String> = Vec::new();
    for folder in [conf.clone(), conf.join("compose")] {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) == Some("yaml") {
                let relative = path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap();
                shipped.push(relative.display().to_string());
            }
        }
    }
    shipped.sort();
    assert!(shipped.len() >= 3, "{shipped:?}");
    for config in &shipped {
        push_and_pull_with(config);
    }
}

/// `conf/kubernetes/` passes a strict schema check (kubernetes-validate from PyPI, which
/// scripts/install-deps puts in ~/.cache/registry-edge), and the configuration its
/// ConfigMap carries serves a login, a push and a pull like the other shipped ones.
#[test]
fn kubernetes_example_is_valid_and_its_config_serves() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/kubernetes");
    let mut manifests: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().and_then(|e| e.to_str()) == Some("yaml"))
        .collect();
    manifests.sort();
    let kinds: Vec<String> = manifests
        .iter()
        .flat_map(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            serde_yaml::Deserializer::from_str(&text)
                .map(|doc| {
                    Value::deserialize(doc).unwrap()["kind"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    for kind in [
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "PodDisruptionBudget",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }

    let home = std::env::var("HOME").unwrap_or_default();
    let validator =
        Path::new(&home).join(".cache/registry-edge/kubernetes-validate/bin/kubernetes-validate");
    if validator.exists() {
        // 1.30: an API level every supported cluster serves.
        let out = Command::new(&validator)
            .args(["--strict", "--kubernetes-version", "1.30.0"])
            .args(&manifests)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        common::skip(
            "kubernetes schema check",
            "kubernetes-validate is not installed (scripts/install-deps installs it)",
        );
    }

    let configmap: Value =
        serde_yaml::from_str(&std::fs::read_to_string(folder.join("configmap.yaml")).unwrap())
            .unwrap();
    let config = configmap["data"]["registry-edge.yaml"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry-edge.yaml");
    std::fs::write(&path, config).unwrap();
    push_and_pull_with(path.to_str().unwrap());
}
