//! Certificates and raw TLS connections: dev certificates from the library's `gen-certs`,
//! openssl-made keys of other types, and a rustls client for what curl cannot send
//! (bytes before the handshake, a chosen SNI, reading a response head by hand).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

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

/// A self-signed certificate for `name` (CN and SAN: an IP SAN when `name` is an address,
/// else DNS) with a key made by the openssl subcommand `keygen` (e.g. `["genrsa", "2048"]`);
/// returns (certificate, key) paths. `openssl req -x509` makes it a CA certificate
/// (basicConstraints CA:TRUE), as its default configuration does.
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
        &match name.parse::<std::net::IpAddr>() {
            Ok(_) => format!("subjectAltName=IP:{name}"),
            Err(_) => format!("subjectAltName=DNS:{name}"),
        },
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

/// A test CA named `ca_name` and a server certificate it signs for `127.0.0.1` and
/// `localhost` (P-256 keys, two days), made with the openssl CLI in `dir`: (CA certificate,
/// server certificate, server key) paths. For the stand-in servers (slapd, the OIDC issuer)
/// the edge must verify like real ones.
pub fn ca_and_server_cert(dir: &Path, ca_name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let file = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let ca_subject = format!("/CN={ca_name}");
    let (ca, ca_key) = (file("ca.pem"), file("ca.key"));
    let (cert, key, csr, ext) = (
        file("server.pem"),
        file("server.key"),
        file("server.csr"),
        file("server.ext"),
    );
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-noenc",
    ];
    let mut args = vec!["req", "-x509", "-days", "2", "-subj", &ca_subject];
    args.extend_from_slice(&ec);
    args.extend_from_slice(&["-keyout", &ca_key, "-out", &ca]);
    openssl(&args);
    let mut args = vec!["req", "-new", "-subj", "/CN=localhost"];
    args.extend_from_slice(&ec);
    args.extend_from_slice(&["-keyout", &key, "-out", &csr]);
    openssl(&args);
    std::fs::write(
        &ext,
        "subjectAltName = IP:127.0.0.1, DNS:localhost\n\
         basicConstraints = critical, CA:FALSE\n\
         keyUsage = critical, digitalSignature\n\
         extendedKeyUsage = serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-set_serial",
        "2",
        "-days",
        "2",
        "-extfile",
        &ext,
        "-out",
        &cert,
    ]);
    (ca.into(), cert.into(), key.into())
}
