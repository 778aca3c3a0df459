//! The container image and the compose file, built and started in a Docker engine the test
//! runs: `scripts/image` builds the image offline over the test's binary (and a `registry:2`
//! stand-in from Debian's registry), the edge runs in a container in front of the real
//! registry (push and pull with docker, then `docker stop` must end it with exit 0, not
//! SIGKILL), and `conf/docker-compose.yml` comes up, serves login, push, pull and the
//! plain-HTTP redirect, and goes down within 15 s.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::docker::{docker_cli, output_text, Dockerd};
use common::images::{docker_archive, noise_image};
use common::{curl, free_port, skip, tool, wait_for, Checks, Registry, EDGE_BIN};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

#[track_caller]
fn assert_ok(out: &Output) {
    assert!(out.status.success(), "{}", output_text(out));
}

/// `registry-edge gen-certs` for uid 65532 (the image's user): keys stay 0600.
fn gen_certs(dir: &Path, host: &str) {
    let out = Command::new(EDGE_BIN)
        .args(["gen-certs", "--dir"])
        .arg(dir)
        .args(["--host", host, "--owner", "65532"])
        .output()
        .unwrap();
    assert_ok(&out);
}

/// Polls until the edge on `port` answers `/v2/` over TLS with its 401.
fn wait_for_edge(port: u16, ca: &Path, what: &str) {
    let url = format!("https://127.0.0.1:{port}/v2/");
    let ca = ca.to_str().unwrap().to_string();
    wait_for(what, Duration::from_secs(60), || {
        (curl(&["--cacert", &ca, &url]).status == 401).then_some(())
    });
}

/// Logs in as alice, pushes `image` tagged under `host`, removes it and pulls it back.
fn push_and_pull(engine: &Dockerd, host: &str, image: &str, repo: &str) {
    assert_ok(&engine.login(host, "alice", "pw-alice"));
    let name = format!("{host}/alice/{repo}:v1");
    let id = |name: &str| {
        engine
            .docker(&["image", "inspect", "--format", "{{.Id}}", name])
            .stdout
    };
    assert_ok(&engine.docker(&["tag", image, &name]));
    let before = id(&name);
    assert_ok(&engine.docker(&["push", &name]));
    assert_ok(&engine.docker(&["rmi", &name]));
    assert_ok(&engine.docker(&["pull", &name]));
    assert_eq!(id(&name), before, "pulled image differs");
}

fn container_exit_code(engine: &Dockerd, name: &str) -> String {
    let out = engine.docker(&["inspect", "--format", "{{.State.ExitCode}}", name]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn image_builds_offline_runs_the_edge_and_compose_serves_pushes() {
    for (program, package) in [("dockerd", "docker.io"), ("mmdebstrap", "mmdebstrap")] {
        if tool(program).is_none() {
            return skip("container_image", &format!("{program} is not installed (Debian {package}; scripts/install-deps installs it)"));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mut engine = Dockerd::start(&dir.path().join("docker")).expect("dockerd is installed");
    let build = Command::new(format!("{REPO}/scripts/image"))
        .args(["--binary", EDGE_BIN, "--registry-stand-in"])
        .env("DOCKER", docker_cli())
        .env("DOCKER_HOST", engine.host())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ok(&build);
    // A small image to push, loaded without a network.
    let layout = noise_image(&dir.path().join("layout"), "v1", 1 << 20, 7);
    let archive = dir.path().join("image.tar");
    docker_archive(&layout, &archive, "sample:v1");
    assert_ok(&engine.docker(&["load", "-i", archive.to_str().unwrap()]));

    let mut checks = Checks::new();
    checks.run("--version", || {
        let out = engine.docker(&["run", "--rm", "registry-edge", "--version"]);
        assert_ok(&out);
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("registry-edge "));
    });
    checks.run(
        "the edge in a container: push, pull, docker stop exits 0",
        || {
            edge_in_a_container(&mut engine, dir.path());
        },
    );
    checks.run(
        "compose: up, login, push, pull, redirect, down in under 15 s",
        || {
            if tool("docker-compose").is_none() {
                return skip(
                    "compose",
                    "docker-compose is not installed (scripts/install-deps installs it)",
                );
            }
            compose(&mut engine, dir.path());
        },
    );
    checks.finish();
}

/// The image's edge with `--network host` in front of the real registry on the host.
fn edge_in_a_container(engine: &mut Dockerd, dir: &Path) {
    let conf = dir.join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    // The image's user (65532) must reach the mounted folder; the keys in it are its own.
    std::fs::set_permissions(&conf, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    gen_certs(&conf.join("certs"), "localhost");
    common::auth::htpasswd(&conf);
    let registry = Registry::start_with(
        dir,
        "node",
        &format!(
            "auth:\n  token:\n    realm: https://127.0.0.1:1/jwt/auth\n    service: container_registry\n    issuer: registry-edge-test\n    rootcertbundle: {}\n",
            conf.join("certs/registry-auth.crt").display()
        ),
    );
    let (https, http) = (free_port(), free_port());
    std::fs::write(
        conf.join("edge.yaml"),
        format!(
            "server:\n  https_listen: [\"127.0.0.1:{https}\"]\n  http_listen: [\"127.0.0.1:{http}\"]\n  shutdown_grace: 30s\n\
             tls:\n  certificates: [{{ cert: certs/tls.crt, key: certs/tls.key }}]\n\
             upstream:\n  nodes: [\"{node}\"]\n\
             auth:\n  token: {{ service: container_registry, issuer: registry-edge-test, signing_key: certs/registry-auth.key, certificate: certs/registry-auth.crt }}\n  \
             users: {{ htpasswd: htpasswd }}\n  acl:\n    - {{ account: \"*\", name: \"${{account}}/**\", actions: [pull, push, delete] }}\n",
            node = registry.addr()
        ),
    )
    .unwrap();
    let name = format!("edge-{https}");
    let mount = format!("{}:/etc/registry-edge:ro", conf.display());
    assert_ok(&engine.docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "host",
        "-v",
        &mount,
        "registry-edge",
        "run",
        "--config",
        "/etc/registry-edge/edge.yaml",
    ]));
    let ca = conf.join("certs/tls.crt");
    wait_for_edge(https, &ca, "the edge in its container");
    let host = format!("127.0.0.1:{https}");
    engine.trust(&host, &ca);
    push_and_pull(engine, &host, "sample:v1", "in-container");
    // SIGTERM with no request in flight: the edge exits at once, with 0. A SIGKILL after
    // the 10 s stop timeout would leave 137.
    assert_ok(&engine.docker(&["stop", "--time", "10", &name]));
    let logs = engine.docker(&["logs", &name]);
    assert_eq!(
        container_exit_code(engine, &name),
        "0",
        "{}",
        output_text(&logs)
    );
    assert_ok(&engine.docker(&["rm", &name]));
}

/// `conf/docker-compose.yml` as shipped, in a copy of `conf/` with the test's keys and
/// users. `external_url` is dropped from the edge's config: it names registry.example.com,
/// which does not resolve here, and clients reach the edge by 127.0.0.1 instead.
fn compose(engine: &mut Dockerd, dir: &Path) {
    let conf = dir.join("compose-conf");
    let compose_dir = conf.join("compose");
    std::fs::create_dir_all(&compose_dir).unwrap();
    std::fs::copy(
        format!("{REPO}/conf/docker-compose.yml"),
        conf.join("docker-compose.yml"),
    )
    .unwrap();
    let edge_yaml =
        std::fs::read_to_string(format!("{REPO}/conf/compose/registry-edge.yaml")).unwrap();
    let edge_yaml: String = edge_yaml
        .lines()
        .filter(|line| !line.trim_start().starts_with("external_url:"))
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(compose_dir.join("registry-edge.yaml"), edge_yaml).unwrap();
    gen_certs(&compose_dir.join("certs"), "registry.example.com");
    common::auth::htpasswd(&compose_dir);
    let (https, http) = (free_port(), free_port());
    let project = format!("edge{https}");
    let compose_file = conf.join("docker-compose.yml");
    let docker_host = engine.host();
    let compose = |args: &[&str]| -> Output {
        Command::new("docker-compose")
            .args(["--project-name", &project, "--file"])
            .arg(&compose_file)
            .args(args)
            .env("DOCKER_HOST", &docker_host)
            .env("REGISTRY_EDGE_HTTPS", format!("127.0.0.1:{https}"))
            .env("REGISTRY_EDGE_HTTP", format!("127.0.0.1:{http}"))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    assert_ok(&compose(&["up", "-d"]));
    let ca = compose_dir.join("certs/tls.crt");
    wait_for_edge(https, &ca, "the compose edge");
    let host = format!("127.0.0.1:{https}");
    engine.trust(&host, &ca);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        push_and_pull(engine, &host, "sample:v1", "from-compose");
        let redirect = curl(&[&format!("http://127.0.0.1:{http}/v2/?n=1")]);
        assert_eq!(redirect.status, 301);
        let location = redirect.header("location").unwrap_or_default();
        assert!(
            location.starts_with("https://127.0.0.1") && location.ends_with("/v2/?n=1"),
            "{location}"
        );
    }));
    let started = Instant::now();
    let stopped = compose(&["stop"]);
    let edge_exit = container_exit_code(engine, &format!("{project}_edge_1"));
    let down = compose(&["down", "--volumes"]);
    let took = started.elapsed();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    assert_ok(&stopped);
    assert_ok(&down);
    assert_eq!(
        edge_exit, "0",
        "the edge did not exit cleanly on docker-compose stop"
    );
    assert!(
        took < Duration::from_secs(15),
        "stop and down took {took:?}"
    );
    let left = engine.docker(&[
        "ps",
        "--all",
        "--quiet",
        "--filter",
        &format!("name={project}"),
    ]);
    assert!(
        left.stdout.is_empty(),
        "containers left: {}",
        output_text(&left)
    );
}
