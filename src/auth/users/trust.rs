//! TLS client settings for the login backends (LDAP, OIDC discovery and JWKS, the http
//! authenticator): the system's roots plus an optional PEM bundle (`ca`), certificates
//! and host names always verified, rustls on ring as everywhere else in the edge.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// A `ca` bundle that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct TrustError {
    pub path: PathBuf,
    pub reason: String,
}

/// A rustls client configuration trusting the system's roots and `ca`'s certificates.
pub(crate) fn client_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TrustError> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(path) = ca {
        let error = |reason: String| TrustError {
            path: path.to_path_buf(),
            reason,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| error(crate::tls::pem_reason(e)))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| error(crate::tls::pem_reason(e)))?;
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
        .map_err(|e| TrustError {
            path: ca.map(Path::to_path_buf).unwrap_or_default(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// An HTTPS (and HTTP) client over [`client_config`] whose every request ends after `timeout`.
pub(crate) fn http_client(
    ca: Option<&Path>,
    timeout: Duration,
) -> Result<reqwest::Client, TrustError> {
    let tls = client_config(ca)?;
    reqwest::Client::builder()
        .tls_backend_preconfigured((*tls).clone())
        .timeout(timeout)
        .connect_timeout(timeout)
        // A login backend answers directly; a redirect would carry the password elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| TrustError {
            path: ca.map(Path::to_path_buf).unwrap_or_default(),
            reason: format!("cannot build the HTTPS client: {e}"),
        })
}

/// A response's body, refused past `max` bytes (login backends are network input).
pub(crate) async fn read_limited(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| e.without_url().to_string())?
    {
        if body.len() + chunk.len() > max {
            return Err(format!("answer larger than {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
