//! Live reload (`registry-edge reload --pid-file`, i.e. SIGHUP): read-only maintenance on
//! and off without a restart, broken configs rejected with the old one kept, new
//! certificates served to new connections.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    curl, make_certs, push_blob, reload, upstream_yaml, wait_for, Checks, Edge, Registry,
};

/// An edge writing its pid file (so `reload` can signal it) in front of `nodes`.
fn edge_with_pid_file(dir: &Path, certs: &common::Certs, nodes: &[String], extra: &str) -> Edge {
    let server = format!(
        "  shutdown_grace: 1s\n  pid_file: {}\n",
        dir.join("edge.pid").display()
    );
    Edge::start_with(
        dir,
        certs,
        &server,
        &upstream_yaml(nodes, "repository_hash"),
        extra,
    )
}

fn start(dir: &Path) -> (common::Certs, Registry, Edge) {
    let certs = make_certs(dir);
    let registry = Registry::start(dir, "node");
    let edge = edge_with_pid_file(dir, &certs, &[registry.addr()], "");
    (certs, registry, edge)
}

fn set_read_only(edge: &Edge, on: bool) {
    let text = std::fs::read_to_string(&edge.config).unwrap();
    let base = text.split("maintenance:").next().unwrap().to_string();
    std::fs::write(
        &edge.config,
        format!("{base}maintenance:\n  read_only: {on}\n"),
    )
    .unwrap();
}

/// Status of starting an upload session (405 in read-only mode, 202 otherwise).
fn upload_start_status(edge: &Edge, ca: &str, repo: &str) -> common::CurlResult {
    curl(&[
        "--cacert",
        ca,
        "-X",
        "POST",
        &edge.url(&format!("/v2/{repo}/blobs/uploads/")),
    ])
}

#[test]
fn read_only_maintenance_switched_by_reload() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, registry, edge) = start(dir.path());
    let ca = certs.ca_dir.join("ca.crt");
    let ca_str = ca.to_str().unwrap().to_string();
    let base = format!("https://127.0.0.1:{}", edge.https_port);
    let blob = push_blob(&base, &ca, "gc/app", b"before maintenance", &[]);

    // An upload that is streaming when read-only mode is switched on.
    let location = common::start_upload(&edge.url("/v2/gc/slow/blobs/uploads/"), &ca_str, &[]);
    let upload = common::spawn_slow_patch(dir.path(), &ca_str, location, 3 << 20);
    wait_for(
        "the slow upload to reach the registry",
        Duration::from_secs(20),
        || (registry.upload_bytes_stored("gc/slow") > 0).then_some(()),
    );

    set_read_only(&edge, true);
    reload(&dir.path().join("edge.pid"));
    let refused = wait_for("read-only mode", Duration::from_secs(10), || {
        let r = upload_start_status(&edge, &ca_str, "gc/app");
        (r.status == 405).then_some(r)
    });
    let mut checks = Checks::new();
    checks.run("uploads get a read-only JSON error", || {
        assert_eq!(refused.header("content-type"), Some("application/json"));
        assert_eq!(refused.json()["errors"][0]["code"], "UNSUPPORTED");
        assert!(refused.json()["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("read-only"));
    });
    checks.run("deletes are refused too", || {
        let delete = curl(&[
            "--cacert",
            &ca_str,
            "-X",
            "DELETE",
            &edge.url(&format!("/v2/gc/app/blobs/{blob}")),
        ]);
        assert_eq!(delete.status, 405, "deletes are refused too");
    });
    checks.run("pulls keep working", || {
        let pulled = curl(&[
            "--cacert",
            &ca_str,
            &edge.url(&format!("/v2/gc/app/blobs/{blob}")),
        ]);
        assert_eq!(pulled.status, 200, "pulls keep working");
        assert_eq!(pulled.body, b"before maintenance");
    });
    checks.run("the upload admitted before the switch completes", || {
        let streamed = upload.join().unwrap();
        assert_eq!(
            streamed.status, 202,
            "the upload admitted before the switch completes: {}",
            streamed.stderr
        );
        assert_eq!(streamed.header("range"), Some("0-3145727"));
    });
    // A real client sees the read-only message.
    checks.run("a real client sees the read-only message", || {
        let layout = common::tiny_oci_layout(&dir.path().join("image"));
        let target = format!("docker://127.0.0.1:{}/gc/new:v1", edge.https_port);
        let ca_dir = certs.ca_dir.to_str().unwrap();
        let out = common::skopeo_push(ca_dir, None, &layout, &target, &[]);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("read-only"),
            "skopeo reports the maintenance: {stderr}"
        );
    });

    checks.run("read-write again after the next reload", || {
        set_read_only(&edge, false);
        reload(&dir.path().join("edge.pid"));
        wait_for("read-write again", Duration::from_secs(10), || {
            (upload_start_status(&edge, &ca_str, "gc/app").status == 202).then_some(())
        });
        let after = push_blob(&base, &ca, "gc/app", b"after maintenance", &[]);
        assert!(registry.has_blob("gc/app", &after));
    });
    checks.finish();
}

#[test]
fn broken_config_is_rejected_and_certificates_reload() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, _registry, edge) = start(dir.path());
    let ca = certs.ca_dir.join("ca.crt");
    let ca_str = ca.to_str().unwrap();
    let good = std::fs::read_to_string(&edge.config).unwrap();

    let mut checks = Checks::new();
    // A broken file: logged, and the running configuration stays (pushes still allowed).
    checks.run("a broken file is rejected, the old one stays", || {
        std::fs::write(
            &edge.config,
            format!("{good}maintenance:\n  read_only: maybe\n"),
        )
        .unwrap();
        reload(&dir.path().join("edge.pid"));
        wait_for(
            "the rejection to be logged",
            Duration::from_secs(10),
            || {
                let log = edge.log_text();
                (log.contains("reload rejected") && log.contains("maintenance")).then_some(())
            },
        );
        assert_eq!(upload_start_status(&edge, ca_str, "keep/app").status, 202);
    });

    // New certificate files at the same paths: new connections get them.
    checks.run("new connections get new certificate files", || {
        let subject = || {
            let out = Command::new("openssl")
                .args([
                    "s_client",
                    "-connect",
                    &format!("127.0.0.1:{}", edge.https_port),
                    "-servername",
                    "registry.test",
                ])
                .stdin(Stdio::null())
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .find(|l| l.starts_with("subject="))
                .unwrap_or("")
                .to_string()
        };
        assert!(subject().contains("CN = registry.test"), "{}", subject());
        let fresh = dir.path().join("fresh");
        registry_edge::certgen::generate(&fresh, &["renewed.test".into(), "registry.test".into()])
            .unwrap();
        std::fs::copy(fresh.join("tls.crt"), &certs.tls_crt).unwrap();
        std::fs::copy(fresh.join("tls.key"), &certs.tls_key).unwrap();
        std::fs::write(&edge.config, &good).unwrap();
        reload(&dir.path().join("edge.pid"));
        wait_for("the renewed certificate", Duration::from_secs(10), || {
            subject().contains("CN = renewed.test").then_some(())
        });
    });
    checks.finish();
}

#[test]
fn upstream_nodes_change_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let a = Registry::start(dir.path(), "a");
    let b = Registry::start(dir.path(), "b");
    let edge = edge_with_pid_file(dir.path(), &certs, &[a.addr()], "");
    let ca = certs.ca_dir.join("ca.crt");
    let base = format!("https://127.0.0.1:{}", edge.https_port);
    let first = push_blob(&base, &ca, "move/app", b"on node a", &[]);
    assert!(a.has_blob("move/app", &first) && !b.has_blob("move/app", &first));

    // An upload session started on A before the reload...
    let ca_str = ca.to_str().unwrap();
    let pending = common::start_upload(&edge.url("/v2/move/app/blobs/uploads/"), ca_str, &[]);

    let text = std::fs::read_to_string(&edge.config).unwrap();
    std::fs::write(&edge.config, text.replace(&a.addr(), &b.addr())).unwrap();
    reload(&dir.path().join("edge.pid"));
    let mut attempt = 0u32;
    wait_for(
        "pushes to reach the new node",
        Duration::from_secs(15),
        || {
            attempt += 1;
            // Every push across the switch succeeds: sessions stay on the node that began them.
            let digest = push_blob(
                &base,
                &ca,
                "move/app",
                format!("attempt {attempt}").as_bytes(),
                &[],
            );
            b.has_blob("move/app", &digest).then_some(())
        },
    );

    // ...finishes there after the reload, although A is no longer listed (it drains).
    let payload = b"started before the reload";
    let body = dir.path().join("pending");
    std::fs::write(&body, payload).unwrap();
    let digest = common::digest(payload);
    let put = curl(&[
        "--cacert",
        ca_str,
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", body.display()),
        &format!("{pending}&digest={digest}"),
    ]);
    assert_eq!(
        put.status,
        201,
        "the in-flight session completes: {}",
        String::from_utf8_lossy(&put.body)
    );
    assert!(
        a.has_blob("move/app", &digest),
        "on the node that started it"
    );
    assert!(
        !edge.log_text().contains("need a restart"),
        "a node change is applied live"
    );
}

#[test]
fn users_and_acl_change_on_reload() {
    use common::auth::auth_yaml;
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let registry = Registry::start(dir.path(), "node");
    let edge = edge_with_pid_file(
        dir.path(),
        &certs,
        &[registry.addr()],
        &auth_yaml(dir.path(), ""),
    );
    let ca = certs.ca_dir.join("ca.crt").to_str().unwrap().to_string();
    let login = |user: &str, password: &str, scope: &str| {
        common::auth::login(&edge, &ca, user, password, scope)
    };
    assert_eq!(
        login("carol", "pw-carol", "").status,
        401,
        "carol is not a user yet"
    );

    // Add carol to htpasswd and a rule giving everyone pull on shared/*.
    let htpasswd = dir.path().join("htpasswd");
    let mut users = std::fs::read_to_string(&htpasswd).unwrap();
    users.push_str(&registry_edge::registry_config::htpasswd_line("carol", "pw-carol", 4).unwrap());
    users.push('\n');
    std::fs::write(&htpasswd, users).unwrap();
    let text = std::fs::read_to_string(&edge.config).unwrap();
    let with_rule = text.replace(
        "  acl:\n",
        "  acl:\n    - { account: \"*\", name: \"shared/*\", actions: [pull] }\n",
    );
    assert_ne!(with_rule, text);
    std::fs::write(&edge.config, with_rule).unwrap();
    reload(&dir.path().join("edge.pid"));

    let granted = wait_for(
        "carol's login after the reload",
        Duration::from_secs(10),
        || {
            let r = login("carol", "pw-carol", "repository:shared/base:pull");
            (r.status == 200).then_some(r)
        },
    );
    let token = granted.json()["token"].as_str().unwrap().to_string();
    let payload = token.split('.').nth(1).unwrap();
    use base64::Engine;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        claims["access"][0]["name"], "shared/base",
        "the new ACL rule applies"
    );
}

#[test]
fn keys_read_only_at_start_are_named_as_needing_a_restart_and_a_bad_htpasswd_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_certs, _registry, edge) = start(dir.path());
    let good = std::fs::read_to_string(&edge.config).unwrap();
    let mut checks = Checks::new();
    // `upstream_yaml` writes a 300ms health interval; the test changes it, the shutdown
    // grace and the log format, none of which a running process can apply.
    checks.run("keys read only at start are named", || {
        assert!(good.contains("interval: 300ms"), "{good}");
        let changed = good
            .replace("interval: 300ms", "interval: 2s")
            .replace("shutdown_grace: 1s", "shutdown_grace: 3s")
            + "log:\n  format: json\n";
        std::fs::write(&edge.config, changed).unwrap();
        reload(&dir.path().join("edge.pid"));
        let line = wait_for("the reload's log line", Duration::from_secs(10), || {
            edge.log_text()
                .lines()
                .find(|l| l.contains("need a restart"))
                .map(str::to_string)
        });
        for key in [
            "upstream.health_check.interval",
            "server.shutdown_grace",
            "log.format",
        ] {
            assert!(line.contains(key), "{key}: {line}");
        }
    });

    // An htpasswd entry with a bcrypt cost bcrypt refuses: the reload is rejected, naming
    // file and line, and the process keeps serving (it used to panic).
    checks.run("a bad htpasswd entry is rejected", || {
        let htpasswd = dir.path().join("htpasswd-bad");
        let hash = bcrypt::hash("pw", 4).unwrap();
        std::fs::write(&htpasswd, format!("alice:{}03{}\n", &hash[..4], &hash[6..])).unwrap();
        let auth = common::auth::auth_yaml(dir.path(), "").replace(
            &dir.path().join("htpasswd").display().to_string(),
            &htpasswd.display().to_string(),
        );
        std::fs::write(&edge.config, format!("{good}{auth}")).unwrap();
        reload(&dir.path().join("edge.pid"));
        let rejected = wait_for("the rejection", Duration::from_secs(10), || {
            edge.log_text()
                .lines()
                .find(|l| l.contains("reload rejected"))
                .map(str::to_string)
        });
        assert!(rejected.contains("htpasswd-bad:1"), "{rejected}");
        assert!(rejected.contains("cost 3"), "{rejected}");
        // A user listed twice (which hash is meant?) is rejected the same way.
        std::fs::write(
            &htpasswd,
            format!("alice:{hash}\nbob:{hash}\nalice:{hash}\n"),
        )
        .unwrap();
        reload(&dir.path().join("edge.pid"));
        let twice = wait_for("the second rejection", Duration::from_secs(10), || {
            edge.log_text()
                .lines()
                .filter(|l| l.contains("reload rejected"))
                .nth(1)
                .map(str::to_string)
        });
        assert!(
            twice.contains("htpasswd-bad:3: user alice is listed twice, on lines 1 and 3"),
            "{twice}"
        );
        assert!(!edge.log_text().contains("panicked"));
        let ca = dir.path().join("ca/ca.crt");
        assert_eq!(
            curl(&["--cacert", ca.to_str().unwrap(), &edge.url("/v2/")]).status,
            200
        );
    });
    checks.finish();
}
