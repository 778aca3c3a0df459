//! The CLI, run as a binary: `check` like `nginx -t` (its exit codes and output; the rules
//! it applies are tabled in-process in `tests/config_rules.rs`), `gen-certs`,
//! `registry-config`, `hash-password`, `--version`.

mod common;

use std::path::Path;
use std::process::Command;

use common::{make_certs, EDGE_BIN};

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(EDGE_BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn config(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path.to_str().unwrap().to_string()
}

fn valid_yaml(cert: &str, key: &str) -> String {
    format!(
        "server:\n  https_listen: [\"127.0.0.1:8443\"]\n  http_listen: [\"127.0.0.1:8080\"]\n\
         tls:\n  certificates:\n    - {{ cert: {cert}, key: {key} }}\n\
         upstream:\n  nodes: [\"127.0.0.1:5000\"]\n  read_timeout: 900s\n"
    )
}

#[test]
fn check_accepts_a_valid_config_with_relative_paths() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    // Relative paths resolve against the config file's folder, not the working directory.
    let path = config(
        dir.path(),
        "ok.yaml",
        &valid_yaml("certs/tls.crt", "certs/tls.key"),
    );
    let (code, stdout, stderr) = run(&["check", "--config", &path]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("valid"), "{stdout}");
}

/// The rules themselves are tabled in `tests/config_rules.rs`; here, how the binary reports
/// a refusal: exit code 1, and on stderr the file and the problem.
#[test]
fn check_exits_1_naming_the_file_and_the_problem_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let broken = config(
        dir.path(),
        "duration.yaml",
        &valid_yaml("certs/tls.crt", "certs/tls.key").replace("900s", "nine hundred"),
    );
    let absent = dir.path().join("absent.yaml");
    for (path, expected) in [
        (broken.as_str(), ["duration.yaml", "upstream.read_timeout"]),
        (absent.to_str().unwrap(), ["absent.yaml", "cannot read"]),
    ] {
        let (code, stdout, stderr) = run(&["check", "--config", path]);
        assert_eq!(code, 1, "{path} should fail: {stderr}");
        assert!(
            !stdout.contains("configuration is valid"),
            "{path}: {stdout}"
        );
        for needle in expected {
            assert!(
                stderr.contains(needle),
                "{path}: expected {needle:?} in: {stderr}"
            );
        }
    }
}

/// About the binary's output, so run end-to-end: neither stdout nor stderr repeats the
/// password of `shared_state.redis.url`, whichever key is refused.
#[test]
fn check_never_prints_the_redis_password() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let good = valid_yaml("certs/tls.crt", "certs/tls.key");
    let redis = |url: &str, extra: &str| {
        format!("{good}shared_state:\n  redis:\n    url: \"{url}\"\n{extra}")
    };
    let path = config(
        dir.path(),
        "shared-ok.yaml",
        &redis(
            "redis://:s3cret-pw@127.0.0.1:6379/0",
            "    timeout: 20ms\n    on_unavailable: deny\n",
        ),
    );
    let (code, _, stderr) = run(&["check", "--config", &path]);
    assert_eq!(code, 0, "{stderr}");
    let cases = [
        (
            "shared-url.yaml",
            redis("http://:s3cret-pw@127.0.0.1:6379", ""),
            "shared_state.redis.url",
        ),
        (
            "shared-mode.yaml",
            redis(
                "redis://:s3cret-pw@127.0.0.1:6379/0",
                "    on_unavailable: maybe\n",
            ),
            "shared_state.redis.on_unavailable",
        ),
        (
            "shared-timeout.yaml",
            redis("redis://:s3cret-pw@127.0.0.1:6379/0", "    timeout: 0s\n"),
            "shared_state.redis.timeout",
        ),
    ];
    for (name, body, key) in cases {
        let path = config(dir.path(), name, &body);
        let (code, stdout, stderr) = run(&["check", "--config", &path]);
        assert_eq!(code, 1, "{name} should fail");
        assert!(stderr.contains(key), "{name}: {stderr}");
        assert!(
            !stderr.contains("s3cret") && !stdout.contains("s3cret"),
            "{name} printed the password: {stderr}"
        );
    }
}

#[test]
fn gen_certs_writes_private_keys_0600_and_a_usable_pair() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c");
    let (code, stdout, stderr) = run(&[
        "gen-certs",
        "--dir",
        out.to_str().unwrap(),
        "--host",
        "registry.test",
        "--host",
        "alt.test",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains("PRIVATE KEY"), "keys must not be printed");
    for name in [
        "tls.crt",
        "tls.key",
        "registry-auth.crt",
        "registry-auth.key",
    ] {
        assert!(out.join(name).is_file(), "{name} missing");
    }
    #[cfg(unix)]
    for key in ["tls.key", "registry-auth.key"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.join(key))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    // Both pairs load and match.
    registry_edge::tls::load_certified_key(&out.join("tls.crt"), &out.join("tls.key")).unwrap();
    registry_edge::tls::load_certified_key(
        &out.join("registry-auth.crt"),
        &out.join("registry-auth.key"),
    )
    .unwrap();
    let (code, _, _) = run(&["gen-certs", "--dir", out.to_str().unwrap()]);
    assert_ne!(code, 0, "--host is required");
}

#[test]
fn version_and_help() {
    let (code, stdout, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert!(stdout.contains(env!("CARGO_PKG_VERSION")), "{stdout}");
    let (code, stdout, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for sub in ["run", "check", "gen-certs"] {
        assert!(stdout.contains(sub), "{stdout}");
    }
}

#[test]
fn every_shipped_config_passes_check() {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let dir = tempfile::tempdir().unwrap();
    // The shipped configs name certs/ next to conf/; check them against fresh dev certs.
    let root = dir.path();
    std::fs::create_dir_all(root.join("conf")).unwrap();
    registry_edge::certgen::generate(&root.join("certs"), &["registry.example.com".into()])
        .unwrap();
    let mut checked = 0;
    // Files only: conf/compose/ has its own test.
    let entries: Vec<_> = std::fs::read_dir(&conf)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    // Copy everything first: configs name files beside them (htpasswd).
    for path in &entries {
        std::fs::copy(path, root.join("conf").join(path.file_name().unwrap())).unwrap();
    }
    for path in entries {
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let copy = root.join("conf").join(path.file_name().unwrap());
        // Absolute paths (the production example's /etc/registry-edge/…) into the temp folder.
        let mut config = serde_yaml::from_str(&std::fs::read_to_string(&copy).unwrap()).unwrap();
        common::docs::provide_files(&mut config, root);
        std::fs::write(&copy, serde_yaml::to_string(&config).unwrap()).unwrap();
        let (code, _, stderr) = run(&["check", "--config", copy.to_str().unwrap()]);
        assert_eq!(code, 0, "{}: {stderr}", path.display());
        checked += 1;
    }
    assert!(
        checked >= 2,
        "conf/ should ship registry-edge.yaml and dev.yaml"
    );
}

#[test]
fn registry_config_prints_the_matching_auth_block() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    std::fs::write(dir.path().join("htpasswd"), "").unwrap();
    let body = valid_yaml("certs/tls.crt", "certs/tls.key")
        + "auth:\n  token: { service: container_registry, issuer: edge, signing_key: certs/registry-auth.key, certificate: certs/registry-auth.crt }\n  users: { htpasswd: htpasswd }\n";
    let path = config(dir.path(), "auth.yaml", &body);
    let (code, stdout, stderr) = run(&["registry-config", "--config", &path]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("realm: https://127.0.0.1:8443/jwt/auth"),
        "{stdout}"
    );
    assert!(
        stdout.contains("service: container_registry") && stdout.contains("issuer: edge"),
        "{stdout}"
    );
    let bundle = std::fs::canonicalize(dir.path().join("certs/registry-auth.crt")).unwrap();
    assert!(
        stdout.contains(&format!("rootcertbundle: {}", bundle.display())),
        "{stdout}"
    );
    let path = config(
        dir.path(),
        "noauth.yaml",
        &valid_yaml("certs/tls.crt", "certs/tls.key"),
    );
    let (code, _, stderr) = run(&["registry-config", "--config", &path]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no auth section"), "{stderr}");

    // --route: the same realm, service, issuer and bundle, for the route's pool.
    let routed = body
        + "routes:\n  - { name: hub, prefix: hub/, nodes: [\"127.0.0.1:5001\"], read_only: true }\n";
    let path = config(dir.path(), "routes.yaml", &routed);
    let (code, stdout, stderr) = run(&["registry-config", "--config", &path, "--route", "hub"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("route \"hub\"") && stdout.contains("127.0.0.1:5001"),
        "{stdout}"
    );
    assert!(
        stdout.contains("realm: https://127.0.0.1:8443/jwt/auth"),
        "{stdout}"
    );
    assert!(stdout.contains("issuer: edge"), "{stdout}");
    assert!(
        stdout.contains(&format!("rootcertbundle: {}", bundle.display())),
        "{stdout}"
    );
    let (code, _, stderr) = run(&["registry-config", "--config", &path, "--route", "quay"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("no route \"quay\" (routes: hub)"),
        "{stderr}"
    );
}

#[test]
fn hash_password_reads_stdin_and_prints_a_bcrypt_line() {
    let mut hash = Command::new(EDGE_BIN);
    hash.args(["hash-password", "--user", "alice", "--cost", "4"]);
    let out = common::run_with_input(&mut hash, "s3cret-pw\n");
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    let (user, hash) = line.trim().split_once(':').unwrap();
    assert_eq!(user, "alice");
    assert!(hash.starts_with("$2y$04$"), "{hash}");
    assert!(
        bcrypt::verify("s3cret-pw", hash).unwrap(),
        "the trailing newline is not part of the password"
    );
    assert!(!line.contains("s3cret-pw"));
}

/// The compose example's edge config is valid once its documented setup steps have run
/// (the registry's service name swapped for an address this machine resolves).
#[test]
fn compose_example_config_is_valid_after_its_setup_steps() {
    let dir = tempfile::tempdir().unwrap();
    let compose = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/compose/registry-edge.yaml");
    let text = std::fs::read_to_string(compose).unwrap();
    assert!(
        text.contains("\"registry:5000\""),
        "the compose service name"
    );
    // The steps in conf/docker-compose.yml: gen-certs giving the files to the image's user.
    let root = unsafe { libc::geteuid() } == 0;
    let certs = dir.path().join("certs");
    let mut args = vec![
        "gen-certs",
        "--dir",
        certs.to_str().unwrap(),
        "--host",
        "registry.example.com",
    ];
    if root {
        args.extend(["--owner", "65532"]);
    }
    let (code, _, stderr) = run(&args);
    assert_eq!(code, 0, "{stderr}");
    let line = registry_edge::registry_config::htpasswd_line("alice", "pw", 4).unwrap();
    std::fs::write(dir.path().join("htpasswd"), format!("{line}\n")).unwrap();
    let path = config(
        dir.path(),
        "registry-edge.yaml",
        &text.replace("\"registry:5000\"", "\"127.0.0.1:5000\""),
    );
    let (code, stdout, stderr) = run(&["check", "--config", &path]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    if !root {
        eprintln!("not root: the check as the image's uid 65532 needs root and is skipped");
        return;
    }
    // As the image's user (uid 65532, no supplementary groups): the keys are readable.
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    for key in ["tls.key", "registry-auth.key"] {
        let meta = std::fs::metadata(certs.join(key)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (65532, 65532), "{key}");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{key}");
    }
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid",
            "65532",
            "--regid",
            "65532",
            "--clear-groups",
            EDGE_BIN,
        ])
        .args(["check", "--config", &path])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check as uid 65532: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without --owner (the old steps), uid 65532 cannot read the keys: the check names it.
    let other = dir.path().join("root-owned");
    registry_edge::certgen::generate(&other, &["registry.example.com".into()]).unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = config(
        dir.path(),
        "root-owned.yaml",
        &text
            .replace("\"registry:5000\"", "\"127.0.0.1:5000\"")
            .replace("certs/", "root-owned/"),
    );
    let out = Command::new("setpriv")
        .args([
            "--reuid",
            "65532",
            "--regid",
            "65532",
            "--clear-groups",
            EDGE_BIN,
        ])
        .args(["check", "--config", &path])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn gen_certs_owner_must_be_numeric() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c");
    let (code, _, stderr) = run(&[
        "gen-certs",
        "--dir",
        out.to_str().unwrap(),
        "--host",
        "r.test",
        "--owner",
        "nonroot",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("UID or UID:GID"), "{stderr}");
    // chown's "leave unchanged" value would make --owner a silent no-op.
    for owner in ["4294967295", "0:4294967295"] {
        let (code, _, stderr) = run(&[
            "gen-certs",
            "--dir",
            out.to_str().unwrap(),
            "--host",
            "r.test",
            "--owner",
            owner,
        ]);
        assert_eq!(code, 1, "{owner}: {stderr}");
    }
    // Giving the files to oneself needs no privilege; to another user it needs root, and
    // without it nothing is written (working keys are not replaced by unusable ones).
    let me = format!("{}:{}", unsafe { libc::geteuid() }, unsafe {
        libc::getegid()
    });
    let (code, _, stderr) = run(&[
        "gen-certs",
        "--dir",
        out.to_str().unwrap(),
        "--host",
        "r.test",
        "--owner",
        &me,
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(out.join("tls.key").is_file());
    if unsafe { libc::geteuid() } != 0 {
        let other = dir.path().join("other");
        let (code, _, stderr) = run(&[
            "gen-certs",
            "--dir",
            other.to_str().unwrap(),
            "--host",
            "r.test",
            "--owner",
            "65532",
        ]);
        assert_eq!(code, 1, "{stderr}");
        assert!(stderr.contains("needs root"), "{stderr}");
        assert!(!other.exists(), "nothing is written");
    }
}

/// Small traps (issue 29, item 11): a cost `check` refuses is refused at hash time with the
/// same words; a user listed twice in an htpasswd file is refused by `check` and `run`,
/// naming both lines; the commands that never contact the registry nodes work when a
/// node's name does not resolve (`check` still says it does not).
#[test]
fn cli_traps_are_refused_or_avoided() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    // A bcrypt cost above 17: hash-password refuses it before reading the password, in the
    // words check uses for such an entry (no cost-18 hash is made: that takes seconds).
    let four = bcrypt::hash("pw", 4).unwrap();
    for cost in ["18", "31", "3"] {
        let (code, _, stderr) = run(&["hash-password", "--user", "a", "--cost", cost]);
        assert_eq!(code, 1, "cost {cost}: {stderr}");
        let words = format!(
            "bcrypt cost {} is outside 4..=17 (htpasswd -B -C allows the same)",
            cost.trim_start_matches('0')
        );
        assert!(stderr.contains(&words), "cost {cost}: {stderr}");
        let entry = format!("alice:{}{cost:0>2}{}\n", &four[..4], &four[6..]);
        std::fs::write(dir.path().join("htpasswd"), entry).unwrap();
        let body = valid_yaml("certs/tls.crt", "certs/tls.key")
            + "auth:\n  token: { service: s, issuer: i, signing_key: certs/registry-auth.key, certificate: certs/registry-auth.crt }\n  users: { htpasswd: htpasswd }\n";
        let path = config(dir.path(), "cost.yaml", &body);
        let (code, _, stderr) = run(&["check", "--config", &path]);
        assert_eq!(code, 1);
        assert!(stderr.contains(&words), "check, cost {cost}: {stderr}");
    }
    // A user listed twice.
    let line = |user: &str| format!("{user}:{four}\n");
    std::fs::write(
        dir.path().join("htpasswd"),
        line("alice") + "# bob\n" + &line("bob") + &line("alice"),
    )
    .unwrap();
    let body = valid_yaml("certs/tls.crt", "certs/tls.key")
        + "auth:\n  token: { service: s, issuer: i, signing_key: certs/registry-auth.key, certificate: certs/registry-auth.crt }\n  users: { htpasswd: htpasswd }\n";
    let path = config(dir.path(), "twice.yaml", &body);
    for command in ["check", "run"] {
        let (code, _, stderr) = run(&[command, "--config", &path]);
        assert_eq!(code, 1, "{command}: {stderr}");
        assert!(
            stderr.contains("htpasswd:4: user alice is listed twice, on lines 1 and 4"),
            "{command}: {stderr}"
        );
    }
    // A node whose name does not resolve (.invalid never does, RFC 6761).
    std::fs::write(dir.path().join("htpasswd"), line("alice")).unwrap();
    let offline = body.replace("127.0.0.1:5000", "registry.invalid:5000")
        + &format!(
            "cache:\n  dir: {}\n  max_size: 1GiB\npolicy:\n  state_dir: {}\n",
            dir.path().join("cache").display(),
            dir.path().join("policy").display()
        );
    let path = config(dir.path(), "offline.yaml", &offline);
    let (code, stdout, stderr) = run(&["registry-config", "--config", &path]);
    assert_eq!(code, 0, "registry-config: {stderr}");
    assert!(
        stdout.contains("realm: https://127.0.0.1:8443/jwt/auth"),
        "{stdout}"
    );
    let (code, _, stderr) = run(&["cache", "purge", "--config", &path]);
    assert_eq!(code, 0, "cache purge: {stderr}");
    // No store yet here: what it says is that, not that a node does not resolve.
    let (_, _, stderr) = run(&["usage", "show", "--config", &path]);
    assert!(
        stderr.contains("no usage store yet"),
        "usage show: {stderr}"
    );
    let (code, _, stderr) = run(&["check", "--config", &path]);
    assert_eq!(code, 1, "check resolves the nodes");
    assert!(
        stderr.contains("upstream.nodes[0]") && stderr.contains("registry.invalid"),
        "{stderr}"
    );
}
