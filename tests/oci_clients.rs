//! containerd (`ctr`), buildah and podman through the edge, in front of the real registry
//! with token auth: each logs in (or passes credentials), pushes, and pulls back; ctr also
//! meets a push the ACL forbids. Each test starts its own registry and edge and runs its
//! client with storage under the test's folder, so nothing outside it changes.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::auth::{auth_yaml, edge_with_token_node};
use common::containerd::Containerd;
use common::docker::output_text;
use common::{run_with_input, skip, skopeo_push, tiny_oci_layout, tool, Certs, Edge, Registry};

struct Setup {
    dir: tempfile::TempDir,
    certs: Certs,
    _registry: Registry,
    _edge: Edge,
    /// `127.0.0.1:PORT` of the edge's TLS listener.
    host: String,
}

impl Setup {
    /// The registry and the edge, with `alice/seed:v1` pushed by skopeo.
    fn start() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let (certs, registry, edge) = edge_with_token_node(dir.path(), &auth_yaml(dir.path(), ""));
        let host = format!("127.0.0.1:{}", edge.https_port);
        let layout = tiny_oci_layout(&dir.path().join("layout"));
        let out = skopeo_push(
            certs.ca_dir.to_str().unwrap(),
            Some("alice:pw-alice"),
            &layout,
            &format!("docker://{host}/alice/seed:v1"),
            &[],
        );
        assert!(
            out.status.success(),
            "seed push: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Setup {
            dir,
            certs,
            _registry: registry,
            _edge: edge,
            host,
        }
    }

    fn ca_dir(&self) -> &str {
        self.certs.ca_dir.to_str().unwrap()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

#[track_caller]
fn assert_ok(out: &Output) {
    assert!(out.status.success(), "{}", output_text(out));
}

#[test]
fn containerd_pulls_pushes_and_pulls_back() {
    if tool("containerd").is_none() || tool("ctr").is_none() {
        return skip(
            "containerd",
            "containerd is not installed (scripts/install-deps installs it)",
        );
    }
    let s = Setup::start();
    let containerd = Containerd::start(&s.path("containerd"));
    // ctr takes an IP host for plain HTTP unless hosts.toml names the server and its CA.
    let hosts_dir = s.path("hosts");
    std::fs::create_dir_all(hosts_dir.join(&s.host)).unwrap();
    std::fs::write(
        hosts_dir.join(&s.host).join("hosts.toml"),
        format!(
            "server = \"https://{h}\"\n[host.\"https://{h}\"]\n  ca = \"{ca}\"\n  capabilities = [\"pull\", \"resolve\", \"push\"]\n",
            h = s.host,
            ca = s.certs.ca_dir.join("ca.crt").display()
        ),
    )
    .unwrap();
    let hosts = hosts_dir.to_str().unwrap();
    let seed = format!("{}/alice/seed:v1", s.host);
    let copy = format!("{}/alice/from-ctr:v1", s.host);
    let forbidden = format!("{}/alice/by-bob:v1", s.host);
    let alice = ["--hosts-dir", hosts, "--user", "alice:pw-alice"];
    let bob = ["--hosts-dir", hosts, "--user", "bob:pw-bob"];

    let mut checks = common::Checks::new();
    checks.run("pull", || {
        assert_ok(&containerd.ctr(&[&["images", "pull"][..], &alice, &[&seed]].concat()));
    });
    checks.run("push, and pull back", || {
        assert_ok(&containerd.ctr(&["images", "tag", &seed, &copy]));
        assert_ok(&containerd.ctr(&[&["images", "push"][..], &alice, &[&copy]].concat()));
        assert_ok(&containerd.ctr(&["images", "rm", &copy]));
        assert_ok(&containerd.ctr(&[&["images", "pull"][..], &alice, &[&copy]].concat()));
    });
    checks.run("push the ACL forbids", || {
        assert_ok(&containerd.ctr(&["images", "tag", &seed, &forbidden]));
        let out = containerd.ctr(&[&["images", "push"][..], &bob, &[&forbidden]].concat());
        let text = output_text(&out);
        assert!(
            !out.status.success(),
            "bob pushed into alice's namespace: {text}"
        );
        assert!(
            text.contains("401 Unauthorized") || text.contains("insufficient_scope"),
            "{text}"
        );
    });
    checks.finish();
}

/// buildah or podman with storage, run root and credentials under the test's folder.
fn containers_tool(s: &Setup, program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.arg("--root")
        .arg(s.path(&format!("{program}-storage")))
        .arg("--runroot")
        .arg(s.path(&format!("{program}-run")))
        .args(["--storage-driver", "vfs"])
        .env(
            "REGISTRY_AUTH_FILE",
            s.path(&format!("{program}-auth.json")),
        )
        .stdin(Stdio::null());
    if program == "podman" {
        cmd.args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"]);
    }
    cmd
}

/// login (password on standard input), pull, push under another name, remove, pull back.
fn login_pull_push_pull(program: &str) {
    if tool(program).is_none() {
        return skip(
            program,
            &format!("{program} is not installed (scripts/install-deps installs it)"),
        );
    }
    let s = Setup::start();
    let cert_dir = ["--cert-dir", s.ca_dir()];
    let run = |args: &[&str]| containers_tool(&s, program).args(args).output().unwrap();
    // Local images are named without the transport; the registry side takes docker://.
    let seed = format!("{}/alice/seed:v1", s.host);
    let remote_seed = format!("docker://{seed}");
    let copy = format!("docker://{}/alice/from-{program}:v1", s.host);

    let mut checks = common::Checks::new();
    checks.run("wrong password", || {
        let out = run_with_input(
            containers_tool(&s, program)
                .args(["login", "--username", "alice", "--password-stdin"])
                .args(cert_dir)
                .arg(&s.host),
            "wrong",
        );
        let text = output_text(&out);
        assert!(!out.status.success(), "{text}");
        // containers/image words a 401 at login itself.
        assert!(text.contains("invalid username/password"), "{text}");
    });
    checks.run("login, pull, push, pull back", || {
        let out = run_with_input(
            containers_tool(&s, program)
                .args(["login", "--username", "alice", "--password-stdin"])
                .args(cert_dir)
                .arg(&s.host),
            "pw-alice",
        );
        assert_ok(&out);
        assert_ok(&run(&[&["pull"][..], &cert_dir, &[&remote_seed]].concat()));
        assert_ok(&run(&[&["push"][..], &cert_dir, &[&seed, &copy]].concat()));
        assert_ok(&run(&["rmi", "--all", "--force"]));
        assert_ok(&run(&[&["pull"][..], &cert_dir, &[&copy]].concat()));
    });
    checks.finish();
}

#[test]
fn buildah_logs_in_pushes_and_pulls() {
    login_pull_push_pull("buildah");
}

#[test]
fn podman_logs_in_pushes_and_pulls() {
    login_pull_push_pull("podman");
}
