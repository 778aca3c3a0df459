//! Asking the registry what it holds, through its API (distribution spec): a tag's digest
//! (`HEAD /v2/<name>/manifests/<tag>`), a repository's tags (`/tags/list`), the catalog
//! (`/v2/_catalog`) and manifest bodies. Lists follow the `Link: <…>; rel="next"` header.

use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, LINK};

/// Every manifest media type, so the registry answers with the manifest as stored (its
/// digest) rather than converting or refusing it.
pub const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
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
}

/// The registry at `base` (`http://host:port`), asked with `authorization`.
pub struct RegistryApi<'a> {
    pub client: &'a reqwest::Client,
    pub base: String,
    /// The `Authorization` header value: a token the edge signed for itself, or (proxy-only
    /// mode) the client's own.
    pub authorization: Option<String>,
    pub timeout: Duration,
}

impl RegistryApi<'_> {
    fn request(&self, method: reqwest::Method, path: &str) -> (String, reqwest::RequestBuilder) {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .client
            .request(method, &url)
            .timeout(self.timeout)
            .header(ACCEPT, MANIFEST_TYPES);
        if let Some(value) = &self.authorization {
            request = request.header(AUTHORIZATION, value);
        }
        (url, request)
    }

    /// The digest `tag` of `repository` points to; `None` when the registry has no such tag.
    pub async fn tag_digest(
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
    pub async fn content_length(
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
        match request.send().await {
            Ok(answer) => Ok((url, answer)),
            Err(source) => Err(LookupError::Request { url, source }),
        }
    }

    /// A `HEAD` of `path`: the URL and the answer's headers on a 200, `None` on a 404.
    async fn head(
        &self,
        path: &str,
    ) -> Result<Option<(String, reqwest::header::HeaderMap)>, LookupError> {
        let (url, answer) = self.send(reqwest::Method::HEAD, path).await?;
        match answer.status().as_u16() {
            200 => Ok(Some((url, answer.headers().clone()))),
            404 => Ok(None),
            status => Err(LookupError::Status { url, status }),
        }
    }

    /// The tags of `repository` (none when the registry does not know it).
    pub async fn tags(&self, repository: &str) -> Result<Vec<String>, LookupError> {
        self.list(&format!("/v2/{repository}/tags/list?n=1000"), "tags")
            .await
    }

    /// Every repository the registry lists.
    pub async fn catalog(&self) -> Result<Vec<String>, LookupError> {
        self.list("/v2/_catalog?n=1000", "repositories").await
    }

    /// The manifest body `reference` names in `repository`; `None` when it is gone.
    pub async fn manifest(
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
