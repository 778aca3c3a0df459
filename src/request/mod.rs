//! What the edge reads from any request, whichever listener took it: the host the client
//! addressed, the public origin (`origin`), request ids, and whether the request can be
//! passed on unambiguously (`framing`).

pub(crate) mod client;
pub(crate) mod framing;
pub(crate) mod origin;

use http::header::HOST;
use pingora::http::{RequestHeader, ResponseHeader};

/// Header fields allowed in one request (the request line not counted). HTTP/1 blocks are
/// counted as they arrive (`listen::header_limit`), h2 blocks by the proxy.
pub(crate) const MAX_HEADER_LINES: usize = 100;
/// Bytes allowed in one request's header block, request line included.
pub(crate) const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Correlates a request across client, edge log and registry log.
pub(crate) const REQUEST_ID: &str = "X-Request-Id";

/// Returns the request's `X-Request-Id` on an answer the edge writes itself.
pub(crate) fn copy_request_id(
    request: &RequestHeader,
    answer: &mut ResponseHeader,
) -> pingora::Result<()> {
    if let Some(id) = request.headers.get(REQUEST_ID).cloned() {
        answer.insert_header(REQUEST_ID, id)?;
    }
    Ok(())
}

/// The request's `Content-Length`, when it declares one that parses.
pub(crate) fn declared_length(request: &RequestHeader) -> Option<u64> {
    request
        .headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The authority the client addressed: `Host`, else the URI authority (h2 `:authority`).
pub(crate) fn request_host(req: &RequestHeader) -> Option<String> {
    req.headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri.authority().map(|a| a.as_str().to_string()))
}

/// The host the client asked for, without its port; `None` when absent or not a plain host.
pub(crate) fn request_hostname(req: &RequestHeader) -> Option<String> {
    let raw = request_host(req)?;
    let authority = raw.parse::<http::uri::Authority>().ok()?;
    // Userinfo would make `https://a@b/` point somewhere else than it looks.
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return None;
    }
    Some(authority.host().to_ascii_lowercase())
}

/// 128 random bits, hex: `X-Request-Id` when the client sent none, token and refresh-token IDs.
pub(crate) fn random_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    // One allocation (a `format!` per byte made 17 on every request without an id).
    data_encoding::HEXLOWER.encode(&bytes)
}
