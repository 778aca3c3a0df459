//! The cache of pulls by digest (`cache:`), against the real registry with token auth at
//! the edge and skopeo: hot pulls are answered with the registry stopped, but only for a
//! token that grants pull and a repository the registry confirmed; tags always go to the
//! registry; a damaged entry is never delivered whole; entries survive a restart.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::auth::{auth_yaml, login, registry_auth_block};
use common::images::noise_image;
use common::{
    admin_metrics, curl, free_port, make_certs, metric, skopeo, upstream_yaml, wait_for, Certs,
    Checks, CurlResult, Edge, Registry,
};

struct Setup {
    dir: tempfile::TempDir,
    certs: Certs,
    registry: Registry,
    edge: Edge,
    admin: u16,
}

impl Setup {
    fn start(cache_extra: &str) -> Setup {
        Self::start_with_size("1GiB", cache_extra)
    }

    /// Like [`Setup::start`] with another `cache.max_size`.
    fn start_with_size(max_size: &str, cache_extra: &str) -> Setup {
        let cache_extra = format!("  max_size: {max_size}\n{cache_extra}");
        let cache_extra = cache_extra.as_str();
        let dir = tempfile::tempdir().unwrap();
        let certs = make_certs(dir.path());
        let registry = Registry::start_with(dir.path(), "node", &registry_auth_block(dir.path()));
        let admin = free_port();
        let edge = Self::edge(dir.path(), &certs, &registry, admin, cache_extra);
        Setup {
            dir,
            certs,
            registry,
            edge,
            admin,
        }
    }

    fn edge(dir: &Path, certs: &Certs, registry: &Registry, admin: u16, cache_extra: &str) -> Edge {
        let extra = format!(
            "{}admin:\n  listen: \"127.0.0.1:{admin}\"\ncache:\n  dir: {}\n{cache_extra}",
            auth_yaml(dir, ""),
            dir.join("cache").display()
        );
        Edge::start(
            dir,
            certs,
            &upstream_yaml(&[registry.addr()], "repository_hash"),
            &extra,
        )
    }

    fn restart_edge(&mut self) {
        self.edge.proc.kill();
        let extra = "  max_size: 1GiB\n";
        self.edge = Self::edge(
            self.dir.path(),
            &self.certs,
            &self.registry,
            self.admin,
            extra,
        );
    }

    fn ca(&self) -> String {
        self.certs.ca_dir.join("ca.crt").display().to_string()
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.edge.https_port)
    }

    /// A bearer token for `user` with `scope`.
    fn token(&self, user: &str, scope: &str) -> String {
        let answer = login(&self.edge, &self.ca(), user, &format!("pw-{user}"), scope);
        answer.json()["token"].as_str().unwrap().to_string()
    }

    /// GET (or `method`) of `path` with alice's pull token for `repository`.
    fn get(&self, repository: &str, path: &str, extra: &[&str]) -> CurlResult {
        let token = self.token("alice", &format!("repository:{repository}:pull"));
        let bearer = format!("Authorization: Bearer {token}");
        let ca = self.ca();
        let mut args = vec!["--cacert", &ca, "-H", &bearer];
        args.extend_from_slice(extra);
        let url = self.edge.url(path);
        args.push(&url);
        curl(&args)
    }

    /// Starts the registry again and waits until the edge's health check sees it.
    fn restart_registry(&mut self) {
        self.registry.restart();
        // A request with a token goes to the registry (without one the edge answers 401).
        let token = self.token("alice", "");
        let bearer = format!("Authorization: Bearer {token}");
        let (url, ca) = (self.edge.url("/v2/"), self.ca());
        wait_for(
            "the node to be healthy again",
            Duration::from_secs(10),
            || (curl(&["--cacert", &ca, "-H", &bearer, &url]).status == 200).then_some(()),
        );
    }

    /// The first layer's digest and size, and the config's digest, in the manifest `digest`
    /// of alice/app.
    fn layer_of(&self, digest: &str) -> (String, u64, String) {
        let out = skopeo(&[
            "inspect",
            "--raw",
            "--cert-dir",
            self.certs.ca_dir.to_str().unwrap(),
            "--creds",
            "alice:pw-alice",
            &format!("docker://{}/alice/app@{digest}", self.host()),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let layer = &manifest["layers"][0];
        (
            layer["digest"].as_str().unwrap().to_string(),
            layer["size"].as_u64().unwrap(),
            manifest["config"]["digest"].as_str().unwrap().to_string(),
        )
    }

    fn metric(&self, event: &str) -> f64 {
        let text = admin_metrics(self.admin);
        metric(
            &text,
            &format!("registry_edge_cache_events_total{{event=\"{event}\"}}"),
        )
        .unwrap_or(0.0)
    }

    /// skopeo pull of `reference` (after the host) into a fresh OCI layout; the layout's
    /// blob names (digests) on success.
    fn pull(&self, reference: &str, into: &str) -> Result<Vec<String>, String> {
        let target = self.dir.path().join(into);
        let out = skopeo(&[
            "copy",
            "--src-cert-dir",
            self.certs.ca_dir.to_str().unwrap(),
            "--src-creds",
            "alice:pw-alice",
            &format!("docker://{}/{reference}", self.host()),
            &format!("oci:{}:x", target.display()),
        ]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(blob_names(&target))
    }
}

fn blob_names(layout: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The file `cacache` keeps `digest`'s content in (its `content-v2` layout).
fn content_file(cache: &Path, digest: &str) -> PathBuf {
    let hex = &digest["sha256:".len()..];
    cache
        .join("content-v2/sha256")
        .join(&hex[..2])
        .join(&hex[2..4])
        .join(&hex[4..])
}

#[test]
fn hot_pulls_are_served_from_the_cache_only_to_whom_the_registry_confirmed() {
    let mut s = Setup::start("");
    let layout = s.dir.path().join("layout");
    let source = noise_image(&layout, "v1", 100 << 20, 11);
    let digest_file = s.dir.path().join("pushed-digest");
    let pushed = skopeo(&[
        "copy",
        "--digestfile",
        digest_file.to_str().unwrap(),
        "--dest-cert-dir",
        s.certs.ca_dir.to_str().unwrap(),
        "--dest-creds",
        "alice:pw-alice",
        &source,
        &format!("docker://{}/alice/app:v1", s.host()),
    ]);
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    // skopeo compresses the layer on the way: the registry's digests are the pushed ones.
    let manifest = std::fs::read_to_string(&digest_file)
        .unwrap()
        .trim()
        .to_string();
    let (layer, layer_size, config) = s.layer_of(&manifest);

    let first = s
        .pull(&format!("alice/app@{manifest}"), "first")
        .expect("cold pull");
    // Manifest, config and layer, each filled once its digest matched.
    wait_for("three fills", Duration::from_secs(30), || {
        (s.metric("fill") >= 3.0).then_some(())
    });
    let layer_file = content_file(&s.dir.path().join("cache"), &layer);
    assert_eq!(std::fs::metadata(&layer_file).unwrap().len(), layer_size);

    let mut checks = Checks::new();
    checks.run(
        "a repository the registry says lacks the blob gets 404",
        || {
            let answer = s.get(
                "alice/other",
                &format!("/v2/alice/other/blobs/{layer}"),
                &["-I"],
            );
            assert_eq!(answer.status, 404);
        },
    );
    s.registry.stop();
    checks.run(
        "with the registry stopped, a pull by digest is answered whole",
        || {
            let again = s
                .pull(&format!("alice/app@{manifest}"), "second")
                .expect("hot pull");
            assert_eq!(again, first);
        },
    );
    checks.run("a pull by tag still asks the registry", || {
        let answer = s.get("alice/app", "/v2/alice/app/manifests/v1", &[]);
        assert!(matches!(answer.status, 502 | 503), "{}", answer.status);
        assert!(answer.json()["errors"][0]["code"].is_string());
    });
    checks.run(
        "a repository the registry never confirmed is not answered",
        || {
            let answer = s.get(
                "alice/other",
                &format!("/v2/alice/other/blobs/{layer}"),
                &[],
            );
            assert!(matches!(answer.status, 502 | 503), "{}", answer.status);
        },
    );
    checks.run("a token without pull on the repository gets 401", || {
        let token = s.token("bob", "repository:alice/app:pull");
        let answer = curl(&[
            "--cacert",
            &s.ca(),
            "-H",
            &format!("Authorization: Bearer {token}"),
            &s.edge.url(&format!("/v2/alice/app/blobs/{layer}")),
        ]);
        assert_eq!(answer.status, 401);
        assert!(answer.body.len() < 1000, "blob bytes sent to bob");
    });
    checks.run("HEAD, If-None-Match and Range from the cache", || {
        let path = format!("/v2/alice/app/blobs/{layer}");
        let head = s.get("alice/app", &path, &["-I"]);
        assert_eq!(head.status, 200);
        assert_eq!(
            head.header("content-length"),
            Some(layer_size.to_string().as_str())
        );
        assert_eq!(head.header("docker-content-digest"), Some(layer.as_str()));
        let etag = head.header("etag").unwrap().to_string();
        let cached = s.get(
            "alice/app",
            &path,
            &["-H", &format!("If-None-Match: {etag}")],
        );
        assert_eq!(cached.status, 304);
        let part = s.get("alice/app", &path, &["-H", "Range: bytes=1000-1999"]);
        assert_eq!(part.status, 206);
        let whole = std::fs::read(&layer_file).unwrap();
        assert_eq!(part.body, &whole[1000..2000]);
        let size = whole.len();
        assert_eq!(
            part.header("content-range"),
            Some(format!("bytes 1000-1999/{size}").as_str())
        );
    });
    checks.run("a restart keeps the entries", || {
        s.restart_edge();
        let size = metric(&admin_metrics(s.admin), "registry_edge_cache_size_bytes").unwrap_or(0.0);
        assert!(size >= layer_size as f64, "index not rebuilt: {size} bytes");
        // The pairs the registry confirmed are the process's: confirm again after a restart.
        s.restart_registry();
        s.pull(&format!("alice/app@{manifest}"), "third")
            .expect("pull after restart");
        assert_eq!(s.metric("fill"), 0.0, "entries were filled again");
        s.registry.stop();
        let hot = s
            .pull(&format!("alice/app@{manifest}"), "fourth")
            .expect("hot pull after restart");
        assert_eq!(hot, first);
    });
    checks.run("a DELETE through the edge forgets the pair", || {
        s.restart_registry();
        let token = s.token("alice", "repository:alice/app:pull,delete");
        let path = format!("/v2/alice/app/manifests/{manifest}");
        let bearer = format!("Authorization: Bearer {token}");
        let deleted = curl(&[
            "--cacert",
            &s.ca(),
            "-H",
            &bearer,
            "-X",
            "DELETE",
            &s.edge.url(&path),
        ]);
        assert_eq!(deleted.status, 202, "{}", deleted.text());
        s.registry.stop();
        let answer = s.get("alice/app", &path, &[]);
        assert!(
            matches!(answer.status, 502 | 503),
            "served after DELETE: {}",
            answer.status
        );
    });
    checks.run(
        "an altered entry is never delivered whole, and is dropped",
        || {
            let mut bytes = std::fs::read(&layer_file).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0xff;
            std::fs::write(&layer_file, &bytes).unwrap();
            let before = s.metric("mismatch");
            let answer = s.get("alice/app", &format!("/v2/alice/app/blobs/{layer}"), &[]);
            assert!(
                answer.status != 200 || answer.body.len() < bytes.len(),
                "the altered blob came whole"
            );
            assert!(answer.body != bytes, "the altered content was delivered");
            assert!(s.metric("mismatch") > before);
            let after = s.get("alice/app", &format!("/v2/alice/app/blobs/{layer}"), &[]);
            assert!(
                matches!(after.status, 502 | 503),
                "the entry was not dropped: {}",
                after.status
            );
        },
    );
    checks.run("small objects are answered from memory", || {
        // The image config was kept in memory when last read whole: its file is not needed.
        std::fs::remove_file(content_file(&s.dir.path().join("cache"), &config)).unwrap();
        let answer = s.get("alice/app", &format!("/v2/alice/app/blobs/{config}"), &[]);
        assert_eq!(answer.status, 200);
        assert_eq!(common::digest(&answer.body), config);
    });
    checks.finish();
}

/// Pushes `bytes` as a blob of alice/`repo` and returns its digest.
fn push_blob(s: &Setup, repo: &str, bytes: &[u8]) -> String {
    let token = s.token("alice", &format!("repository:alice/{repo}:pull,push"));
    let bearer = format!("Authorization: Bearer {token}");
    let base = format!("https://127.0.0.1:{}", s.edge.https_port);
    common::push_blob(
        &base,
        &s.certs.ca_dir.join("ca.crt"),
        &format!("alice/{repo}"),
        bytes,
        &["-H", &bearer],
    )
}

fn noise(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
        .collect()
}

#[test]
fn eviction_keeps_max_size_and_purge_deletes_entries() {
    let mut s = Setup::start_with_size("3MiB", "  max_object: 2MiB\n");
    let blobs: Vec<(String, Vec<u8>)> = (0..3u8)
        .map(|i| {
            let bytes = noise(1_500_000, i);
            (push_blob(&s, "evict", &bytes), bytes)
        })
        .collect();
    for (digest, bytes) in &blobs {
        let answer = s.get(
            "alice/evict",
            &format!("/v2/alice/evict/blobs/{digest}"),
            &[],
        );
        assert_eq!(answer.status, 200);
        assert!(answer.body == *bytes);
        let fills = blobs.iter().position(|(d, _)| d == digest).unwrap() as f64 + 1.0;
        wait_for("the fill", Duration::from_secs(10), || {
            (s.metric("fill") >= fills).then_some(())
        });
    }
    let size = metric(&admin_metrics(s.admin), "registry_edge_cache_size_bytes").unwrap();
    assert!(size <= (3 << 20) as f64, "{size} bytes over max_size");
    assert!(s.metric("eviction") >= 1.0);
    s.registry.stop();
    let path = |digest: &str| format!("/v2/alice/evict/blobs/{digest}");
    let first = s.get("alice/evict", &path(&blobs[0].0), &[]);
    assert!(
        matches!(first.status, 502 | 503),
        "the least recently used entry was kept"
    );
    let last = s.get("alice/evict", &path(&blobs[2].0), &[]);
    assert_eq!(last.status, 200);

    let purge = |args: &[&str]| {
        std::process::Command::new(common::EDGE_BIN)
            .args(["cache", "purge", "--config"])
            .arg(&s.edge.config)
            .args(args)
            .output()
            .unwrap()
    };
    let refused = purge(&["--digest", "latest"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("sha256:"));
    let purged = purge(&["--digest", &blobs[2].0]);
    assert!(
        purged.status.success(),
        "{}",
        String::from_utf8_lossy(&purged.stderr)
    );
    assert!(String::from_utf8_lossy(&purged.stdout).contains("purged 1 entries"));
    let gone = s.get("alice/evict", &path(&blobs[2].0), &[]);
    assert!(
        matches!(gone.status, 502 | 503),
        "a purged entry was served: {}",
        gone.status
    );
}

/// `cache.dir` on a 1 MiB tmpfs: a 3 MiB blob cannot be cached, the pull still succeeds,
/// caching stops (counted once as an error), and pulls keep working from the registry.
#[test]
fn a_full_disk_stops_caching_and_pulls_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs"])
        .arg(&cache)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        return common::skip("a_full_disk", "cannot mount a tmpfs here (needs root)");
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(cache.clone());
    let certs = make_certs(dir.path());
    let registry = Registry::start_with(dir.path(), "node", &registry_auth_block(dir.path()));
    let admin = free_port();
    let edge = Setup::edge(dir.path(), &certs, &registry, admin, "  max_size: 1GiB\n");
    let s = Setup {
        dir,
        certs,
        registry,
        edge,
        admin,
    };
    let bytes = noise(3_000_000, 9);
    let digest = push_blob(&s, "full", &bytes);
    for _ in 0..3 {
        let answer = s.get("alice/full", &format!("/v2/alice/full/blobs/{digest}"), &[]);
        assert_eq!(answer.status, 200);
        assert!(
            answer.body == bytes,
            "the pull was damaged by the full cache"
        );
    }
    wait_for("the error to be counted", Duration::from_secs(10), || {
        (s.metric("error") >= 1.0).then_some(())
    });
    assert_eq!(
        s.metric("error"),
        1.0,
        "caching did not stop after the first error"
    );
    assert_eq!(s.metric("fill"), 0.0);
    let logged = s.edge.log_text().matches("caching stops").count();
    assert_eq!(logged, 1, "{}", s.edge.log_text());
}

/// Eight clients pulling one cold blob at once cause one registry fetch: the others wait
/// for its fill and are answered from the cache (the edge's access log names a node only
/// for requests it sent to the registry).
#[test]
fn concurrent_cold_pulls_cause_one_registry_fetch() {
    let s = Setup::start("");
    let bytes = noise(20_000_000, 3);
    let digest = push_blob(&s, "cold", &bytes);
    let token = s.token("alice", "repository:alice/cold:pull");
    let path = format!("/v2/alice/cold/blobs/{digest}");
    // The pair is confirmed first (a HEAD goes to the registry and fills nothing).
    let head = s.get("alice/cold", &path, &["-I"]);
    assert_eq!(head.status, 200);
    let url = s.edge.url(&path);
    let ca = s.ca();
    let pulls: Vec<_> = (0..8)
        .map(|_| {
            let (url, ca, bearer) = (
                url.clone(),
                ca.clone(),
                format!("Authorization: Bearer {token}"),
            );
            std::thread::spawn(move || curl(&["--cacert", &ca, "-H", &bearer, &url]))
        })
        .collect();
    for pull in pulls {
        let answer = pull.join().unwrap();
        assert_eq!(answer.status, 200);
        assert!(answer.body == bytes, "a pull got other bytes");
    }
    let log = s.edge.log_text();
    let fetched = log
        .lines()
        .filter(|l| l.contains("method=GET") && l.contains(&digest) && l.contains("upstream=127."))
        .count();
    assert_eq!(fetched, 1, "GETs sent to the registry:\n{log}");
    let from_cache = log
        .lines()
        .filter(|l| l.contains("method=GET") && l.contains(&digest) && l.contains("upstream=cache"))
        .count();
    assert_eq!(from_cache, 7, "answers from the cache:\n{log}");
}

/// Without `auth` at the edge (proxy only), a cached body is served only after the
/// registry answered a `HEAD` with the client's own credentials: here the registry checks
/// htpasswd users itself.
#[test]
fn proxy_only_mode_asks_the_registry_with_the_clients_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let users = common::auth::htpasswd(dir.path());
    let registry = Registry::start_with(
        dir.path(),
        "node",
        &format!(
            "auth:\n  htpasswd:\n    realm: basic-realm\n    path: {}\n",
            users.display()
        ),
    );
    let certs = make_certs(dir.path());
    let admin = free_port();
    let extra = format!(
        "admin:\n  listen: \"127.0.0.1:{admin}\"\ncache:\n  dir: {}\n  max_size: 1GiB\n",
        dir.path().join("cache").display()
    );
    let edge = Edge::start(
        dir.path(),
        &certs,
        &upstream_yaml(&[registry.addr()], "repository_hash"),
        &extra,
    );
    let ca = certs.ca_dir.join("ca.crt");
    let bytes = noise(2_000_000, 5);
    let base = format!("https://127.0.0.1:{}", edge.https_port);
    let digest = common::push_blob(&base, &ca, "alice/app", &bytes, &["-u", "alice:pw-alice"]);
    let get = |repo: &str, creds: &str| {
        curl(&[
            "--cacert",
            ca.to_str().unwrap(),
            "-u",
            creds,
            &edge.url(&format!("/v2/{repo}/blobs/{digest}")),
        ])
    };
    let events = |event: &str| {
        let text = admin_metrics(admin);
        metric(
            &text,
            &format!("registry_edge_cache_events_total{{event=\"{event}\"}}"),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(get("alice/app", "alice:pw-alice").status, 200);
    wait_for("the fill", Duration::from_secs(10), || {
        (events("fill") >= 1.0).then_some(())
    });

    let mut checks = Checks::new();
    checks.run(
        "the registry's 200 to the HEAD lets the cache answer",
        || {
            let hits = events("hit");
            let answer = get("alice/app", "alice:pw-alice");
            assert_eq!(answer.status, 200);
            assert!(answer.body == bytes);
            assert_eq!(events("hit"), hits + 1.0, "not answered from the cache");
        },
    );
    checks.run(
        "wrong credentials get the registry's 401, not the blob",
        || {
            let hits = events("hit");
            let answer = get("alice/app", "alice:wrong");
            assert_eq!(answer.status, 401);
            assert!(answer.body.len() < 1000);
            assert_eq!(events("hit"), hits);
        },
    );
    checks.run(
        "a repository without the blob gets the registry's 404",
        || {
            assert_eq!(get("alice/other", "alice:pw-alice").status, 404);
        },
    );
    checks.finish();
}

/// A layer cached for one repository is served for another only after the registry
/// answered a HEAD for that repository: a cross-repository mount makes the second hold it.
#[test]
fn another_repository_is_served_once_the_registry_says_it_holds_the_digest() {
    let mut s = Setup::start("");
    let bytes = noise(2_000_000, 7);
    let digest = push_blob(&s, "first", &bytes);
    let path = |repo: &str| format!("/v2/alice/{repo}/blobs/{digest}");
    assert_eq!(s.get("alice/first", &path("first"), &[]).status, 200);
    wait_for("the fill", Duration::from_secs(10), || {
        (s.metric("fill") >= 1.0).then_some(())
    });
    // Not in alice/second yet: the registry's answer to the HEAD is 404.
    assert_eq!(s.get("alice/second", &path("second"), &[]).status, 404);
    // A mount puts it there (the registry links the existing blob).
    let token = s.token(
        "alice",
        "repository:alice/second:pull,push&scope=repository:alice/first:pull",
    );
    let mount = s.edge.url(&format!(
        "/v2/alice/second/blobs/uploads/?mount={digest}&from=alice/first"
    ));
    let mounted = curl(&[
        "--cacert",
        &s.ca(),
        "-X",
        "POST",
        "-H",
        &format!("Authorization: Bearer {token}"),
        &mount,
    ]);
    assert_eq!(mounted.status, 201, "{}", mounted.text());
    let hits = s.metric("hit");
    let answer = s.get("alice/second", &path("second"), &[]);
    assert_eq!(answer.status, 200);
    assert!(answer.body == bytes);
    assert_eq!(
        s.metric("hit"),
        hits + 1.0,
        "the second repository's pull was not answered from the cache"
    );
    // Confirmed now: answered with the registry stopped.
    s.registry.stop();
    assert_eq!(s.get("alice/second", &path("second"), &[]).status, 200);
}
