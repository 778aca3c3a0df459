//! Real clients: curl (status, headers, body of one request), skopeo, and registry API
//! steps built on curl (upload sessions, blob pushes, a slow PATCH) plus a one-layer OCI
//! image layout to push.

use std::path::Path;
use std::process::{Command, Stdio};

/// What curl saw: status (0 = no HTTP answer), the last header block, body, HTTP version.
pub struct CurlResult {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub http_version: String,
    pub stderr: String,
}

impl CurlResult {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text, for assertion messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Writes a request body into curl's standard input.
pub type StdinFeeder<'a> = dyn FnMut(&mut dyn std::io::Write) + 'a;

/// Runs curl with `args` (plus silent mode and output capture).
pub fn curl(args: &[&str]) -> CurlResult {
    curl_with_stdin(args, None)
}

pub fn curl_with_stdin(args: &[&str], stdin: Option<&mut StdinFeeder>) -> CurlResult {
    let scratch = tempfile::tempdir().unwrap();
    let headers_path = scratch.path().join("headers");
    let body_path = scratch.path().join("body");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "600", "-D"])
        .arg(&headers_path)
        .arg("-o")
        .arg(&body_path)
        .args(["-w", "%{http_code} %{http_version}"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().expect("curl is installed");
    if let Some(feed) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        feed(&mut pipe);
    }
    let out = child.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&out.stdout).to_string();
    let mut parts = summary.split_whitespace();
    let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let http_version = parts.next().unwrap_or("").to_string();
    let raw_headers = std::fs::read_to_string(&headers_path).unwrap_or_default();
    // Keep only the last block (after any 100 Continue / redirects).
    let last_block = raw_headers
        .trim_end()
        .rsplit("\r\n\r\n")
        .next()
        .unwrap_or("")
        .to_string();
    let headers = last_block
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    CurlResult {
        status,
        headers,
        body: std::fs::read(&body_path).unwrap_or_default(),
        http_version,
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

/// Runs skopeo (with `--insecure-policy`) and returns what it did.
pub fn skopeo(args: &[&str]) -> std::process::Output {
    Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .expect("skopeo is installed")
}

/// `skopeo inspect --raw` of `image` (`docker://…`) with `creds`, trusting the CA in
/// `cert_dir`: the manifest's bytes, as the registry stores them (panics on failure).
pub fn skopeo_raw_manifest(cert_dir: &str, creds: &str, image: &str) -> Vec<u8> {
    let out = skopeo(&[
        "inspect",
        "--raw",
        "--cert-dir",
        cert_dir,
        "--creds",
        creds,
        image,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `skopeo copy` of `source` to `target` with `creds` (`user:password`; `None`: no
/// credentials), trusting the CA in `cert_dir`, with `extra` skopeo arguments
/// (`--digestfile`, `--retry-times`): what pushing an image through the edge takes.
pub fn skopeo_push(
    cert_dir: &str,
    creds: Option<&str>,
    source: &str,
    target: &str,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec!["copy", "--dest-cert-dir", cert_dir];
    match creds {
        Some(creds) => args.extend(["--dest-creds", creds]),
        None => args.push("--dest-no-creds"),
    }
    args.extend_from_slice(extra);
    args.extend([source, target]);
    skopeo(&args)
}

/// sha256 digest string of bytes.
pub fn digest(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Starts an upload session at `url` (`…/blobs/uploads/`): asserts 202, returns the Location.
pub fn start_upload(url: &str, ca: &str, extra: &[&str]) -> String {
    let mut args = vec!["--cacert", ca, "-X", "POST"];
    args.extend_from_slice(extra);
    args.push(url);
    let started = curl(&args);
    assert_eq!(
        started.status,
        202,
        "upload start: {}",
        String::from_utf8_lossy(&started.body)
    );
    started.header("location").expect("Location").to_string()
}

/// Pushes `bytes` as a blob with POST + monolithic PUT through `base` (an https URL root).
/// Returns the digest.
pub fn push_blob(base: &str, ca: &Path, repo: &str, bytes: &[u8], extra: &[&str]) -> String {
    try_push_blob(base, ca, repo, bytes, extra).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`push_blob`], reporting a refused step instead of panicking.
pub fn try_push_blob(
    base: &str,
    ca: &Path,
    repo: &str,
    bytes: &[u8],
    extra: &[&str],
) -> Result<String, String> {
    let digest = digest(bytes);
    let ca = ca.to_str().unwrap();
    let mut args = vec!["--cacert", ca, "-X", "POST"];
    args.extend_from_slice(extra);
    let start_url = format!("{base}/v2/{repo}/blobs/uploads/");
    args.push(&start_url);
    let started = curl(&args);
    if started.status != 202 {
        return Err(format!(
            "upload start {}: {}{}",
            started.status,
            String::from_utf8_lossy(&started.body),
            started.stderr.trim()
        ));
    }
    let location = started
        .header("location")
        .ok_or("upload start without Location")?
        .to_string();
    let sep = if location.contains('?') { '&' } else { '?' };
    let put_url = format!("{location}{sep}digest={digest}");
    let scratch = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(scratch.path(), bytes).unwrap();
    let data_arg = format!("@{}", scratch.path().display());
    let mut args = vec![
        "--cacert",
        ca,
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &data_arg,
    ];
    args.extend_from_slice(extra);
    args.push(&put_url);
    let put = curl(&args);
    if put.status != 201 {
        return Err(format!(
            "upload PUT {}: {}{}",
            put.status,
            String::from_utf8_lossy(&put.body),
            put.stderr.trim()
        ));
    }
    Ok(digest)
}

/// A one-layer OCI image layout in `dir`; returns the skopeo source `oci:DIR:v1`.
pub fn tiny_oci_layout(dir: &Path) -> String {
    use sha2::{Digest, Sha256};
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let hex = hex::encode(Sha256::digest(bytes));
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(5);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "hello", &b"hello"[..])
        .unwrap();
    let tar = tar.into_inner().unwrap();
    let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    let (layer, layer_size) = put(&gz.finish().unwrap());
    let config = serde_json::json!({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[diff_id]},"config":{}});
    let (config_digest, config_size) = put(&serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":config_digest,"size":config_size},
        "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":layer,"size":layer_size}]});
    let (manifest_digest, manifest_size) = put(&serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json",
        "digest":manifest_digest,"size":manifest_size,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    format!("oci:{}:v1", dir.display())
}

/// PATCHes `len` bytes to `location` at 1 MiB/s on another thread, so the upload is still
/// streaming while the test does something else.
pub fn spawn_slow_patch(
    dir: &Path,
    ca: &str,
    location: String,
    len: usize,
) -> std::thread::JoinHandle<CurlResult> {
    let body = dir.join(format!("slow-body-{len}"));
    std::fs::write(&body, vec![7u8; len]).unwrap();
    let data = format!("@{}", body.display());
    let ca = ca.to_string();
    std::thread::spawn(move || {
        curl(&[
            "--cacert",
            &ca,
            "--http1.1",
            "--limit-rate",
            "1M",
            "-X",
            "PATCH",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &data,
            &location,
        ])
    })
}
