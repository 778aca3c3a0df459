//! TLS client settings for the login backends (LDAP, OIDC discovery and JWKS, the http
//! authenticator): the system's roots plus an optional PEM bundle (`ca`), certificates
//! and host names always verified, rustls on ring as everywhere else in the edge.

use std::path::Path;
use std::time::Duration;

pub(crate) use crate::tls::client_config;

/// A `ca` bundle that could not be used (the shared [`crate::tls::RootsError`]).
pub(crate) type TrustError = crate::tls::RootsError;

/// An HTTPS (and HTTP) client over [`client_config`] whose every request ends after `timeout`.
pub(crate) fn http_client(
    ca: Option<&Path>,
    timeout: Duration,
) -> Result<reqwest::Client, TrustError> {
    // A login backend answers directly; a redirect would carry the password elsewhere.
    crate::tls::http_client_builder(ca, timeout)?
        .build()
        .map_err(|e| TrustError {
            path: ca.map(Path::to_path_buf).unwrap_or_default(),
            reason: format!(
                "cannot build the HTTPS client: {}",
                crate::report::chain(&e)
            ),
        })
}

/// Why a login backend's answer could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The connection failed while the body arrived (the chain of causes, URL left out).
    #[error("{0}")]
    Transfer(String),
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
}

/// A response's body, refused past `max` bytes (login backends are network input).
pub(crate) async fn read_limited(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| ReadError::Transfer(crate::report::chain(&e.without_url())))?
    {
        if body.len() + chunk.len() > max {
            return Err(ReadError::TooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
