//! End to end through the real binary to the real registry: skopeo push/pull of an
//! OCI image, a 1 GiB chunked upload, HTTP/2, upload Location URLs and body limits.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;

use common::{curl, curl_with_stdin, digest, edge_with_node, push_blob, Checks};
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut bytes = vec![0; len];
    rng.fill_bytes(&mut bytes);
    bytes
}

/// Writes an OCI image layout with gzip tar layers of the given sizes; returns layer digests.
fn build_oci_layout(dir: &Path, layer_sizes: &[usize]) -> Vec<String> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let write_blob = |bytes: &[u8]| -> (String, usize) {
        let d = digest(bytes);
        std::fs::write(blobs.join(d.trim_start_matches("sha256:")), bytes).unwrap();
        (d, bytes.len())
    };
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, size) in layer_sizes.iter().enumerate() {
        let mut tar = tar::Builder::new(Vec::new());
        let content = random_bytes(*size, i as u64 + 1);
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, format!("layer{i}.bin"), content.as_slice())
            .unwrap();
        let tar = tar.into_inner().unwrap();
        diff_ids.push(digest(&tar));
        // Random data does not compress: store it, gzip-framed, to keep the test fast.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
        gz.write_all(&tar).unwrap();
        layers.push(write_blob(&gz.finish().unwrap()));
    }
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "config": {}
    });
    let (config_digest, config_size) = write_blob(&serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size },
        "layers": layers.iter().map(|(d, s)| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": s
        })).collect::<Vec<_>>()
    });
    let (manifest_digest, manifest_size) = write_blob(&serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest_size,
            "annotations": { "org.opencontainers.image.ref.name": "v1" }
        }]
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    layers.into_iter().map(|(d, _)| d).collect()
}

fn skopeo(args: &[&str]) {
    let out = Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .expect("skopeo is installed");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn skopeo_push_and_pull_through_the_edge() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, registry, edge) = edge_with_node(dir.path(), "");
    let layout = dir.path().join("image");
    let layers = build_oci_layout(&layout, &[100 * 1024 * 1024 + 17, 3 * 1024 * 1024, 4096]);
    let target = format!("docker://127.0.0.1:{}/team/app:v1", edge.https_port);
    let cert_dir = certs.ca_dir.to_str().unwrap();
    let source = format!("oci:{}:v1", layout.display());
    let pushed = common::skopeo_push(cert_dir, None, &source, &target, &[]);
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );

    // The registry node really stores every layer (asked directly, not through the edge).
    for layer in &layers {
        assert!(
            registry.has_blob("team/app", layer),
            "layer {layer} not stored"
        );
    }

    let pulled = dir.path().join("pulled");
    skopeo(&[
        "copy",
        "--src-cert-dir",
        cert_dir,
        &target,
        &format!("oci:{}:v1", pulled.display()),
    ]);
    for layer in &layers {
        let path = pulled
            .join("blobs/sha256")
            .join(layer.trim_start_matches("sha256:"));
        let bytes = std::fs::read(&path).unwrap_or_else(|_| panic!("pulled layout lacks {layer}"));
        assert_eq!(&digest(&bytes), layer, "pulled bytes differ");
    }
    assert!(
        edge.log_text().contains("PATCH") || edge.log_text().contains("PUT"),
        "access log records uploads"
    );
    assert!(
        !edge.log_text().contains("_state="),
        "query strings are not logged"
    );
}

#[test]
fn one_gib_chunked_upload_streams_to_the_registry() {
    const SIZE: usize = 1 << 30;
    let dir = tempfile::tempdir().unwrap();
    let (certs, registry, edge) = edge_with_node(dir.path(), "");
    let ca = certs.ca_dir.join("ca.crt");
    let ca = ca.to_str().unwrap();

    let location = common::start_upload(&edge.url("/v2/big/blob/blobs/uploads/"), ca, &[]);
    assert!(
        location.starts_with(&edge.url("/v2/big/blob/blobs/uploads/")),
        "Location points back at the edge: {location}"
    );

    // PATCH with Transfer-Encoding: chunked (curl -T - from a pipe), hashing as we send.
    let mut hasher = Sha256::new();
    let mut feed = |pipe: &mut dyn Write| {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(42);
        let mut chunk = vec![0u8; 1 << 20];
        for _ in 0..SIZE / chunk.len() {
            rng.fill_bytes(&mut chunk);
            hasher.update(&chunk);
            pipe.write_all(&chunk).unwrap();
        }
    };
    let patch = curl_with_stdin(
        &[
            "--cacert",
            ca,
            "-X",
            "PATCH",
            "-T",
            "-",
            "-H",
            "Content-Type: application/octet-stream",
            &location,
        ],
        Some(&mut feed),
    );
    assert_eq!(
        patch.status,
        202,
        "PATCH: {} {}",
        patch.stderr,
        String::from_utf8_lossy(&patch.body)
    );
    assert_eq!(
        patch.header("range"),
        Some(format!("0-{}", SIZE - 1).as_str())
    );
    let blob_digest = format!("sha256:{}", hex::encode(hasher.finalize()));

    let next = patch.header("location").unwrap().to_string();
    let put = curl(&[
        "--cacert",
        ca,
        "-X",
        "PUT",
        &format!("{next}&digest={blob_digest}"),
    ]);
    assert_eq!(
        put.status,
        201,
        "PUT: {}",
        String::from_utf8_lossy(&put.body)
    );
    assert_eq!(
        put.header("docker-content-digest"),
        Some(blob_digest.as_str())
    );

    // The registry verified and stored the digest; it reports the full size.
    let head = curl(&[
        "-I",
        &format!("http://{}/v2/big/blob/blobs/{blob_digest}", registry.addr()),
    ]);
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(SIZE.to_string().as_str())
    );
}

#[test]
fn http2_push_and_pull() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, registry, edge) = edge_with_node(dir.path(), "");
    let ca = certs.ca_dir.join("ca.crt");
    let bytes = random_bytes(5 * 1024 * 1024 + 3, 7);
    let blob = push_blob(
        &format!("https://127.0.0.1:{}", edge.https_port),
        &ca,
        "h2/repo",
        &bytes,
        &["--http2"],
    );
    assert!(registry.has_blob("h2/repo", &blob));

    let ca = ca.to_str().unwrap();
    let mut checks = Checks::new();
    checks.run("the pull over HTTP/2", || {
        let got = curl(&[
            "--http2",
            "--cacert",
            ca,
            &edge.url(&format!("/v2/h2/repo/blobs/{blob}")),
        ]);
        assert_eq!(got.status, 200);
        assert_eq!(got.http_version, "2", "the pull used HTTP/2");
        assert_eq!(digest(&got.body), blob);
    });

    // Chunked h2 upload (no Content-Length) ending with an empty DATA frame, then a second
    // request on the pooled upstream connection must still work (Pingora #935 workaround).
    checks.run("a chunked h2 upload, then the pooled connection", || {
        let location =
            common::start_upload(&edge.url("/v2/h2/chunked/blobs/uploads/"), ca, &["--http2"]);
        let payload = random_bytes(3 * 1024 * 1024, 9);
        let mut feed = |pipe: &mut dyn Write| pipe.write_all(&payload).unwrap();
        let patch = curl_with_stdin(
            &[
                "--http2", "--cacert", ca, "-X", "PATCH", "-T", "-", &location,
            ],
            Some(&mut feed),
        );
        assert_eq!(patch.status, 202, "{}", patch.stderr);
        assert_eq!(patch.http_version, "2");
        let next = patch.header("location").unwrap().to_string();
        let put = curl(&[
            "--http2",
            "--cacert",
            ca,
            "-X",
            "PUT",
            &format!("{next}&digest={}", digest(&payload)),
        ]);
        assert_eq!(put.status, 201, "{}", String::from_utf8_lossy(&put.body));
        for _ in 0..3 {
            assert_eq!(
                curl(&[
                    "--http2",
                    "--cacert",
                    ca,
                    "-I",
                    &edge.url(&format!("/v2/h2/repo/blobs/{blob}"))
                ])
                .status,
                200
            );
        }
    });
    checks.finish();
}

#[test]
fn upload_location_ignores_spoofed_forwarded_host() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, _registry, edge) = edge_with_node(dir.path(), "");
    let ca = certs.ca_dir.join("ca.crt");
    let location = common::start_upload(
        &edge.url("/v2/loc/blobs/uploads/"),
        ca.to_str().unwrap(),
        &[
            "-H",
            "X-Forwarded-Host: evil.example",
            "-H",
            "X-Forwarded-Proto: http",
            "-H",
            "Forwarded: host=evil.example;proto=http",
        ],
    );
    assert!(
        location.starts_with(&format!(
            "https://127.0.0.1:{}/v2/loc/blobs/uploads/",
            edge.https_port
        )),
        "{location}"
    );
    assert!(
        location.contains("_state="),
        "upload state kept: {location}"
    );
}

#[test]
fn max_body_size_answers_413_json() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, _registry, edge) =
        edge_with_node(dir.path(), "limits:\n  max_body_size: 1048576\n");
    let ca = certs.ca_dir.join("ca.crt");
    let ca = ca.to_str().unwrap();
    let location = common::start_upload(&edge.url("/v2/limit/blobs/uploads/"), ca, &[]);

    let mut checks = Checks::new();
    // Declared too large: refused before anything is streamed.
    checks.run("declared too large", || {
        let big = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(big.path(), random_bytes(2 * 1024 * 1024, 3)).unwrap();
        let data = format!("@{}", big.path().display());
        let declared = curl(&[
            "--cacert",
            ca,
            "-X",
            "PATCH",
            "--data-binary",
            &data,
            &location,
        ]);
        assert_eq!(declared.status, 413, "{}", declared.stderr);
        assert_eq!(declared.header("content-type"), Some("application/json"));
        assert_eq!(
            declared.header("docker-distribution-api-version"),
            Some("registry/2.0")
        );
        assert_eq!(declared.json()["errors"][0]["code"], "SIZE_INVALID");
    });

    // Chunked, so the size shows only while streaming.
    checks.run("too large while streaming", || {
        let payload = random_bytes(2 * 1024 * 1024, 4);
        let mut feed = |pipe: &mut dyn Write| {
            let _ = pipe.write_all(&payload);
        };
        let streamed = curl_with_stdin(
            &["--cacert", ca, "-X", "PATCH", "-T", "-", &location],
            Some(&mut feed),
        );
        assert_eq!(streamed.status, 413, "{}", streamed.stderr);
        assert_eq!(streamed.json()["errors"][0]["code"], "SIZE_INVALID");
    });

    // Small bodies pass (in a fresh session: the streamed one was cut mid-PATCH).
    checks.run("small bodies pass", || {
        let location = common::start_upload(&edge.url("/v2/limit/blobs/uploads/"), ca, &[]);
        let small = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(small.path(), b"tiny").unwrap();
        let ok = curl(&[
            "--cacert",
            ca,
            "-X",
            "PATCH",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &format!("@{}", small.path().display()),
            &location,
        ]);
        assert_eq!(ok.status, 202, "{}", String::from_utf8_lossy(&ok.body));
    });
    checks.finish();
}
