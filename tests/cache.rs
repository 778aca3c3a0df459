//! The cache of pulls by digest (`cache:`), against the real registry with token auth at
//! the edge and skopeo: hot pulls are answered with the registry stopped, but only for a
//! token that grants pull and a repository the registry confirmed; tags always go to the
//! registry; a damaged entry is never delivered whole; entries survive a restart; capacity
//! (eviction, purge, a full disk). Sharing between requests: `tests/cache_sharing.rs`.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::cache::{cache_size, content_file, noise, push_blob, Setup};
use common::images::noise_image;
use common::setup::Feature;
use common::{admin_metrics, curl, metric, wait_for, Checks};

#[test]
fn hot_pulls_are_served_from_the_cache_only_to_whom_the_registry_confirmed() {
    let mut s = Setup::cache("");
    let layout = s.dir.path().join("layout");
    let source = noise_image(&layout, "v1", 100 << 20, 11);
    let manifest = s.push_image_digest("alice", &source, "alice/app:v1");
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
        s.restart_edge(&cache_size("1GiB", ""));
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
        // The image config was kept in memory when last read whole (verified then): a
        // byte changed in its file since is not read.
        let file = content_file(&s.dir.path().join("cache"), &config);
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[0] ^= 0xff;
        std::fs::write(&file, &bytes).unwrap();
        let before = s.metric("mismatch");
        let answer = s.get("alice/app", &format!("/v2/alice/app/blobs/{config}"), &[]);
        assert_eq!(answer.status, 200);
        assert_eq!(common::digest(&answer.body), config);
        assert_eq!(s.metric("mismatch"), before, "read from the disk");
    });
    checks.run("removing cache: by reload stops answers from it", || {
        let path = format!("/v2/alice/app/blobs/{config}");
        assert_eq!(s.get("alice/app", &path, &[]).status, 200);
        let text = std::fs::read_to_string(&s.edge.config).unwrap();
        let without = &text[..text.find("\ncache:\n").expect("a cache section") + 1];
        std::fs::write(&s.edge.config, without).unwrap();
        // What `registry-edge reload` sends.
        let pid = nix::unistd::Pid::from_raw(s.edge.proc.pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
        wait_for("the reload", Duration::from_secs(10), || {
            let status = s.get("alice/app", &path, &[]).status;
            matches!(status, 502 | 503).then_some(())
        });
    });
    checks.finish();
}

#[test]
fn eviction_keeps_max_size_and_purge_deletes_entries() {
    let mut s = Setup::cache_with_size("3MiB", "  max_object: 2MiB\n");
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
    // A small blob is kept in memory as well as on disk.
    let small = noise(100_000, 9);
    let small_digest = push_blob(&s, "evict", &small);
    let small_path = format!("/v2/alice/evict/blobs/{small_digest}");
    assert_eq!(s.get("alice/evict", &small_path, &[]).status, 200);
    wait_for("the small fill", Duration::from_secs(10), || {
        (s.metric("fill") >= 4.0).then_some(())
    });
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
    // The whole cache: the running edge stops answering from memory too.
    assert!(s.get("alice/evict", &small_path, &[]).body == small);
    assert!(purge(&[]).status.success());
    let gone = s.get("alice/evict", &small_path, &[]);
    assert!(
        matches!(gone.status, 502 | 503),
        "a purged entry was served from memory: {}",
        gone.status
    );
    // The registry back: the next pull of a purged entry fills it again.
    s.restart_registry();
    let fills = s.metric("fill");
    assert!(s.get("alice/evict", &small_path, &[]).body == small);
    wait_for(
        "the purged entry to fill again",
        Duration::from_secs(10),
        || (s.metric("fill") > fills).then_some(()),
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
        return common::skip_here("a_full_disk", "cannot mount a tmpfs here (needs root)");
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(cache.clone());
    let s = Setup::start_in(dir, Feature::Cache, &cache_size("1GiB", ""));
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
