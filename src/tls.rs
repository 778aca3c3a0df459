//! TLS material: loading PEM chains and keys, and choosing a certificate by SNI.
//!
//! Pingora's rustls listener cannot take a full `ServerConfig`, but it accepts a
//! `ResolvesServerCert`; `CertResolver` is that resolver. Its certificate set sits
//! behind an `ArcSwap` so a reload can replace it without touching the listeners.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, ResolvesServerCert};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::CertificatePaths;

/// Why a certificate or key could not be used; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: cannot read certificate chain: {reason}", path.display())]
    Chain { path: PathBuf, reason: String },
    #[error("{}: cannot read private key: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error("{}: private key does not match the certificate {}", key.display(), cert.display())]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("{}: no DNS names in the certificate and no server_names given", path.display())]
    NoNames { path: PathBuf },
}

impl TlsError {
    /// Which field of a `tls.certificates[i]` entry the problem is about.
    pub(crate) fn field(&self) -> &'static str {
        match self {
            TlsError::Chain { .. } | TlsError::NoNames { .. } => "cert",
            TlsError::Key { .. } | TlsError::Mismatch { .. } => "key",
        }
    }
}

/// Reads a PEM chain (leaf first) and a PEM key (PKCS#8, PKCS#1 or SEC1) and checks they match.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = read_chain(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_path_buf(),
        reason: pem_reason(e),
    })?;
    certified_key(chain, key_der).map_err(|e| match e {
        KeyPairError::Unusable(reason) => TlsError::Key {
            path: key.to_path_buf(),
            reason,
        },
        KeyPairError::Mismatch => TlsError::Mismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        },
    })
}

/// Why a chain and a key cannot serve together.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyPairError {
    #[error("unusable private key: {0}")]
    Unusable(String),
    #[error("private key does not match the certificate")]
    Mismatch,
}

/// A chain (leaf first) and its key held in memory, checked to match.
pub(crate) fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, KeyPairError> {
    let signing_key = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| KeyPairError::Unusable(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|_| KeyPairError::Mismatch)?;
    Ok(certified)
}

/// Why PEM text held in memory (the ACME store's, a CA's answer) cannot serve.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PemError {
    #[error("certificate chain: {0}")]
    Chain(String),
    #[error("private key: {0}")]
    Key(String),
    #[error(transparent)]
    Pair(#[from] KeyPairError),
}

/// [`certified_key`] from PEM text.
pub(crate) fn certified_key_from_pem(chain: &str, key: &str) -> Result<CertifiedKey, PemError> {
    let chain = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::Chain(pem_reason(e)))?;
    if chain.is_empty() {
        return Err(PemError::Chain("no CERTIFICATE block found".into()));
    }
    let key =
        PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| PemError::Key(pem_reason(e)))?;
    Ok(certified_key(chain, key)?)
}

/// The leaf's expiry (`notAfter`) as Unix seconds.
pub(crate) fn not_after(leaf: &CertificateDer) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    Some(cert.validity().not_after.timestamp())
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain_err = |reason: String| TlsError::Chain {
        path: path.to_path_buf(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| chain_err(pem_reason(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| chain_err(pem_reason(e)))?;
    if chain.is_empty() {
        return Err(chain_err("no CERTIFICATE block found".into()));
    }
    // Parse the leaf now so a corrupt certificate fails here, not in a handshake.
    x509_parser::parse_x509_certificate(&chain[0])
        .map_err(|e| chain_err(format!("invalid certificate: {e}")))?;
    Ok(chain)
}

/// A bundle of extra trust roots that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct RootsError {
    pub path: PathBuf,
    pub reason: String,
}

/// A reqwest client builder over [`client_config`]`(ca)`: every request ends after
/// `timeout`, and no redirect is followed (the edge's own requests carry credentials a
/// redirect would take elsewhere). Callers add what is theirs (`no_proxy` for the nodes).
pub(crate) fn http_client_builder(
    ca: Option<&Path>,
    timeout: std::time::Duration,
) -> Result<reqwest::ClientBuilder, RootsError> {
    Ok(untimed_http_client_builder(ca, timeout)?.timeout(timeout))
}

/// Like [`http_client_builder`] without a bound on a whole request (only on connecting,
/// `connect_timeout`): for bodies of any length, whose callers bound each read themselves.
pub(crate) fn untimed_http_client_builder(
    ca: Option<&Path>,
    connect_timeout: std::time::Duration,
) -> Result<reqwest::ClientBuilder, RootsError> {
    let tls = client_config(ca)?;
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured((*tls).clone())
        .connect_timeout(connect_timeout)
        .redirect(reqwest::redirect::Policy::none()))
}

/// A rustls client configuration (ring) trusting the system's roots and the certificates
/// of the PEM bundle `ca` (at least one): what the edge's own HTTPS and LDAPS clients use
/// (ACME, OIDC, LDAP, the http authenticator).
pub(crate) fn client_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, RootsError> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(path) = ca {
        let error = |reason: String| RootsError {
            path: path.to_path_buf(),
            reason,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| error(pem_reason(e)))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| error(pem_reason(e)))?;
        if certs.is_empty() {
            return Err(error("no CERTIFICATE block found".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| error(e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RootsError {
            path: ca.map(Path::to_path_buf).unwrap_or_default(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

pub(crate) fn pem_reason(e: rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            "no PEM block of the expected kind found".into()
        }
        rustls_pki_types::pem::Error::Io(io) => io.to_string(),
        other => format!("{other:?}"),
    }
}

/// DNS names (subjectAltName, else CN) of a DER certificate, lowercased.
pub(crate) fn certificate_names(der: &CertificateDer) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    names
}

/// The certificates in force: a default and a name index (exact and `*.` wildcard names).
#[derive(Debug)]
pub(crate) struct CertSet {
    default: Arc<CertifiedKey>,
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

impl CertSet {
    /// Loads every configured certificate. Errors carry the index of the failing entry.
    pub(crate) fn load(entries: &[CertificatePaths]) -> Result<CertSet, (usize, TlsError)> {
        let mut default = None;
        let mut by_name = HashMap::new();
        for (i, entry) in entries.iter().enumerate() {
            let key = Arc::new(load_certified_key(&entry.cert, &entry.key).map_err(|e| (i, e))?);
            let names = match &entry.server_names {
                Some(names) => names.clone(),
                None => certificate_names(&key.cert[0]),
            };
            // Only the default certificate may go without names: it answers everything else.
            if names.is_empty() && i > 0 {
                return Err((
                    i,
                    TlsError::NoNames {
                        path: entry.cert.clone(),
                    },
                ));
            }
            for name in names {
                // First certificate listed for a name wins, like the order of the file.
                by_name.entry(name).or_insert_with(|| key.clone());
            }
            default.get_or_insert(key);
        }
        let default = default.ok_or((
            0,
            TlsError::NoNames {
                path: PathBuf::new(),
            },
        ))?;
        Ok(CertSet { default, by_name })
    }

    /// The certificate naming `name`, exactly or by a `*.` wildcard.
    fn lookup(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        let name = name.to_ascii_lowercase();
        self.by_name.get(&name).or_else(|| {
            let (_, rest) = name.split_once('.')?;
            self.by_name.get(&format!("*.{rest}"))
        })
    }

    /// Whether a certificate names `host` (exactly or by a `*.` wildcard).
    pub(crate) fn names(&self, host: &str) -> bool {
        self.lookup(host).is_some()
    }

    fn choose(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        server_name
            .and_then(|name| self.lookup(name))
            .unwrap_or(&self.default)
            .clone()
    }
}

/// The ALPN protocol a tls-alpn-01 validation offers (RFC 8737 §6.2).
pub(crate) const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Validation certificates for tls-alpn-01 challenges in progress (RFC 8737 §3), by DNS
/// name. The ACME client keeps them (`acme::challenges`); the resolver only asks, so TLS
/// does not depend on ACME.
pub(crate) trait ValidationCertificates: Send + Sync + std::fmt::Debug {
    /// The certificate to answer a validation handshake for `name` with, if one is pending.
    fn for_name(&self, name: &str) -> Option<Arc<CertifiedKey>>;
}

/// A certificate the edge manages itself (ACME), with the exact names it is served for.
#[derive(Debug)]
pub(crate) struct ManagedCert {
    pub names: Vec<String>,
    pub key: Arc<CertifiedKey>,
}

/// SNI certificate selection for Pingora's rustls listeners, swappable at run time.
///
/// Two sources: the certificate files (replaced on reload) and the ACME certificate
/// (replaced on issuance). ACME names win for their exact names; when no files are
/// configured the ACME certificate is also the default.
#[derive(Debug)]
pub(crate) struct CertResolver {
    files: ArcSwapOption<CertSet>,
    managed: ArcSwapOption<ManagedCert>,
    challenges: Arc<dyn ValidationCertificates>,
}

impl CertResolver {
    pub(crate) fn new(files: Option<CertSet>, challenges: Arc<dyn ValidationCertificates>) -> Self {
        CertResolver {
            files: ArcSwapOption::from(files.map(Arc::new)),
            managed: ArcSwapOption::empty(),
            challenges,
        }
    }

    /// Whether the certificates in force name `host`.
    pub(crate) fn serves(&self, host: &str) -> bool {
        self.managed_for(host).is_some()
            || self.files.load().as_ref().is_some_and(|f| f.names(host))
    }

    /// Replaces the certificate files for new handshakes; established connections are untouched.
    pub(crate) fn replace(&self, set: CertSet) {
        self.files.store(Some(Arc::new(set)));
    }

    /// Puts an ACME (or placeholder) certificate in force for new handshakes.
    pub(crate) fn set_managed(&self, cert: ManagedCert) {
        self.managed.store(Some(Arc::new(cert)));
    }

    fn managed_for(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let managed = self.managed.load();
        let managed = managed.as_ref()?;
        managed
            .names
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name))
            .then(|| managed.key.clone())
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name();
        // A CA validating tls-alpn-01 offers only acme-tls/1 and gets the validation
        // certificate, or no handshake at all: never a real certificate.
        if hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN))
        {
            return name.and_then(|n| self.challenges.for_name(n));
        }
        if let Some(key) = name.and_then(|n| self.managed_for(n)) {
            return Some(key);
        }
        match self.files.load().as_ref() {
            Some(files) => Some(files.choose(name)),
            None => self.managed.load().as_ref().map(|m| m.key.clone()),
        }
    }
}
