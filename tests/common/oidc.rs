//! A stand-in OpenID Connect issuer: discovery document and JWKS over HTTPS on a loopback
//! port, plus the private keys behind them, so tests can mint CI job ID tokens (presented
//! to the edge as a password) and forge the ones the edge must refuse.
//!
//! A stand-in because the edge's verification has to be observed against an issuer whose
//! keys the test controls (rotate them, sign with one it never published, count how often
//! the edge fetched the JWKS), and no real OpenID provider runs offline.
//!
//! Keys and certificates come from the openssl CLI (ring cannot generate RSA keys); tokens
//! are signed with jsonwebtoken on the library's ring backend. The server is HTTP/1.1 on
//! its own tokio runtime in a background thread and stops when the [`OidcIssuer`] drops.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::KeyPair;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{free_port, openssl};

/// An OpenID Connect issuer at `https://127.0.0.1:PORT`: `GET /.well-known/openid-configuration`
/// and `GET /jwks`. Starts with an RSA key (RS256, kid `rsa-1`, the one [`Self::mint`] signs
/// with) and an EC P-256 key (ES256, kid `ec-1`), both published.
pub struct OidcIssuer {
    issuer: String,
    port: u16,
    dir: PathBuf,
    ca: PathBuf,
    keys: Mutex<Keys>,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<std::thread::JoinHandle<()>>,
}

/// What the server thread reads: the published keys and the request counters.
struct Shared {
    issuer: String,
    published: Mutex<Vec<Value>>,
    discovery_fetches: AtomicUsize,
    jwks_fetches: AtomicUsize,
}

struct Keys {
    rsa: SigningKey,
    ec: SigningKey,
    /// Number of the last RSA key made: the next rotation makes `rsa-{n+1}`.
    rsa_generation: u32,
    /// The attacker's key, made on first use and never published.
    unpublished: Option<SigningKey>,
}

struct SigningKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    /// SubjectPublicKeyInfo PEM, the bytes an alg-confusion attack uses as HMAC secret.
    public_pem: Vec<u8>,
    jwk: Value,
}

impl OidcIssuer {
    /// Makes a CA and a server certificate (IP 127.0.0.1, DNS localhost) and the two
    /// starting keys under `dir/oidc-PORT`, then serves on 127.0.0.1:PORT. The listener is
    /// bound before this returns, so requests need no readiness poll.
    pub fn start(dir: &Path) -> OidcIssuer {
        registry_edge::auth::token::jwt_crypto::install();
        let port = free_port();
        let dir = dir.join(format!("oidc-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca, cert, key) = super::ca_and_server_cert(&dir, "registry-edge test OIDC CA");
        let issuer = format!("https://127.0.0.1:{port}");
        let keys = Keys {
            rsa: SigningKey::generate(&dir, "rsa-1", "rsa-1", Algorithm::RS256),
            ec: SigningKey::generate(&dir, "ec-1", "ec-1", Algorithm::ES256),
            rsa_generation: 1,
            unpublished: None,
        };
        let shared = Arc::new(Shared {
            issuer: issuer.clone(),
            published: Mutex::new(vec![keys.rsa.jwk.clone(), keys.ec.jwk.clone()]),
            discovery_fetches: AtomicUsize::new(0),
            jwks_fetches: AtomicUsize::new(0),
        });
        let listener = listen(port);
        let acceptor = tls_acceptor(&cert, &key);
        let (shutdown, stop) = tokio::sync::oneshot::channel();
        let server_shared = shared.clone();
        let server = std::thread::Builder::new()
            .name(format!("oidc-issuer-{port}"))
            .spawn(move || serve(listener, acceptor, server_shared, stop))
            .unwrap();
        OidcIssuer {
            issuer,
            port,
            dir,
            ca,
            keys: Mutex::new(keys),
            shared,
            shutdown: Some(shutdown),
            server: Some(server),
        }
    }

    /// The issuer URL, `https://127.0.0.1:PORT` (no trailing slash): the tokens' `iss`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The port the issuer listens on (stays reserved for the test binary after drop).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// PEM of the CA that signed the server certificate (`auth.users.oidc[].ca`).
    pub fn ca(&self) -> &Path {
        &self.ca
    }

    /// `GET /jwks` requests received so far.
    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    /// `GET /.well-known/openid-configuration` requests received so far.
    pub fn discovery_fetches(&self) -> usize {
        self.shared.discovery_fetches.load(Ordering::SeqCst)
    }

    /// Claims `{iss, sub, aud, exp, nbf, iat}` with `nbf = iat = now` and
    /// `exp = now + exp_in_secs` (negative for an expired token), in seconds.
    pub fn claims(&self, sub: &str, aud: &str, exp_in_secs: i64) -> Value {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        json!({
            "iss": self.issuer,
            "sub": sub,
            "aud": aud,
            "exp": now + exp_in_secs,
            "nbf": now,
            "iat": now,
        })
    }

    /// Makes a new RSA key `rsa-N` (N one more than the last), signs with it from now on
    /// and publishes it in place of the previous RSA key, which leaves the JWKS. Returns
    /// the new kid.
    pub fn rotate(&self) -> String {
        let generation = self.keys.lock().unwrap().rsa_generation + 1;
        let kid = format!("rsa-{generation}");
        // Made outside the lock: minting meanwhile still uses the old key.
        let key = SigningKey::generate(&self.dir, &kid, &kid, Algorithm::RS256);
        let mut keys = self.keys.lock().unwrap();
        let old_kid = std::mem::replace(&mut keys.rsa, key).kid;
        keys.rsa_generation = generation;
        let mut published = self.shared.published.lock().unwrap();
        published.retain(|jwk| jwk["kid"] != old_kid.as_str());
        published.insert(0, keys.rsa.jwk.clone());
        kid
    }

    /// An RS256 token signed with the current RSA key, header `{alg, typ: JWT, kid}`.
    pub fn mint(&self, claims: &Value) -> String {
        self.keys.lock().unwrap().rsa.sign(claims)
    }

    /// An ES256 token signed with the EC key `ec-1`.
    pub fn mint_es256(&self, claims: &Value) -> String {
        self.keys.lock().unwrap().ec.sign(claims)
    }

    /// An RS256 token signed with an RSA key this issuer never publishes, its header
    /// claiming `kid` (e.g. a published one): what an attacker can make. The same
    /// attacker key serves every call.
    pub fn mint_with_unpublished_key(&self, claims: &Value, kid: &str) -> String {
        let mut keys = self.keys.lock().unwrap();
        let key = keys.unpublished.get_or_insert_with(|| {
            SigningKey::generate(&self.dir, "unpublished", "unpublished", Algorithm::RS256)
        });
        sign(Algorithm::RS256, kid, &key.encoding, claims)
    }

    /// An HS256 token whose HMAC secret is the current RSA public key's PEM, with that
    /// key's kid: the algorithm-confusion attack on verifiers that take `alg` from the token.
    pub fn mint_hs256_with_public_key(&self, claims: &Value) -> String {
        let keys = self.keys.lock().unwrap();
        let secret = EncodingKey::from_secret(&keys.rsa.public_pem);
        sign(Algorithm::HS256, &keys.rsa.kid, &secret, claims)
    }

    /// An unsigned token, `{"alg":"none","typ":"JWT","kid":<current RSA kid>}`, with an
    /// empty signature part.
    pub fn mint_alg_none(&self, claims: &Value) -> String {
        let kid = self.keys.lock().unwrap().rsa.kid.clone();
        let header = json!({"alg": "none", "typ": "JWT", "kid": kid});
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }
}

impl Drop for OidcIssuer {
    /// Stops the server and waits for its thread: the port is closed once this returns.
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}

impl SigningKey {
    /// A new key for `alg` (RS256: RSA 2048, ES256: P-256) in `dir/{file}.key` and its
    /// public PEM beside it, with its JWK.
    fn generate(dir: &Path, file: &str, kid: &str, alg: Algorithm) -> SigningKey {
        let private = dir.join(format!("{file}.key"));
        let public = dir.join(format!("{file}.pub.pem"));
        let keygen: &[&str] = match alg {
            Algorithm::RS256 => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            Algorithm::ES256 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            other => panic!("the stand-in issuer makes no {other:?} keys"),
        };
        let mut args = vec!["genpkey", "-out", private.to_str().unwrap()];
        args.extend_from_slice(keygen);
        openssl(&args);
        openssl(&[
            "pkey",
            "-in",
            private.to_str().unwrap(),
            "-pubout",
            "-out",
            public.to_str().unwrap(),
        ]);
        let pem = std::fs::read(&private).unwrap();
        let public_pem = std::fs::read(&public).unwrap();
        let (encoding, jwk) = if alg == Algorithm::RS256 {
            // jsonwebtoken keeps the PKCS#1 RSAPrivateKey DER, which ring reads.
            let encoding = EncodingKey::from_rsa_pem(&pem).unwrap();
            let pair = ring::signature::RsaKeyPair::from_der(encoding.as_bytes()).unwrap();
            let public = ring::signature::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
            let jwk = json!({
                "kty": "RSA",
                "kid": kid,
                "use": "sig",
                "alg": "RS256",
                "n": URL_SAFE_NO_PAD.encode(&public.n),
                "e": URL_SAFE_NO_PAD.encode(&public.e),
            });
            (encoding, jwk)
        } else {
            // PKCS#8 DER; the public key is the uncompressed point 04 || x || y.
            let encoding = EncodingKey::from_ec_pem(&pem).unwrap();
            let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
                &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                encoding.as_bytes(),
                &ring::rand::SystemRandom::new(),
            )
            .unwrap();
            let point = pair.public_key().as_ref();
            assert_eq!((point.len(), point[0]), (65, 4), "uncompressed P-256 point");
            let jwk = json!({
                "kty": "EC",
                "kid": kid,
                "use": "sig",
                "alg": "ES256",
                "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&point[33..]),
            });
            (encoding, jwk)
        };
        SigningKey {
            kid: kid.to_string(),
            alg,
            encoding,
            public_pem,
            jwk,
        }
    }

    fn sign(&self, claims: &Value) -> String {
        sign(self.alg, &self.kid, &self.encoding, claims)
    }
}

/// A JWT with header `{alg, typ: JWT, kid}`.
fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// Listens on the port [`free_port`] reserved (that socket also has `SO_REUSEADDR`).
fn listen(port: u16) -> std::net::TcpListener {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_reuse_address(true).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap_or_else(|e| panic!("OIDC issuer cannot bind 127.0.0.1:{port}: {e}"));
    socket.listen(128).unwrap();
    socket.set_nonblocking(true).unwrap();
    socket.into()
}

/// rustls (ring) serving `cert` with `key`, HTTP/1.1 only.
fn tls_acceptor(cert: &Path, key: &Path) -> tokio_rustls::TlsAcceptor {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain = vec![CertificateDer::from_pem_file(cert).unwrap()];
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// The server thread: accepts until `stop` fires (or its sender drops). Dropping the
/// runtime then cancels the connections still open, closing their sockets.
fn serve(
    listener: std::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        loop {
            tokio::select! {
                _ = &mut stop => break,
                accepted = listener.accept() => {
                    let Ok((tcp, _)) = accepted else { continue };
                    let (acceptor, shared) = (acceptor.clone(), shared.clone());
                    tokio::spawn(async move {
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            serve_connection(tls, &shared).await;
                        }
                    });
                }
            }
        }
    });
    drop(runtime);
}

/// Largest request head read; a bigger one is answered 400 and the connection closed.
const MAX_HEAD: usize = 64 * 1024;

/// Answers requests on one connection (keep-alive) until the client closes or asks to.
async fn serve_connection(mut stream: impl AsyncRead + AsyncWrite + Unpin, shared: &Shared) {
    let mut buf = Vec::new();
    loop {
        let parsed = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut request = httparse::Request::new(&mut headers);
            match request.parse(&buf) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let header = |name: &str| {
                        request
                            .headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case(name))
                            .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
                    };
                    let body_len: usize = header("content-length")
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    let close = request.version == Some(0)
                        || header("connection").is_some_and(|v| v.contains("close"));
                    break Some((
                        request.method.unwrap_or("").to_string(),
                        request.path.unwrap_or("").to_string(),
                        head_len + body_len,
                        close,
                    ));
                }
                Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => {}
                Ok(httparse::Status::Partial) => break None,
                Err(_) => break None,
            }
            if !read_more(&mut stream, &mut buf).await {
                return;
            }
        };
        let Some((method, path, request_len, close)) = parsed else {
            if respond(&mut stream, 400, &json!({"error": "bad request"}), true).await {
                let _ = stream.shutdown().await;
            }
            return;
        };
        // Discard a body, if any (clients send none on GET).
        while buf.len() < request_len {
            if !read_more(&mut stream, &mut buf).await {
                return;
            }
        }
        buf.drain(..request_len);
        let (status, body) = route(&method, &path, shared);
        if !respond(&mut stream, status, &body, close).await {
            return;
        }
        if close {
            // TLS close_notify, then FIN.
            let _ = stream.shutdown().await;
            return;
        }
    }
}

async fn read_more(stream: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// Status and JSON body for a request; counts the GETs of each route.
fn route(method: &str, path: &str, shared: &Shared) -> (u16, Value) {
    let path = path.split('?').next().unwrap_or("");
    let counter = match path {
        "/.well-known/openid-configuration" => &shared.discovery_fetches,
        "/jwks" => &shared.jwks_fetches,
        _ => return (404, json!({"error": "not found"})),
    };
    if method != "GET" {
        return (405, json!({"error": "method not allowed"}));
    }
    counter.fetch_add(1, Ordering::SeqCst);
    if path == "/jwks" {
        let keys = shared.published.lock().unwrap().clone();
        return (200, json!({ "keys": keys }));
    }
    let issuer = &shared.issuer;
    (
        200,
        json!({
            "issuer": issuer,
            "jwks_uri": format!("{issuer}/jwks"),
            // Required members of a discovery document; the endpoint is not served.
            "authorization_endpoint": format!("{issuer}/authorize"),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            "claims_supported": ["iss", "sub", "aud", "exp", "nbf", "iat"],
        }),
    )
}

/// Writes one JSON response; false if the connection broke.
async fn respond(
    stream: &mut (impl AsyncWrite + Unpin),
    status: u16,
    body: &Value,
    close: bool,
) -> bool {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "",
    };
    let body = body.to_string();
    let mut response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if status == 405 {
        response.push_str("Allow: GET\r\n");
    }
    if close {
        response.push_str("Connection: close\r\n");
    }
    response.push_str("\r\n");
    response.push_str(&body);
    stream.write_all(response.as_bytes()).await.is_ok() && stream.flush().await.is_ok()
}
