//! `policy:` against the real registry with token auth at the edge and skopeo: a namespace
//! quota counted from the manifests pushed (shared layers once, freed by a DELETE), immutable
//! tags, `usage scan` over a registry filled directly, and the usage store across restarts.

mod common;

use std::path::Path;
use std::process::Command;

use common::auth::{auth_yaml, login, registry_auth_block};
use common::images::noise_image;
use common::{curl, make_certs, skopeo, skopeo_push, upstream_yaml, Certs, Edge, Registry};

struct Setup {
    dir: tempfile::TempDir,
    certs: Certs,
    registry: Registry,
    edge: Edge,
    admin: u16,
}

impl Setup {
    /// The registry, and an edge with `auth` and `policy:` (`policy` holds the keys after
    /// `state_dir`, indented by two spaces).
    fn start(policy: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let certs = make_certs(dir.path());
        let registry = Registry::start_with(dir.path(), "node", &registry_auth_block(dir.path()));
        let admin = common::free_port();
        let edge = Self::edge(dir.path(), &certs, &registry, admin, policy);
        Setup {
            dir,
            certs,
            registry,
            edge,
            admin,
        }
    }

    fn edge(dir: &Path, certs: &Certs, registry: &Registry, admin: u16, policy: &str) -> Edge {
        let extra = format!(
            "{}admin:\n  listen: \"127.0.0.1:{admin}\"\npolicy:\n  state_dir: {}\n{policy}",
            auth_yaml(dir, ""),
            dir.join("policy").display()
        );
        Edge::start(
            dir,
            certs,
            &upstream_yaml(&[registry.addr()], "repository_hash"),
            &extra,
        )
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.edge.https_port)
    }

    fn ca(&self) -> String {
        self.certs.ca_dir.join("ca.crt").display().to_string()
    }

    /// skopeo copy of a noise image (`layer` bytes, `seed`) to `target` (after the host) as
    /// `user`; `Err(stderr)` when refused.
    fn push(&self, user: &str, layer: u64, seed: u64, target: &str) -> Result<(), String> {
        let layout = self.dir.path().join(format!("image-{layer}-{seed}"));
        let source = match layout.exists() {
            true => format!("oci:{}:x", layout.display()),
            false => noise_image(&layout, "x", layer, seed),
        };
        let out = skopeo_push(
            self.certs.ca_dir.to_str().unwrap(),
            &format!("{user}:pw-{user}"),
            &source,
            &format!("docker://{}/{target}", self.host()),
        );
        match out.status.success() {
            true => Ok(()),
            false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        }
    }

    /// The manifest `reference` of `repository`: its digest and the (digest, size) of
    /// every blob it references.
    fn manifest(&self, repository: &str, reference: &str) -> (String, Vec<(String, u64)>) {
        let out = skopeo(&[
            "inspect",
            "--raw",
            "--cert-dir",
            self.certs.ca_dir.to_str().unwrap(),
            "--creds",
            "admin:pw-admin",
            &format!("docker://{}/{repository}:{reference}", self.host()),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let blob = |d: &serde_json::Value| {
            (
                d["digest"].as_str().unwrap().to_string(),
                d["size"].as_u64().unwrap(),
            )
        };
        let mut blobs = vec![blob(&manifest["config"])];
        blobs.extend(manifest["layers"].as_array().unwrap().iter().map(blob));
        (common::digest(&out.stdout), blobs)
    }

    /// DELETE of manifest `digest` in `repository` as `user`: the status and body.
    fn delete(&self, user: &str, repository: &str, digest: &str) -> common::CurlResult {
        let scope = format!("repository:{repository}:delete");
        let answer = login(&self.edge, &self.ca(), user, &format!("pw-{user}"), &scope);
        let token = answer.json()["token"].as_str().unwrap().to_string();
        curl(&[
            "--cacert",
            &self.ca(),
            "-X",
            "DELETE",
            "-H",
            &format!("Authorization: Bearer {token}"),
            &self
                .edge
                .url(&format!("/v2/{repository}/manifests/{digest}")),
        ])
    }

    /// `POST /v2/<repository>/blobs/uploads/` as alice: an upload start, or with `body` a
    /// monolithic upload of that file.
    fn post_upload(&self, repository: &str, body: Option<&Path>) -> common::CurlResult {
        let scope = format!("repository:{repository}:pull,push");
        let answer = login(&self.edge, &self.ca(), "alice", "pw-alice", &scope);
        let token = answer.json()["token"].as_str().unwrap().to_string();
        let bearer = format!("Authorization: Bearer {token}");
        let mut url = self.edge.url(&format!("/v2/{repository}/blobs/uploads/"));
        let data = body.map(|path| format!("@{}", path.display()));
        let ca = self.ca();
        let mut args = vec!["--cacert", ca.as_str(), "-X", "POST", "-H", bearer.as_str()];
        if let (Some(data), Some(path)) = (&data, body) {
            url.push_str(&format!(
                "?digest={}",
                common::digest(&std::fs::read(path).unwrap())
            ));
            args.extend([
                "-H",
                "Content-Type: application/octet-stream",
                "--data-binary",
                data,
            ]);
        }
        args.push(&url);
        curl(&args)
    }

    /// Stops the edge and starts a new one with `policy`, on the same state folder.
    fn restart_edge(&mut self, policy: &str) {
        self.edge.proc.kill();
        self.edge = Self::edge(
            self.dir.path(),
            &self.certs,
            &self.registry,
            self.admin,
            policy,
        );
    }

    /// `registry-edge usage show --namespace` for `namespace`: its usage in bytes.
    fn usage(&self, namespace: &str) -> u64 {
        usage_of(&self.edge.config, namespace)
    }
}

fn usage_of(config: &Path, namespace: &str) -> u64 {
    let out = Command::new(common::EDGE_BIN)
        .args(["usage", "show", "--namespace", namespace, "--config"])
        .arg(config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(namespace))
        .unwrap_or_else(|| panic!("no line for {namespace}:\n{text}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The sum of the distinct blobs' sizes.
fn distinct_sum(blobs: &[&[(String, u64)]]) -> u64 {
    let mut seen = std::collections::BTreeMap::new();
    for list in blobs {
        for (digest, size) in *list {
            seen.insert(digest.clone(), *size);
        }
    }
    seen.values().sum()
}

#[test]
fn a_namespace_quota_counts_distinct_blobs_and_a_delete_frees_them() {
    const MIB: u64 = 1 << 20;
    let mut s = Setup::start("  quotas:\n    namespaces: { alice: 300MiB }\n");
    s.push("alice", 150 * MIB, 10, "alice/one:v1")
        .expect("150 MiB fits");
    s.push("alice", 100 * MIB, 20, "alice/two:v1")
        .expect("100 MiB more fits");
    // The same image in a third repository: its blobs are counted once.
    s.push("alice", 100 * MIB, 20, "alice/three:v1")
        .expect("shared blobs");
    let (one, one_blobs) = s.manifest("alice/one", "v1");
    let (_, two_blobs) = s.manifest("alice/two", "v1");
    let (_, three_blobs) = s.manifest("alice/three", "v1");
    assert_eq!(
        two_blobs, three_blobs,
        "skopeo pushed other blobs the second time"
    );
    let expected = distinct_sum(&[&one_blobs, &two_blobs]);
    assert_eq!(s.usage("alice"), expected);
    assert!(expected > 250 * MIB && expected < 300 * MIB);

    let refused = match s.push("alice", 100 * MIB, 40, "alice/four:v1") {
        Err(refused) => refused,
        Ok(()) => panic!(
            "pushed over the quota (usage now {}); the edge's log:\n{}",
            s.usage("alice"),
            s.edge.log_text()
        ),
    };
    assert!(refused.contains("denied"), "{refused}");
    assert!(
        refused.contains("namespace alice is over its storage quota"),
        "{refused}"
    );
    assert!(
        refused.contains(&format!("{expected} bytes used of {} bytes", 300 * MIB)),
        "{refused}"
    );
    assert_eq!(s.usage("alice"), expected, "a refused push was counted");
    let metrics = common::admin_metrics(s.admin);
    let gauge = |name: &str| common::metric(&metrics, name).unwrap_or(-1.0);
    assert_eq!(
        gauge("registry_edge_policy_usage_bytes{namespace=\"alice\"}"),
        expected as f64
    );
    assert_eq!(
        gauge("registry_edge_policy_quota_bytes{namespace=\"alice\"}"),
        (300 * MIB) as f64
    );
    assert_eq!(
        gauge("registry_edge_policy_refusals_total{reason=\"quota\"}"),
        1.0
    );
    // A monolithic upload declaring more than what remains is refused before it is sent on.
    let big = s.dir.path().join("big.blob");
    std::fs::write(&big, vec![7u8; 60 << 20]).unwrap();
    let too_big = s.post_upload("alice/five", Some(&big));
    assert_eq!(too_big.status, 403, "{}", too_big.text());
    assert_eq!(too_big.json()["errors"][0]["code"], "DENIED");
    let pulled = s.dir.path().join("pulled");
    let pull = skopeo(&[
        "copy",
        "--src-cert-dir",
        s.certs.ca_dir.to_str().unwrap(),
        "--src-creds",
        "alice:pw-alice",
        &format!("docker://{}/alice/one:v1", s.host()),
        &format!("oci:{}:x", pulled.display()),
    ]);
    assert!(
        pull.status.success(),
        "pulls still work: {}",
        String::from_utf8_lossy(&pull.stderr)
    );

    let deleted = s.delete("alice", "alice/one", &one);
    assert_eq!(deleted.status, 202, "{}", deleted.text());
    assert_eq!(s.usage("alice"), distinct_sum(&[&two_blobs]));
    s.push("alice", 100 * MIB, 40, "alice/four:v1")
        .expect("room after the delete");
    let (_, four_blobs) = s.manifest("alice/four", "v1");
    assert_eq!(s.usage("alice"), distinct_sum(&[&two_blobs, &four_blobs]));

    // A quota lowered by reload below the usage: every new upload is refused at its start.
    assert_eq!(s.post_upload("alice/five", None).status, 202);
    let text = std::fs::read_to_string(&s.edge.config).unwrap();
    std::fs::write(
        &s.edge.config,
        text.replace("alice: 300MiB", "alice: 100MiB"),
    )
    .unwrap();
    let pid = nix::unistd::Pid::from_raw(s.edge.proc.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let refused = common::wait_for("the reload", std::time::Duration::from_secs(10), || {
        let answer = s.post_upload("alice/five", None);
        (answer.status == 403).then_some(answer)
    });
    assert!(
        refused.text().contains("over its storage quota"),
        "{}",
        refused.text()
    );
    // The usage survives a restart: the new process refuses too.
    s.restart_edge("  quotas:\n    namespaces: { alice: 100MiB }\n");
    assert_eq!(s.post_upload("alice/five", None).status, 403);
    // Pulls and deletes still work over the quota.
    let (four, _) = s.manifest("alice/four", "v1");
    assert_eq!(s.delete("alice", "alice/four", &four).status, 202);
}

#[test]
fn immutable_tags_keep_their_digest_and_their_manifest() {
    let policy = "  immutable_tags:\n    - { name: \"**\", tags: [\"v[0-9]*\"] }\n    - exempt_accounts: [admin]\n";
    let s = Setup::start(policy);
    s.push("alice", 1 << 20, 100, "alice/imm:v1.0")
        .expect("a new tag");
    let (first, _) = s.manifest("alice/imm", "v1.0");
    let refused = s.push("alice", 1 << 20, 200, "alice/imm:v1.0").unwrap_err();
    assert!(refused.contains("denied"), "{refused}");
    assert!(
        refused.contains("tag v1.0 of alice/imm is immutable"),
        "{refused}"
    );
    assert_eq!(s.manifest("alice/imm", "v1.0").0, first, "the tag moved");
    s.push("alice", 1 << 20, 100, "alice/imm:v1.0")
        .expect("the same content again");
    s.push("alice", 1 << 20, 200, "alice/imm:latest")
        .expect("a tag no rule names");
    s.push("admin", 1 << 20, 200, "alice/imm:v1.0")
        .expect("an exempt account");
    let (second, _) = s.manifest("alice/imm", "v1.0");
    assert_ne!(second, first);
    // v1.0 points to the second manifest now: it cannot be deleted; the first can.
    let kept = s.delete("alice", "alice/imm", &second);
    assert_eq!(kept.status, 403, "{}", kept.text());
    assert_eq!(kept.json()["errors"][0]["code"], "DENIED");
    assert!(
        kept.text().contains("tag v1.0 of alice/imm is immutable"),
        "{}",
        kept.text()
    );
    assert_eq!(s.delete("alice", "alice/imm", &first).status, 202);
}

#[test]
fn usage_scan_counts_a_registry_filled_directly_and_repairs_a_broken_store() {
    let mut s = Setup::start("  quotas:\n    default: 1GiB\n");
    let registry = format!("http://{}", s.registry.addr());
    let ca = s.certs.ca_dir.join("ca.crt");
    let put = |repository: &str, tag: &str, blobs: &[&[u8]]| -> (Vec<(String, u64)>, Vec<u8>) {
        let scope = format!("repository:{repository}:pull,push");
        let token = login(&s.edge, &s.ca(), "admin", "pw-admin", &scope).json()["token"]
            .as_str()
            .unwrap()
            .to_string();
        let bearer = format!("Authorization: Bearer {token}");
        let described: Vec<(String, u64)> = blobs
            .iter()
            .map(|b| {
                let digest = common::push_blob(&registry, &ca, repository, b, &["-H", &bearer]);
                (digest, b.len() as u64)
            })
            .collect();
        let descriptor = |(d, n): &(String, u64)| serde_json::json!({"mediaType": "application/octet-stream", "digest": d, "size": n});
        let manifest = serde_json::json!({"schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": descriptor(&described[0]),
            "layers": described[1..].iter().map(descriptor).collect::<Vec<_>>()});
        let body = serde_json::to_vec(&manifest).unwrap();
        let file = s
            .dir
            .path()
            .join(format!("manifest-{}", common::digest(&body)));
        std::fs::write(&file, &body).unwrap();
        let stored = curl(&[
            "-X",
            "PUT",
            "-H",
            &bearer,
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
            "--data-binary",
            &format!("@{}", file.display()),
            &format!("{registry}/v2/{repository}/manifests/{tag}"),
        ]);
        assert_eq!(stored.status, 201, "{}", stored.text());
        (described, body)
    };
    let (c1, l1, l2, c2, l3) = (
        b"{\"c\":1}".to_vec(),
        vec![1u8; 300_000],
        vec![2u8; 200_000],
        b"{\"c\":2}".to_vec(),
        vec![3u8; 100_000],
    );
    let (x, _) = put("alice/x", "t1", &[&c1, &l1, &l2]);
    let (y, _) = put("alice/sub/y", "t2", &[&c2, &l1, &l3]);
    let (z, _) = put("bob/z", "t3", &[&c1, &l3]);
    assert_eq!(s.usage("alice"), 0, "the edge saw none of it");

    let scan = |config: &Path| {
        Command::new(common::EDGE_BIN)
            .args(["usage", "scan", "--config"])
            .arg(config)
            .output()
            .unwrap()
    };
    let scanned = scan(&s.edge.config);
    assert!(
        scanned.status.success(),
        "{}",
        String::from_utf8_lossy(&scanned.stderr)
    );
    assert!(String::from_utf8_lossy(&scanned.stdout).contains("3 repositories, 3 manifests"));
    assert_eq!(s.usage("alice"), distinct_sum(&[&x, &y]));
    assert_eq!(s.usage("bob"), distinct_sum(&[&z]));

    // A broken store: the edge starts anyway, says so, and a scan repairs it.
    s.edge.proc.kill();
    let file = s.dir.path().join("policy/usage.sqlite3");
    std::fs::write(&file, b"this is not a database ".repeat(200)).unwrap();
    for side in ["usage.sqlite3-wal", "usage.sqlite3-shm"] {
        let _ = std::fs::remove_file(s.dir.path().join("policy").join(side));
    }
    s.restart_edge("  quotas:\n    default: 1GiB\n");
    let log = s.edge.log_text();
    assert!(
        log.contains("cannot be opened") && log.contains("registry-edge usage scan"),
        "{log}"
    );
    assert_eq!(s.usage("alice"), 0);
    assert!(scan(&s.edge.config).status.success());
    assert_eq!(s.usage("alice"), distinct_sum(&[&x, &y]));
}
