//! The cache answers as the registry does for the endpoint asked (issue 32): a manifest's
//! digest on `/blobs/` and a blob's on `/manifests/` get the registry's answer before and
//! after either was cached; conditional and range requests get the registry's status and
//! headers; a pull by tag warms the pull by digest.

mod common;

use std::time::Duration;

use common::cache::{cache_size, content_file, Setup};
use common::images::noise_image;
use common::{curl, wait_for, Checks, CurlResult};

/// The headers a cached answer must carry exactly as the registry's.
const COMPARED: [&str; 8] = [
    "content-type",
    "content-length",
    "content-range",
    "docker-content-digest",
    "etag",
    "cache-control",
    "accept-ranges",
    "docker-distribution-api-version",
];

/// An image of alice/app:v1 pushed through the edge (a push fills nothing): (setup,
/// manifest digest, layer digest, config digest).
fn pushed() -> (Setup, String, String, String) {
    pushed_with_layer(64 << 10)
}

/// Like [`pushed`], with a layer of about `size` bytes.
fn pushed_with_layer(size: u64) -> (Setup, String, String, String) {
    let s = Setup::cache("");
    let layout = s.dir.path().join("layout");
    let source = noise_image(&layout, "v1", size, 7);
    let manifest = s.push_image_digest("alice", &source, "alice/app:v1");
    // Read from the registry itself: through the edge, the manifest would be cached.
    let path = format!("/v2/alice/app/manifests/{manifest}");
    let raw = direct(&s, &path, &["-H", OCI_MANIFEST]);
    assert_eq!(raw.status, 200);
    let json: serde_json::Value = serde_json::from_slice(&raw.body).unwrap();
    let layer = json["layers"][0]["digest"].as_str().unwrap().to_string();
    let config = json["config"]["digest"].as_str().unwrap().to_string();
    (s, manifest, layer, config)
}

const OCI_MANIFEST: &str = "Accept: application/vnd.oci.image.manifest.v1+json";

/// `path` asked of the registry directly, with alice's pull token.
fn direct(s: &Setup, path: &str, extra: &[&str]) -> CurlResult {
    let token = s.token("alice", "repository:alice/app:pull");
    let bearer = format!("Authorization: Bearer {token}");
    let url = format!("http://{}{path}", s.registry.addr());
    let mut args = vec!["-H", bearer.as_str()];
    args.extend_from_slice(extra);
    args.push(&url);
    curl(&args)
}

/// The status and the compared headers, lowercased names (a multipart boundary, random
/// per answer, left out).
fn shape(answer: &CurlResult) -> (u16, Vec<(String, String)>) {
    let headers = COMPARED
        .iter()
        .filter_map(|name| {
            let value = answer.header(name)?;
            let value = value.split("; boundary=").next().unwrap_or(value);
            Some((name.to_string(), value.to_string()))
        })
        .collect();
    (answer.status, headers)
}

#[test]
fn each_endpoint_answers_as_the_registry_does_before_and_after_caching() {
    let (s, manifest, layer, config) = pushed();
    let mut checks = Checks::new();
    let compare = |what: &str, path: &str| {
        let registry = shape(&direct(&s, path, &[]));
        let edge = shape(&s.get("alice/app", path, &[]));
        assert_eq!(edge, registry, "{what}: {path}");
        registry.0
    };
    let blobs_manifest = format!("/v2/alice/app/blobs/{manifest}");
    let manifests_config = format!("/v2/alice/app/manifests/{config}");
    checks.run("before caching", || {
        compare("a manifest on /blobs/", &blobs_manifest);
        compare("a config blob on /manifests/", &manifests_config);
    });
    // Each fetched on its own endpoint twice: filled, then answered from the cache.
    for _ in 0..2 {
        let path = format!("/v2/alice/app/manifests/{manifest}");
        let m = s.get("alice/app", &path, &["-H", OCI_MANIFEST]);
        assert_eq!(m.status, 200, "manifest by digest");
        let c = s.get("alice/app", &format!("/v2/alice/app/blobs/{config}"), &[]);
        assert_eq!(c.status, 200, "config blob");
    }
    wait_for(
        "both served from the cache",
        Duration::from_secs(10),
        || (s.metric("hit") >= 2.0).then_some(()),
    );
    let hits = s.metric("hit");
    checks.run("after caching, the other endpoint", || {
        let status = compare("a cached manifest on /blobs/", &blobs_manifest);
        assert_ne!(status, 200, "registry 2.8 has no such blob");
        compare("a cached config blob on /manifests/", &manifests_config);
        assert_eq!(s.metric("hit"), hits, "neither came from the cache");
    });
    checks.run("after caching, the endpoint it was cached from", || {
        for path in [
            format!("/v2/alice/app/manifests/{manifest}"),
            format!("/v2/alice/app/blobs/{config}"),
            format!("/v2/alice/app/blobs/{layer}"),
        ] {
            let registry = shape(&direct(&s, &path, &["-H", OCI_MANIFEST]));
            let edge = shape(&s.get("alice/app", &path, &["-H", OCI_MANIFEST]));
            assert_eq!(edge, registry, "{path}");
        }
    });
    checks.finish();
}

#[test]
fn conditional_and_range_requests_answer_as_the_registry_does() {
    let (s, manifest, layer, _) = pushed();
    let blob = format!("/v2/alice/app/blobs/{layer}");
    let manifest_path = format!("/v2/alice/app/manifests/{manifest}");
    let accept = OCI_MANIFEST;
    for path in [&blob, &manifest_path] {
        for _ in 0..2 {
            assert_eq!(s.get("alice/app", path, &["-H", accept]).status, 200);
        }
    }
    wait_for("cached", Duration::from_secs(10), || {
        (s.metric("hit") >= 2.0).then_some(())
    });
    let strong = format!("\"{layer}\"");
    let blob_rows: Vec<(&str, Vec<String>)> = vec![
        ("a range", vec!["Range: bytes=10-19".into()]),
        ("a suffix range", vec!["Range: bytes=-7".into()]),
        (
            "If-Range matching",
            vec!["Range: bytes=10-19".into(), format!("If-Range: {strong}")],
        ),
        (
            "If-Range another tag",
            vec!["Range: bytes=10-19".into(), "If-Range: \"sha256:0\"".into()],
        ),
        (
            "If-Range weak",
            vec!["Range: bytes=10-19".into(), format!("If-Range: W/{strong}")],
        ),
        (
            "If-Range a date",
            vec![
                "Range: bytes=10-19".into(),
                "If-Range: Sat, 01 Jan 2000 00:00:00 GMT".into(),
            ],
        ),
        (
            "If-None-Match a list with the weak tag",
            vec![format!("If-None-Match: \"x\", W/{strong}")],
        ),
        ("If-None-Match *", vec!["If-None-Match: *".into()]),
        (
            "If-None-Match another tag",
            vec!["If-None-Match: \"x\"".into()],
        ),
        (
            "If-Modified-Since",
            vec!["If-Modified-Since: Sat, 01 Jan 2100 00:00:00 GMT".into()],
        ),
        ("If-Match another tag", vec!["If-Match: \"x\"".into()]),
        // Go reads entity-tag lists without commas, only the first header line, and bytes.
        (
            "If-None-Match without commas",
            vec![format!("If-None-Match: \"x\" {strong}")],
        ),
        (
            "two If-None-Match lines",
            vec![
                "If-None-Match: \"x\"".into(),
                format!("If-None-Match: {strong}"),
            ],
        ),
        (
            "If-Range with a non-ASCII tag",
            vec!["Range: bytes=0-9".into(), "If-Range: \"xé\"".into()],
        ),
        (
            "If-Range with the tag and more",
            vec![
                "Range: bytes=0-9".into(),
                format!("If-Range: {strong} more"),
            ],
        ),
        ("two ranges", vec!["Range: bytes=0-1,5-6".into()]),
        (
            "an unsatisfiable range",
            vec!["Range: bytes=99999999-".into()],
        ),
    ];
    let manifest_rows: Vec<(&str, Vec<String>)> = vec![
        (
            "If-None-Match quoted",
            vec![format!("If-None-Match: \"{manifest}\"")],
        ),
        (
            "If-None-Match bare",
            vec![format!("If-None-Match: {manifest}")],
        ),
        ("If-None-Match *", vec!["If-None-Match: *".into()]),
        ("a range", vec!["Range: bytes=0-9".into()]),
    ];
    // Several ranges get Go's multipart body: the registry writes it.
    let from_registry = ["two ranges"];
    let mut checks = Checks::new();
    for (path, rows) in [(&blob, blob_rows), (&manifest_path, manifest_rows)] {
        for (what, headers) in rows {
            checks.run(&format!("{what} on {path}"), || {
                let mut args = vec!["-H", accept];
                for h in &headers {
                    args.extend(["-H", h.as_str()]);
                }
                let registry = direct(&s, path, &args);
                let hits = s.metric("hit");
                let edge = s.get("alice/app", path, &args);
                let cached = s.metric("hit") > hits;
                assert_eq!(
                    cached,
                    !from_registry.contains(&what),
                    "answered from the cache"
                );
                if registry.status == 416 || registry.status == 412 {
                    // Go keeps distribution's Content-Length of the whole blob over its
                    // short (or empty) body, and the connection ends early; the edge's is
                    // exact. Everything else is the registry's.
                    let framed = |a: &CurlResult| {
                        let (status, mut headers) = shape(a);
                        headers.retain(|(name, _)| name != "content-length");
                        (status, headers)
                    };
                    assert_eq!(framed(&edge), framed(&registry));
                    assert_eq!(edge.body, registry.body, "body");
                    return;
                }
                assert_eq!(shape(&edge), shape(&registry));
                if registry
                    .header("content-type")
                    .is_some_and(|t| t.contains("multipart"))
                {
                    return; // boundaries differ
                }
                assert_eq!(edge.body, registry.body, "body");
            });
        }
    }
    checks.finish();
}

#[test]
fn a_pull_by_tag_warms_the_pull_by_digest() {
    let (mut s, manifest, _, _) = pushed();
    let fills = s.metric("fill");
    assert_eq!(fills, 0.0, "nothing pulled through the edge yet");
    s.pull("alice/app:v1", "by-tag").expect("pull by tag");
    // Manifest (from the by-tag answer), config and layer.
    let filled = wait_for_fills(&s, fills + 3.0);
    assert!(
        filled,
        "fills: {} → {}\n{}",
        fills,
        s.metric("fill"),
        s.edge.log_text()
    );
    s.registry.stop();
    let pulled = s.pull(&format!("alice/app@{manifest}"), "by-digest");
    assert!(
        pulled.is_ok(),
        "pull by digest with the registry stopped: {pulled:?}"
    );
}

/// Whether the fill count reaches `count` within 30 s.
fn wait_for_fills(s: &Setup, count: f64) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if s.metric("fill") >= count {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{:x}", sha2::Sha256::digest(bytes))
}

#[test]
fn a_file_is_verified_once_and_a_changed_one_is_never_answered_whole() {
    // Over 1 MiB: never kept in memory, so every answer reads the file.
    let (mut s, _, layer, _) = pushed_with_layer(2 << 20);
    let path = format!("/v2/alice/app/blobs/{layer}");
    let get = |s: &Setup| s.get("alice/app", &path, &[]);
    assert_eq!(get(&s).status, 200, "the cold pull");
    assert!(wait_for_fills(&s, 1.0), "the layer was not filled");
    let mut checks = Checks::new();
    checks.run("an unchanged file is read without hashing", || {
        for _ in 0..3 {
            let answer = get(&s);
            assert_eq!((answer.status, sha256(&answer.body)), (200, layer.clone()));
        }
        assert_eq!(s.metric("hit"), 3.0);
        assert_eq!(s.metric("verify"), 0.0, "hashed when filled, then trusted");
    });
    s.restart_edge(&cache_size("1GiB", ""));
    checks.run(
        "after a start, the first read verifies and the next trust it",
        || {
            for _ in 0..2 {
                let answer = get(&s);
                assert_eq!((answer.status, sha256(&answer.body)), (200, layer.clone()));
            }
            assert_eq!((s.metric("hit"), s.metric("verify")), (2.0, 1.0));
        },
    );
    checks.run(
        "a byte changed in place, mtime restored, is never answered whole",
        || {
            let file = content_file(&s.dir.path().join("cache"), &layer);
            let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
            let mut bytes = std::fs::read(&file).unwrap();
            bytes[1000] ^= 0xff;
            // In place: same inode, same size.
            let mut f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
            std::io::Write::write_all(&mut f, &bytes).unwrap();
            drop(f);
            let since = mtime.duration_since(std::time::UNIX_EPOCH).unwrap();
            let stamp = format!("@{}.{:09}", since.as_secs(), since.subsec_nanos());
            let touched = std::process::Command::new("touch")
                .args(["-d", &stamp])
                .arg(&file)
                .status()
                .unwrap();
            assert!(touched.success());
            assert_eq!(std::fs::metadata(&file).unwrap().modified().unwrap(), mtime);
            let answer = get(&s);
            assert_ne!(
                sha256(&answer.body),
                sha256(&bytes),
                "the changed file was sent whole"
            );
            assert!(
                answer.body.len() < bytes.len(),
                "cut short: {} bytes",
                answer.body.len()
            );
            assert_eq!((s.metric("verify"), s.metric("mismatch")), (2.0, 1.0));
            // Dropped: the next pull is the registry's, and right.
            let again = get(&s);
            assert_eq!((again.status, sha256(&again.body)), (200, layer.clone()));
        },
    );
    checks.finish();
}
