//! The HTTP client for the requests the edge itself sends to registry nodes: the cache's
//! confirmation `HEAD`, the policy's lookups and `usage scan`.
//!
//! Those requests carry a client's `Authorization` or a token the edge signed, so they go
//! where the proxied traffic goes and nowhere else: straight to the node, never through an
//! `HTTP_PROXY` / `HTTPS_PROXY` / `ALL_PROXY` from the environment (which reqwest honours by
//! default), and no redirect is followed. The login backends (OIDC, the http
//! authenticator) are other services and keep the environment's proxy.

use std::time::Duration;

/// Why the client could not be made (the TLS roots or reqwest's builder).
#[derive(Debug, thiserror::Error)]
pub enum RegistryClientError {
    #[error(transparent)]
    Roots(#[from] crate::tls::RootsError),
    #[error("cannot build the registry client")]
    Build(#[source] reqwest::Error),
}

/// A client whose every request goes direct to the node it names and ends after `timeout`.
pub fn registry_client(timeout: Duration) -> Result<reqwest::Client, RegistryClientError> {
    crate::tls::http_client_builder(None, timeout)?
        .no_proxy()
        .build()
        .map_err(RegistryClientError::Build)
}
