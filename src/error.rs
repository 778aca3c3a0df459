//! Answers the edge gives itself, in the registry's JSON error envelope.
//!
//! Every own answer carries `{"errors":[{"code","message","detail"}]}`,
//! `Content-Type: application/json` and `Docker-Distribution-Api-Version: registry/2.0`,
//! so clients parse them like the registry's own errors.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use serde::Serialize;

use crate::registry::Scope;

/// An error the edge answers itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("request body larger than the configured limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("no healthy registry node is available")]
    NoHealthyUpstream,
    #[error("the registry node could not be reached")]
    UpstreamUnreachable,
    #[error("the registry node did not answer in time")]
    UpstreamTimeout,
    #[error("the registry node failed while answering")]
    UpstreamFailed,
    /// A route's pool answered 401 to the token the edge signed for it: its `auth:` block
    /// does not trust the edge (a configuration fault the client cannot fix).
    #[error(
        "route {route:?}'s registry refused the edge's token: give it the auth block \
         `registry-edge registry-config --route {route}` prints"
    )]
    PoolRefusedToken { route: String },
    #[error("malformed request")]
    BadRequest,
    /// A method the edge never proxies (`CONNECT`).
    #[error("the request method is not supported")]
    MethodNotAllowed,
    /// A transfer coding other than `chunked` (RFC 9112 §6.1: 501).
    #[error("only the chunked transfer coding is supported")]
    TransferCodingUnsupported,
    #[error("the request has no Host header (HTTP/1.1 requires one)")]
    MissingHost,
    #[error("invalid repository name")]
    NameInvalid,
    #[error("request headers too large: at most {max_headers} header lines and {max_bytes} bytes")]
    HeadersTooLarge {
        max_headers: usize,
        max_bytes: usize,
    },
    #[error("this server does not serve the requested host")]
    MisdirectedRequest,
    #[error("the client was too slow sending the request")]
    RequestTimeout,
    #[error(
        "the registry is in read-only maintenance mode: pushes and deletes are refused, pulls work"
    )]
    ReadOnly,
    /// A push or delete to a read-only route.
    #[error("{route:?} is a read-only mirror: pushes and deletes are not accepted")]
    RouteReadOnly { route: String },
    /// No token, or one that does not grant `needed`.
    #[error("authentication required")]
    Unauthorized { needed: Vec<Scope> },
    #[error("{0}")]
    InvalidToken(String),
    #[error("wrong username or password")]
    BadCredentials,
    #[error("too many failed logins; retry later")]
    TooManyFailedLogins,
    #[error("too many pushes started; retry after {retry_after} seconds")]
    TooManyPushes { retry_after: u64 },
    /// `counted`: the address or account whose pull budget is spent.
    #[error("pull limit reached for {counted}; retry after {retry_after} seconds")]
    TooManyPulls { retry_after: u64, counted: String },
    #[error("push limits cannot be checked right now (shared state unavailable); retry later")]
    LimitsUnavailable,
    #[error("{0}")]
    BadTokenRequest(String),
    /// The login backend that had to answer could not (`ldap`, `oidc`, `http`).
    #[error("the login service ({backend}) is unavailable; retry later")]
    LoginUnavailable { backend: &'static str },
    /// `policy.quotas`: the push would take `namespace` over its quota (bytes).
    #[error("{}", quota_text(namespace, *usage, *quota, *needed))]
    QuotaExceeded {
        namespace: String,
        usage: u64,
        quota: u64,
        /// Bytes the refused push would have added, when known.
        needed: Option<u64>,
    },
    /// A manifest the edge must count (its namespace has a quota) but cannot read.
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    /// `policy.immutable_tags`: `tag` of `repository` exists and may not move or go.
    #[error("tag {tag} of {repository} is immutable")]
    ImmutableTag { repository: String, tag: String },
    /// Usage cannot be read (`shared_state.on_unavailable: deny`, or the registry did not
    /// answer an immutability check).
    #[error("{0}; retry later")]
    PolicyUnavailable(&'static str),
    #[error("internal error in the edge")]
    Internal,
}

/// "push refused: namespace N would exceed its storage quota (U bytes used of Q bytes; this
/// push needs M more bytes)", or "… is over its storage quota …" when it already is.
fn quota_text(namespace: &str, usage: u64, quota: u64, needed: Option<u64>) -> String {
    let state = match usage > quota {
        true => "is over",
        false => "would exceed",
    };
    let needed = needed.map_or_else(String::new, |n| format!("; this push needs {n} more bytes"));
    format!("push refused: namespace {namespace} {state} its storage quota ({usage} bytes used of {quota} bytes{needed})")
}

#[derive(Serialize)]
struct Envelope<'a> {
    errors: [ErrorEntry<'a>; 1],
}

#[derive(Serialize)]
struct ErrorEntry<'a> {
    code: &'a str,
    message: String,
    detail: serde_json::Value,
}

impl RegistryError {
    pub fn status(&self) -> u16 {
        match self {
            RegistryError::BodyTooLarge { .. } => 413,
            RegistryError::NoHealthyUpstream
            | RegistryError::LimitsUnavailable
            | RegistryError::LoginUnavailable { .. } => 503,
            RegistryError::UpstreamUnreachable
            | RegistryError::UpstreamFailed
            | RegistryError::PoolRefusedToken { .. } => 502,
            RegistryError::UpstreamTimeout => 504,
            RegistryError::BadRequest
            | RegistryError::MissingHost
            | RegistryError::NameInvalid
            | RegistryError::BadTokenRequest(_) => 400,
            RegistryError::Unauthorized { .. }
            | RegistryError::InvalidToken(_)
            | RegistryError::BadCredentials => 401,
            RegistryError::TooManyFailedLogins
            | RegistryError::TooManyPushes { .. }
            | RegistryError::TooManyPulls { .. } => 429,
            RegistryError::ReadOnly
            | RegistryError::RouteReadOnly { .. }
            | RegistryError::MethodNotAllowed => 405,
            RegistryError::TransferCodingUnsupported => 501,
            RegistryError::HeadersTooLarge { .. } => 431,
            RegistryError::MisdirectedRequest => 421,
            RegistryError::RequestTimeout => 408,
            RegistryError::QuotaExceeded { .. } | RegistryError::ImmutableTag { .. } => 403,
            RegistryError::PolicyUnavailable(_) => 503,
            RegistryError::ManifestInvalid(_) => 400,
            RegistryError::Internal => 500,
        }
    }

    /// The distribution error code (`registry/api/errcode`).
    pub fn code(&self) -> &'static str {
        match self {
            RegistryError::BodyTooLarge { .. } => "SIZE_INVALID",
            RegistryError::NoHealthyUpstream
            | RegistryError::LimitsUnavailable
            | RegistryError::LoginUnavailable { .. }
            | RegistryError::UpstreamUnreachable
            | RegistryError::UpstreamTimeout
            | RegistryError::UpstreamFailed
            | RegistryError::PoolRefusedToken { .. } => "UNAVAILABLE",
            RegistryError::BadRequest
            | RegistryError::MissingHost
            | RegistryError::BadTokenRequest(_) => "UNSUPPORTED",
            RegistryError::NameInvalid => "NAME_INVALID",
            RegistryError::ReadOnly
            | RegistryError::RouteReadOnly { .. }
            | RegistryError::MethodNotAllowed
            | RegistryError::TransferCodingUnsupported
            | RegistryError::HeadersTooLarge { .. }
            | RegistryError::MisdirectedRequest
            | RegistryError::RequestTimeout => "UNSUPPORTED",
            RegistryError::Unauthorized { .. }
            | RegistryError::InvalidToken(_)
            | RegistryError::BadCredentials => "UNAUTHORIZED",
            RegistryError::TooManyFailedLogins
            | RegistryError::TooManyPushes { .. }
            | RegistryError::TooManyPulls { .. } => "TOOMANYREQUESTS",
            RegistryError::QuotaExceeded { .. } | RegistryError::ImmutableTag { .. } => "DENIED",
            RegistryError::PolicyUnavailable(_) => "UNAVAILABLE",
            RegistryError::ManifestInvalid(_) => "MANIFEST_INVALID",
            RegistryError::Internal => "UNKNOWN",
        }
    }

    fn detail(&self) -> serde_json::Value {
        match self {
            RegistryError::BodyTooLarge { limit } => serde_json::json!({ "limit": limit }),
            RegistryError::QuotaExceeded {
                namespace,
                usage,
                quota,
                ..
            } => serde_json::json!({ "namespace": namespace, "usage": usage, "quota": quota }),
            // distribution's shape: one {Type, Name, Action} per needed action.
            RegistryError::Unauthorized { needed } => serde_json::Value::Array(
                needed
                    .iter()
                    .flat_map(|scope| {
                        scope.actions.iter().map(move |action| {
                            serde_json::json!({ "Type": scope.kind, "Name": scope.name, "Action": action })
                        })
                    })
                    .collect(),
            ),
            _ => serde_json::Value::Null,
        }
    }

    /// Maps a status Pingora reports (`HTTPStatus(n)`) back to an error. 413 never gets
    /// here: the proxy answers it with the configured limit.
    pub fn from_status(status: u16) -> RegistryError {
        match status {
            503 => RegistryError::NoHealthyUpstream,
            502 => RegistryError::UpstreamFailed,
            504 => RegistryError::UpstreamTimeout,
            405 => RegistryError::MethodNotAllowed,
            400..=499 => RegistryError::BadRequest,
            _ => RegistryError::Internal,
        }
    }

    pub fn body(&self) -> Bytes {
        let envelope = Envelope {
            errors: [ErrorEntry {
                code: self.code(),
                message: self.to_string(),
                detail: self.detail(),
            }],
        };
        Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default())
    }

    /// The response header matching [`RegistryError::body`].
    pub fn response_header(&self, body_len: usize) -> ResponseHeader {
        json_response_header(self.status(), body_len)
    }
}

/// A registry-style JSON response header (also used by later own answers).
pub(crate) fn json_response_header(status: u16, body_len: usize) -> ResponseHeader {
    let mut resp = ResponseHeader::build(status, Some(4)).expect("valid status");
    let headers = [
        ("Content-Type", "application/json".to_string()),
        ("Content-Length", body_len.to_string()),
        (
            "Docker-Distribution-Api-Version",
            "registry/2.0".to_string(),
        ),
        ("Cache-Control", "no-store".to_string()),
    ];
    for (name, value) in headers {
        resp.insert_header(name, value).expect("valid header");
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_the_registry_envelope() {
        let body = RegistryError::BodyTooLarge { limit: 10 }.body();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["errors"][0]["code"], "SIZE_INVALID");
        assert_eq!(json["errors"][0]["detail"]["limit"], 10);
        assert!(json["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("10 bytes"));
    }

    #[test]
    fn header_carries_api_version_and_json_type() {
        let err = RegistryError::NoHealthyUpstream;
        let resp = err.response_header(err.body().len());
        assert_eq!(resp.status.as_u16(), 503);
        assert_eq!(resp.headers["content-type"], "application/json");
        assert_eq!(
            resp.headers["docker-distribution-api-version"],
            "registry/2.0"
        );
    }
}
