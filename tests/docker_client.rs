//! The Docker engine (Debian `docker.io`, started by the test with its own data root and
//! socket) pushing and pulling through the edge, in front of the real registry with token
//! auth: login and logout, a small image and one with a 200 MiB layer, and every refusal a
//! docker user meets (wrong password, a push the ACL forbids, the push limit, read-only
//! mode), each asserted on docker's exit code and on the edge's words in its message.

mod common;

use std::path::Path;

use common::docker::{output_text, Dockerd};
use common::images::{docker_archive, noise_image};
use common::{make_certs, reload, skip, upstream_yaml, Checks, Edge, Registry};

/// Asserts docker failed and said `expected` (the edge's error, as docker prints it), and
/// nothing that hides the edge's answer: docker's `unknown:` for an unparsed error body, or
/// an HTML page.
#[track_caller]
fn assert_refused(out: &std::process::Output, expected: &str) {
    let text = output_text(out);
    assert!(!out.status.success(), "docker succeeded: {text}");
    assert!(text.contains(expected), "no {expected:?} in: {text}");
    for hidden in ["unknown:", "<html", "<HTML"] {
        assert!(!text.contains(hidden), "{hidden:?} in: {text}");
    }
}

#[track_caller]
fn assert_ok(out: &std::process::Output) {
    assert!(out.status.success(), "docker failed: {}", output_text(out));
}

/// `docker load` of a one-layer image of `size` noise bytes, named `name`.
fn load(engine: &Dockerd, dir: &Path, name: &str, size: u64, seed: u64) {
    let layout = noise_image(&dir.join(format!("layout-{seed}")), "v1", size, seed);
    let archive = dir.join(format!("image-{seed}.tar"));
    docker_archive(&layout, &archive, name);
    assert_ok(&engine.docker(&["load", "-i", archive.to_str().unwrap()]));
    let _ = std::fs::remove_dir_all(dir.join(format!("layout-{seed}")));
    let _ = std::fs::remove_file(archive);
}

fn image_id(engine: &Dockerd, name: &str) -> String {
    let out = engine.docker(&["image", "inspect", "--format", "{{.Id}}", name]);
    assert_ok(&out);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn docker_logs_in_pushes_pulls_and_reads_the_edges_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let engine = match Dockerd::start(&dir.path().join("docker")) {
        Ok(engine) => engine,
        Err(why) => return skip("docker_client", &why),
    };
    let mut engine = engine;
    let certs = make_certs(dir.path());
    let registry = Registry::start_with(
        dir.path(),
        "node",
        &common::auth::registry_auth_block(dir.path()),
    );
    let pid_file = dir.path().join("edge.pid");
    // alice is exempt from the push limit; bob meets it on his second push start.
    let limits = "rate_limits:\n  push: { key: account, per_minute: 1, burst: 1, exempt_accounts: [alice] }\n";
    let extra = format!("{}{limits}", common::auth::auth_yaml(dir.path(), ""));
    let edge = Edge::start_with(
        dir.path(),
        &certs,
        &format!("  shutdown_grace: 1s\n  pid_file: {}\n", pid_file.display()),
        &upstream_yaml(&[registry.addr()], "repository_hash"),
        &extra,
    );
    let host = format!("127.0.0.1:{}", edge.https_port);
    engine.trust(&host, &certs.ca_dir.join("ca.crt"));
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    let small = format!("{host}/alice/small:v1");
    let big = format!("{host}/alice/big:v1");
    load(&engine, &images, &small, 1 << 20, 1);
    load(&engine, &images, &big, 200 << 20, 2);
    load(&engine, &images, &format!("{host}/bob/app:v1"), 1 << 20, 3);
    load(
        &engine,
        &images,
        &format!("{host}/alice/later:v1"),
        1 << 20,
        4,
    );
    assert_ok(&engine.docker(&[
        "tag",
        &format!("{host}/bob/app:v1"),
        &format!("{host}/alice/intruder:v1"),
    ]));

    let mut checks = Checks::new();
    checks.run("wrong password", || {
        assert_refused(
            &engine.login(&host, "alice", "not-her-password"),
            "unauthorized:",
        );
    });
    checks.run("login, push and pull back", || {
        assert_ok(&engine.login(&host, "alice", "pw-alice"));
        let ids = [image_id(&engine, &small), image_id(&engine, &big)];
        assert_ok(&engine.docker(&["push", &small]));
        assert_ok(&engine.docker(&["push", &big]));
        assert_ok(&engine.docker(&["rmi", &small, &big]));
        assert_ok(&engine.docker(&["pull", &small]));
        assert_ok(&engine.docker(&["pull", &big]));
        assert_eq!(
            [image_id(&engine, &small), image_id(&engine, &big)],
            ids,
            "pulled images differ from the pushed ones"
        );
    });
    checks.run("logout, then a private pull is refused", || {
        assert_ok(&engine.docker(&["logout", &host]));
        assert_ok(&engine.docker(&["rmi", &small]));
        assert_refused(&engine.docker(&["pull", &small]), "denied:");
    });
    checks.run("push the ACL forbids", || {
        assert_ok(&engine.login(&host, "bob", "pw-bob"));
        assert_refused(
            &engine.docker(&["push", &format!("{host}/alice/intruder:v1")]),
            "denied:",
        );
    });
    checks.run("push limit", || {
        assert_refused(
            &engine.docker(&["push", &format!("{host}/bob/app:v1")]),
            "toomanyrequests: too many pushes started",
        );
    });
    checks.run("read-only mode", || {
        let config = std::fs::read_to_string(&edge.config).unwrap();
        std::fs::write(
            &edge.config,
            format!("{config}maintenance:\n  read_only: true\n"),
        )
        .unwrap();
        reload(&pid_file);
        assert_ok(&engine.login(&host, "alice", "pw-alice"));
        let later = format!("{host}/alice/later:v1");
        // Applied within the reload; poll rather than assume when.
        let out = common::wait_for("read-only mode", std::time::Duration::from_secs(10), || {
            let out = engine.docker(&["push", &later]);
            (!out.status.success()).then_some(out)
        });
        assert_refused(&out, "read-only maintenance mode");
        assert_ok(&engine.docker(&["pull", &small]));
    });
    checks.finish();
    drop(edge);
    drop(registry);
}
