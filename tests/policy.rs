//! `policy:` quotas against the real registry with token auth at the edge and skopeo: a
//! namespace quota counted from the manifests pushed (shared layers once, freed by a
//! DELETE), its metrics, reload and restart; `usage scan` over a registry filled directly
//! and a broken store. Immutable tags: `tests/policy_immutable.rs`.

mod common;

use std::path::Path;
use std::process::Command;

use common::auth::login;
use common::policy::{distinct_sum, Setup};
use common::{curl, skopeo};

#[test]
fn a_namespace_quota_counts_distinct_blobs_and_a_delete_frees_them() {
    const MIB: u64 = 1 << 20;
    let mut s = Setup::policy("  quotas:\n    namespaces: { alice: 300MiB }\n");
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
    // Refused while the layer streams (it passes what remains) or at the manifest. A client
    // still writing when the 403 comes may report only a reset connection; when skopeo
    // read the answer, it is the registry-format refusal.
    let denied =
        refused.contains("denied: push refused: namespace alice would exceed its storage quota");
    let cut = refused.contains("connection reset") || refused.contains("broken pipe");
    assert!(denied || cut, "{refused}");
    // The access line comes once the edge has read away what the client still sent.
    common::wait_for(
        &format!("a 403 in the edge's log: {refused}"),
        std::time::Duration::from_secs(10),
        || s.edge.log_text().contains("status=403").then_some(()),
    );
    let refusals = s.edge.log_text().matches("status=403").count();
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
        refusals as f64
    );
    // A monolithic upload declaring more than what remains is refused before it is sent on.
    let big = s.dir.path().join("big.blob");
    std::fs::write(&big, vec![7u8; 60 << 20]).unwrap();
    let too_big = s.post_upload("alice/five", Some(&big));
    assert_eq!(too_big.status, 403, "{}", too_big.text());
    assert_eq!(too_big.json()["errors"][0]["code"], "DENIED");
    let message = format!(
        "push refused: namespace alice would exceed its storage quota ({expected} bytes used of {} bytes; this push needs {} more bytes)",
        300 * MIB,
        60 << 20
    );
    assert_eq!(too_big.json()["errors"][0]["message"], message.as_str());
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
        refused
            .text()
            .contains("namespace alice is over its storage quota"),
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

/// What a client writes is not what is counted: descriptor sizes are checked against the
/// registry's, a body that is not a manifest is refused, `Expect: 100-continue` changes
/// nothing, and a refused upload leaves nothing at the registry.
#[test]
fn a_manifest_is_counted_at_the_registrys_sizes_and_cannot_slip_past() {
    let s = Setup::policy("  quotas:\n    namespaces: { alice: 10MiB }\n");
    let bearer = s.bearer("alice/app", "pull,push");
    let base = format!("https://127.0.0.1:{}", s.edge.https_port);
    let ca = s.certs.ca_dir.join("ca.crt");
    // Three 4 MiB blobs: each upload fits (nothing is referenced yet).
    let blobs: Vec<String> = (1..=3u8)
        .map(|i| common::push_blob(&base, &ca, "alice/app", &vec![i; 4 << 20], &["-H", &bearer]))
        .collect();
    let descriptor = |d: &str| serde_json::json!({"mediaType": "application/octet-stream", "digest": d, "size": 1});
    let manifest = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor(&blobs[0]),
        "layers": [descriptor(&blobs[1]), descriptor(&blobs[2])]}))
    .unwrap();
    // The descriptors say 3 bytes; the registry holds 12 MiB.
    let put = s.put_manifest(
        "alice/app",
        "v1",
        &manifest,
        &["-H", "Expect: 100-continue"],
    );
    assert_eq!(put.status, 403, "{}", put.text());
    assert!(
        put.text().contains("this push needs 12582912 more bytes"),
        "{}",
        put.text()
    );
    assert_eq!(s.usage("alice"), 0);
    let garbage = s.put_manifest("alice/app", "v2", b"{\"layers\": 7}", &[]);
    assert_eq!(garbage.status, 400, "{}", garbage.text());
    assert_eq!(garbage.json()["errors"][0]["code"], "MANIFEST_INVALID");
    // Two of them fit: 8 MiB, counted at the registry's sizes.
    let fits = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor(&blobs[0]), "layers": [descriptor(&blobs[1])]}))
    .unwrap();
    let put = s.put_manifest("alice/app", "v3", &fits, &["-H", "Expect: 100-continue"]);
    assert_eq!(put.status, 201, "{}", put.text());
    assert_eq!(s.usage("alice"), 8 << 20);
    // A monolithic upload over what remains never reaches the registry.
    let big = s.dir.path().join("big.blob");
    std::fs::write(&big, vec![9u8; 3 << 20]).unwrap();
    let refused = s.post_upload("alice/app", Some(&big));
    assert_eq!(refused.status, 403, "{}", refused.text());
    let digest = common::digest(&std::fs::read(&big).unwrap());
    let at_registry = curl(&[
        "-I",
        "-H",
        &bearer,
        &format!("http://{}/v2/alice/app/blobs/{digest}", s.registry.addr()),
    ]);
    assert_eq!(
        at_registry.status, 404,
        "the refused blob reached the registry"
    );

    // Two pushes at once, each fitting alone, not together: one is refused.
    let (v3, _) = s.manifest("alice/app", "v3");
    assert_eq!(s.delete("alice", "alice/app", &v3).status, 202);
    assert_eq!(s.usage("alice"), 0);
    let other = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor(&blobs[2]), "layers": [descriptor(&blobs[1])]}))
    .unwrap();
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let first = scope.spawn(|| s.put_manifest("alice/app", "a", &fits, &[]).status);
        let second = scope.spawn(|| s.put_manifest("alice/app", "b", &other, &[]).status);
        vec![first.join().unwrap(), second.join().unwrap()]
    });
    let mut sorted = statuses.clone();
    sorted.sort();
    assert_eq!(sorted, [201, 403], "{statuses:?}");
    assert_eq!(s.usage("alice"), 8 << 20);
}

#[test]
fn usage_scan_counts_a_registry_filled_directly_and_repairs_a_broken_store() {
    let mut s = Setup::policy("  quotas:\n    default: 1GiB\n");
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
    // `usage show` reads a store; it never makes one the edge does not use.
    let elsewhere = s.dir.path().join("elsewhere.yaml");
    let text = std::fs::read_to_string(&s.edge.config).unwrap();
    let unused = s.dir.path().join("unused-state");
    let moved = text.replace(
        &s.dir.path().join("policy").display().to_string(),
        &unused.display().to_string(),
    );
    std::fs::write(&elsewhere, moved).unwrap();
    let shown = Command::new(common::EDGE_BIN)
        .args(["usage", "show", "--config"])
        .arg(&elsewhere)
        .output()
        .unwrap();
    assert_eq!(shown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&shown.stderr).contains("no usage store yet"));
    assert!(!unused.exists(), "usage show created a store");

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
