//! Shared test harness: the real `distribution` registry, the real `registry-edge`
//! binary and real clients (curl, skopeo), all on 127.0.0.1 ephemeral ports.
//! Every process is killed when its handle drops; readiness is polled with a deadline.
#![allow(dead_code)]

pub mod auth;
pub mod echo;
pub mod h2client;
pub mod pebble;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
pub const EDGE_BIN: &str = env!("CARGO_BIN_EXE_registry-edge");

/// Sockets that keep the ports [`free_port`] handed out reserved until the test binary exits.
static RESERVED_PORTS: Mutex<Vec<socket2::Socket>> = Mutex::new(Vec::new());

/// An ephemeral port chosen by the OS and kept reserved for the rest of this test binary.
///
/// A port that is merely free a moment ago can be handed to someone else (another test's
/// port-0 bind, or an outgoing connection) before the process meant to listen on it binds,
/// and that process then fails to start. So the port stays bound here, with `SO_REUSEADDR`
/// and never listening: the kernel hands it to no one else, while the edge, the registry,
/// Redis and pebble (all of which set `SO_REUSEADDR`) can still listen on it, also after a
/// restart.
pub fn free_port() -> u16 {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_reuse_address(true).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    RESERVED_PORTS.lock().unwrap().push(socket);
    port
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Dev certificates made by the library's `gen-certs`, plus a folder holding only the CA
/// (what skopeo's `--*-cert-dir` wants).
pub struct Certs {
    pub tls_crt: PathBuf,
    pub tls_key: PathBuf,
    pub ca_dir: PathBuf,
}

pub fn make_certs(dir: &Path) -> Certs {
    let certs_dir = dir.join("certs");
    registry_edge::certgen::generate(
        &certs_dir,
        &["registry.test".to_string(), "localhost".to_string()],
    )
    .unwrap();
    let ca_dir = dir.join("ca");
    std::fs::create_dir_all(&ca_dir).unwrap();
    std::fs::copy(certs_dir.join("tls.crt"), ca_dir.join("ca.crt")).unwrap();
    Certs {
        tls_crt: certs_dir.join("tls.crt"),
        tls_key: certs_dir.join("tls.key"),
        ca_dir,
    }
}

/// A child process killed (and reaped) on drop.
pub struct Proc {
    child: Option<Child>,
}

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Proc {
        Proc {
            child: Some(
                cmd.spawn()
                    .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}")),
            ),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Polls `ready` every 50 ms until it holds, while this process keeps running.
    /// `Err` says why not (it exited, or `timeout` passed); callers add the process's log.
    pub fn wait_started(
        &mut self,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while !ready() {
            if !self.is_running() {
                return Err("exited at start".to_string());
            }
            if Instant::now() >= deadline {
                return Err(format!("not ready within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The real CNCF registry (Debian's docker-registry) on a loopback port with its own storage.
pub struct Registry {
    pub port: u16,
    pub root: PathBuf,
    config: PathBuf,
    log: PathBuf,
    proc: Proc,
}

impl Registry {
    pub fn start(dir: &Path, name: &str) -> Registry {
        Self::start_with(dir, name, "")
    }

    /// Like [`Registry::start`] with extra top-level YAML (for example an `auth:` block).
    pub fn start_with(dir: &Path, name: &str, extra: &str) -> Registry {
        let port = free_port();
        let root = dir.join(format!("{name}-data"));
        let config = dir.join(format!("{name}.yml"));
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{ level: warn, accesslog: {{ disabled: true }} }}\n\
                 storage:\n  filesystem: {{ rootdirectory: {} }}\n  delete: {{ enabled: true }}\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: shared-test-secret\n{extra}",
                root.display()
            ),
        )
        .unwrap();
        let log = dir.join(format!("{name}.log"));
        let proc = Self::spawn(&config, &log);
        let mut registry = Registry {
            port,
            root,
            config,
            log,
            proc,
        };
        registry.wait_ready();
        registry
    }

    fn spawn(config: &Path, log: &Path) -> Proc {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        Proc::spawn(
            Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(config)
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out),
        )
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn wait_ready(&mut self) {
        let url = format!("http://{}/v2/", self.addr());
        // 401 is ready too: the registry asks for a token when auth is on.
        let ready = || matches!(curl(&[url.as_str()]).status, 200 | 401);
        if let Err(why) = self.proc.wait_started(Duration::from_secs(30), ready) {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            panic!("the registry did not answer /v2/: {why}; its log:\n{log}");
        }
    }

    pub fn stop(&mut self) {
        self.proc.kill();
    }

    /// Starts again on the same port and storage.
    pub fn restart(&mut self) {
        self.proc = Self::spawn(&self.config, &self.log);
        self.wait_ready();
    }

    /// Bytes this node has received for in-progress uploads of `repo`.
    pub fn upload_bytes_stored(&self, repo: &str) -> u64 {
        let uploads = self
            .root
            .join("docker/registry/v2/repositories")
            .join(repo)
            .join("_uploads");
        let Ok(entries) = std::fs::read_dir(uploads) else {
            return 0;
        };
        entries
            .flatten()
            .filter_map(|e| std::fs::metadata(e.path().join("data")).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Whether this node stores a blob (asked directly, not through the edge).
    pub fn has_blob(&self, repo: &str, digest: &str) -> bool {
        let url = format!("http://{}/v2/{repo}/blobs/{digest}", self.addr());
        curl(&["-I", url.as_str()]).status == 200
    }
}

/// The real registry-edge binary with a generated config.
pub struct Edge {
    pub https_port: u16,
    pub http_port: u16,
    pub config: PathBuf,
    pub log: PathBuf,
    pub proc: Proc,
}

impl Edge {
    /// `extra` is appended to a config with listeners, the dev certificate and `nodes`.
    /// It may override `upstream` wholesale by passing `upstream_yaml`.
    pub fn start(dir: &Path, certs: &Certs, upstream_yaml: &str, extra: &str) -> Edge {
        Self::start_with(dir, certs, "  shutdown_grace: 1s\n", upstream_yaml, extra)
    }

    /// Like [`Edge::start`], with extra lines inside `server:` (indented by the caller;
    /// [`Edge::start`] passes `shutdown_grace: 1s`).
    pub fn start_with(
        dir: &Path,
        certs: &Certs,
        server_extra: &str,
        upstream_yaml: &str,
        extra: &str,
    ) -> Edge {
        let mut edge = Self::start_unchecked(dir, certs, server_extra, upstream_yaml, extra);
        let url = edge.url("/v2/");
        let ca = certs.ca_dir.join("ca.crt");
        let ready = || curl(&["--cacert", ca.to_str().unwrap(), url.as_str()]).status != 0;
        if let Err(why) = edge.proc.wait_started(Duration::from_secs(30), ready) {
            panic!(
                "the edge did not accept TLS: {why}; its log:\n{}",
                edge.log_text()
            );
        }
        edge
    }

    /// Like [`Edge::start_with`] without waiting for it to answer a plain TLS request
    /// (for listeners that expect something else first).
    pub fn start_unchecked(
        dir: &Path,
        certs: &Certs,
        server_extra: &str,
        upstream_yaml: &str,
        extra: &str,
    ) -> Edge {
        let https_port = free_port();
        let http_port = free_port();
        let yaml = format!(
            "server:\n  https_listen: [\"127.0.0.1:{https_port}\"]\n  http_listen: [\"127.0.0.1:{http_port}\"]\n  threads: 2\n{server_extra}\
             tls:\n  certificates:\n    - cert: {}\n      key: {}\n\
             {upstream_yaml}\n{extra}\n",
            certs.tls_crt.display(),
            certs.tls_key.display()
        );
        Self::start_config(dir, https_port, http_port, &yaml)
    }

    /// Starts the edge with a whole config of the caller's (whose listeners are on these ports).
    pub fn start_config(dir: &Path, https_port: u16, http_port: u16, yaml: &str) -> Edge {
        let config = dir.join(format!("edge-{https_port}.yaml"));
        std::fs::write(&config, yaml).unwrap();
        let log = dir.join(format!("edge-{https_port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let proc = Proc::spawn(
            Command::new(EDGE_BIN)
                .args(["run", "--config"])
                .arg(&config)
                .env("REGISTRY_EDGE_LOG", "info")
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out),
        );
        Edge {
            https_port,
            http_port,
            config,
            log,
            proc,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.https_port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Dev certificates, one real registry node and an edge in front of it; `extra` is
/// appended to the edge's config.
pub fn edge_with_node(dir: &Path, extra: &str) -> (Certs, Registry, Edge) {
    let certs = make_certs(dir);
    let registry = Registry::start(dir, "node");
    let edge = Edge::start(
        dir,
        &certs,
        &upstream_yaml(&[registry.addr()], "repository_hash"),
        extra,
    );
    (certs, registry, edge)
}

/// `registry-edge reload --pid-file`, asserting it succeeded.
pub fn reload(pid_file: &Path) {
    let out = Command::new(EDGE_BIN)
        .args(["reload", "--pid-file"])
        .arg(pid_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "reload: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `upstream:` YAML for the given nodes with a fast health check.
pub fn upstream_yaml(nodes: &[String], balance: &str) -> String {
    let list = nodes
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "upstream:\n  nodes: [{list}]\n  balance: {balance}\n  connect_timeout: 1s\n  read_timeout: 60s\n  \
         health_check: {{ path: /v2/, interval: 300ms }}\n"
    )
}

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

/// Runs the openssl CLI (tests make RSA and SEC1 keys with it), failing on errors.
pub fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl CLI is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed certificate for `name` (CN and DNS SAN) with a key made by the openssl
/// subcommand `keygen` (e.g. `["genrsa", "2048"]`); returns (certificate, key) paths.
pub fn openssl_cert(dir: &Path, name: &str, keygen: &[&str]) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.key"));
    let crt = dir.join(format!("{name}.crt"));
    // `-out` right after the subcommand: genrsa wants its bit count last.
    let mut args = vec![keygen[0], "-out", key.to_str().unwrap()];
    args.extend_from_slice(&keygen[1..]);
    openssl(&args);
    openssl(&[
        "req",
        "-x509",
        "-key",
        key.to_str().unwrap(),
        "-out",
        crt.to_str().unwrap(),
        "-days",
        "2",
        "-subj",
        &format!("/CN={name}"),
        "-addext",
        &format!("subjectAltName=DNS:{name}"),
    ]);
    (crt, key)
}

/// A TLS connection to the edge on `port`, trusting `ca`, offering `alpn`; reads time out
/// after 20 s so a test never hangs.
pub fn tls_connect(
    port: u16,
    ca: &Path,
    alpn: &[&str],
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    let tcp = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    tls_over(tcp, ca, alpn)
}

/// TLS (trusting `ca`, offering `alpn`) over an open connection: for tests that write
/// something before the handshake.
pub fn tls_over(
    tcp: std::net::TcpStream,
    ca: &Path,
    alpn: &[&str],
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    tls_over_named(tcp, ca, alpn, "localhost")
}

/// [`tls_over`] with `name` as SNI and the name the certificate must carry.
pub fn tls_over_named(
    tcp: std::net::TcpStream,
    ca: &Path,
    alpn: &[&str],
    name: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let name = name.to_string().try_into().unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// Reads one response head (and whatever body bytes came with it): (status, text).
/// Status 0 when the connection ended before a status line.
pub fn read_head(stream: &mut impl std::io::Read) -> (u16, String) {
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    while !response.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => response.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Reads until the peer closes (or the read timeout): how long that took, and whether it
/// was a close (true) rather than a timeout.
pub fn wait_closed(stream: &mut impl std::io::Read) -> (Duration, bool) {
    let started = Instant::now();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return (started.elapsed(), true),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (started.elapsed(), false)
            }
            Err(_) => return (started.elapsed(), true),
        }
    }
}

/// The admin listener's `/metrics` text.
pub fn admin_metrics(port: u16) -> String {
    let got = curl(&[&format!("http://127.0.0.1:{port}/metrics")]);
    String::from_utf8_lossy(&got.body).into_owned()
}

/// The value of the sample `name` (with its labels, as printed) in metrics `text`.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// `throttled_ms` of the access line of the PUT that finished an upload to `repo`.
pub fn put_throttled_ms(edge: &Edge, repo: &str) -> u64 {
    let line = wait_for("the PUT's access line", Duration::from_secs(10), || {
        edge.log_text()
            .lines()
            .find(|l| l.contains("method=PUT") && l.contains(repo))
            .map(str::to_string)
    });
    line.split("throttled_ms=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("throttled_ms in the access log: {line}"))
}
