//! The registry's API as the edge itself asks it (distribution spec): a tag's digest
//! (`HEAD /v2/<name>/manifests/<tag>`), a blob's or manifest's size, a repository's tags
//! (`/tags/list`), the catalog (`/v2/_catalog`), manifest bodies, and the cache's
//! confirmation `HEAD` with the client's own headers. Lists follow the `Link: <…>;
//! rel="next"` header. One module for the cache, the policy and `usage scan`.
//!
//! These requests carry a client's `Authorization` or a token the edge signed, so they go
//! where the proxied traffic goes and nowhere else: straight to the node, never through an
//! `HTTP_PROXY` / `HTTPS_PROXY` / `ALL_PROXY` from the environment (which reqwest honours by
//! default), and no redirect is followed. The login backends (OIDC, the http
//! authenticator) are other services and keep the environment's proxy.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, LINK};

use crate::auth::token::TokenAuthority;
use crate::registry::Scope;

/// The subject of the tokens the edge signs for its own lookups.
const EDGE_SUBJECT: &str = "registry-edge";

/// Longest any one request to a node may take (each lookup sets its own, shorter, timeout).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the client could not be made (the TLS roots or reqwest's builder).
#[derive(Debug, thiserror::Error)]
pub enum RegistryClientError {
    #[error(transparent)]
    Roots(#[from] crate::tls::RootsError),
    #[error("cannot build the registry client")]
    Build(#[source] reqwest::Error),
}

/// The HTTP client for the edge's own requests to registry nodes: every request goes
/// direct to the node it names. Cheap to clone (one connection pool).
#[derive(Clone)]
pub(crate) struct RegistryClient {
    /// Lookups: every request ends after its timeout, body included.
    lookups: reqwest::Client,
    /// The cache's fetches: bodies of any length, each read bounded by the caller.
    bodies: reqwest::Client,
}

impl RegistryClient {
    /// # Errors
    /// The system's TLS roots cannot be read, or reqwest refuses the settings.
    pub(crate) fn new() -> Result<RegistryClient, RegistryClientError> {
        let lookups = crate::tls::http_client_builder(None, CLIENT_TIMEOUT)?
            .no_proxy()
            .build()
            .map_err(RegistryClientError::Build)?;
        let bodies = crate::tls::untimed_http_client_builder(None, CLIENT_TIMEOUT)?
            .no_proxy()
            .build()
            .map_err(RegistryClientError::Build)?;
        Ok(RegistryClient { lookups, bodies })
    }

    /// A `GET` of `path` on the node at `node` with `authorization` and `headers` (the
    /// client's), for a body of any length: the answer once its head arrived, within
    /// `head_timeout`; the caller bounds each read of the body.
    ///
    /// # Errors
    /// No answer ([`LookupError::Request`]) or none within `head_timeout`
    /// ([`LookupError::Timeout`]).
    pub(crate) async fn get_body(
        &self,
        node: SocketAddr,
        authorization: Option<&str>,
        path: &str,
        headers: HeaderMap,
        head_timeout: Duration,
    ) -> Result<reqwest::Response, LookupError> {
        let url = format!("http://{node}{path}");
        let mut request = self.bodies.get(&url).headers(headers);
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        match tokio::time::timeout(head_timeout, request.send()).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(source)) => Err(LookupError::Request { url, source }),
            Err(_) => Err(LookupError::Timeout { url }),
        }
    }

    /// The API of the node at `node`, asked with `authorization` (an `Authorization` header
    /// value: [`edge_token`], or in proxy-only mode the client's own), each request ending
    /// after `timeout`.
    pub(crate) fn at(
        &self,
        node: SocketAddr,
        authorization: Option<String>,
        timeout: Duration,
    ) -> RegistryApi<'_> {
        RegistryApi {
            client: &self.lookups,
            base: format!("http://{node}"),
            authorization,
            timeout,
        }
    }
}

/// `Bearer <token>`: a token the edge signs for itself with `tokens` (`auth.token`),
/// granting `scopes`, for its own lookups (the registry verifies it like any other).
pub(crate) fn edge_token(tokens: &TokenAuthority, scopes: &[Scope]) -> String {
    let token = tokens.issue_reused(EDGE_SUBJECT, scopes, SystemTime::now());
    format!("Bearer {token}")
}

/// Every manifest media type, so the registry answers with the manifest as stored (its
/// digest) rather than converting or refusing it.
pub(crate) const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// Why the registry could not tell.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("{url}: {source}")]
    Request { url: String, source: reqwest::Error },
    #[error("{url}: the registry answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: the registry answered without Docker-Content-Digest")]
    NoDigest { url: String },
    #[error("{url}: no answer in time")]
    Timeout { url: String },
}

/// One node's API ([`RegistryClient::at`]).
pub(crate) struct RegistryApi<'a> {
    client: &'a reqwest::Client,
    /// `http://host:port`
    base: String,
    /// The `Authorization` header value: a token the edge signed for itself, or (proxy-only
    /// mode) the client's own.
    authorization: Option<String>,
    timeout: Duration,
}

impl RegistryApi<'_> {
    /// A request for `path` with the lookup's `Authorization` and timeout.
    fn request(&self, method: reqwest::Method, path: &str) -> (String, reqwest::RequestBuilder) {
        let url = format!("{}{path}", self.base);
        let mut request = self.client.request(method, &url).timeout(self.timeout);
        if let Some(value) = &self.authorization {
            request = request.header(AUTHORIZATION, value);
        }
        (url, request)
    }

    /// The digest `tag` of `repository` points to; `None` when the registry has no such tag.
    pub(crate) async fn tag_digest(
        &self,
        repository: &str,
        tag: &str,
    ) -> Result<Option<String>, LookupError> {
        let path = format!("/v2/{repository}/manifests/{tag}");
        let Some((url, headers)) = self.head(&path).await? else {
            return Ok(None);
        };
        // A tag that exists but whose digest is not said is not "absent".
        match headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
        {
            Some(digest) => Ok(Some(digest.to_string())),
            None => Err(LookupError::NoDigest { url }),
        }
    }

    /// The size the registry reports for blob (or, `manifest`, manifest) `digest` of
    /// `repository`: its `Content-Length` to a `HEAD`; `None` when it does not have it.
    pub(crate) async fn content_length(
        &self,
        repository: &str,
        digest: &str,
        manifest: bool,
    ) -> Result<Option<u64>, LookupError> {
        let kind = if manifest { "manifests" } else { "blobs" };
        let path = format!("/v2/{repository}/{kind}/{digest}");
        Ok(self.head(&path).await?.and_then(|(_, headers)| {
            headers
                .get(reqwest::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
        }))
    }

    /// Sends `method` `path`; the URL (for errors) and the answer.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<(String, reqwest::Response), LookupError> {
        let (url, request) = self.request(method, path);
        match request.header(ACCEPT, MANIFEST_TYPES).send().await {
            Ok(answer) => Ok((url, answer)),
            Err(source) => Err(LookupError::Request { url, source }),
        }
    }

    /// The status a `HEAD` of `path` gets with `headers` (the client's `Accept`, `Host`,
    /// forwarding headers) added to the lookup's own: the cache's confirmation that a
    /// client may pull what it holds.
    pub(crate) async fn head_status(
        &self,
        path: &str,
        headers: HeaderMap,
    ) -> Result<u16, LookupError> {
        let (url, request) = self.request(reqwest::Method::HEAD, path);
        match request.headers(headers).send().await {
            Ok(answer) => Ok(answer.status().as_u16()),
            Err(source) => Err(LookupError::Request { url, source }),
        }
    }

    /// A `HEAD` of `path`: the URL and the answer's headers on a 200, `None` on a 404.
    async fn head(&self, path: &str) -> Result<Option<(String, HeaderMap)>, LookupError> {
        let (url, answer) = self.send(reqwest::Method::HEAD, path).await?;
        match answer.status().as_u16() {
            200 => Ok(Some((url, answer.headers().clone()))),
            404 => Ok(None),
            status => Err(LookupError::Status { url, status }),
        }
    }

    /// The tags of `repository` (none when the registry does not know it).
    pub(crate) async fn tags(&self, repository: &str) -> Result<Vec<String>, LookupError> {
        self.list(&format!("/v2/{repository}/tags/list?n=1000"), "tags")
            .await
    }

    /// Every repository the registry lists.
    pub(crate) async fn catalog(&self) -> Result<Vec<String>, LookupError> {
        self.list("/v2/_catalog?n=1000", "repositories").await
    }

    /// The manifest body `reference` names in `repository`; `None` when it is gone.
    pub(crate) async fn manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<Vec<u8>>, LookupError> {
        let path = format!("/v2/{repository}/manifests/{reference}");
        let (url, answer) = self.send(reqwest::Method::GET, &path).await?;
        let failed = |source| LookupError::Request {
            url: url.clone(),
            source,
        };
        match answer.status().as_u16() {
            200 => Ok(Some(answer.bytes().await.map_err(failed)?.to_vec())),
            404 => Ok(None),
            status => Err(LookupError::Status { url, status }),
        }
    }

    /// Follows a paginated list; `key` is the JSON array's name.
    async fn list(&self, first: &str, key: &str) -> Result<Vec<String>, LookupError> {
        let mut items = Vec::new();
        let mut next = Some(first.to_string());
        while let Some(path) = next.take() {
            let (url, answer) = self.send(reqwest::Method::GET, &path).await?;
            let failed = |source| LookupError::Request {
                url: url.clone(),
                source,
            };
            match answer.status().as_u16() {
                200 => {}
                404 => break,
                status => return Err(LookupError::Status { url, status }),
            }
            // Only a path on the same registry: the token must not go anywhere else.
            next = answer
                .headers()
                .get(LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(next_link)
                .filter(|target| target.starts_with('/') && !target.starts_with("//"));
            let page: serde_json::Value = answer.json().await.map_err(failed)?;
            if let Some(list) = page[key].as_array() {
                items.extend(list.iter().filter_map(|v| v.as_str().map(str::to_string)));
            }
        }
        Ok(items)
    }
}

/// The target of `Link: </v2/_catalog?last=x&n=1000>; rel="next"` (RFC 8288).
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|link| {
        let (target, params) = link.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_comes_from_the_link_header() {
        assert_eq!(
            next_link("</v2/_catalog?last=b&n=2>; rel=\"next\"").as_deref(),
            Some("/v2/_catalog?last=b&n=2")
        );
        assert_eq!(next_link("</x>; rel=\"prev\""), None);
    }
}
