//! The token endpoint (`realm_path`): GET with Basic credentials or anonymous, and the
//! OAuth2 POST form (`grant_type=password` / `refresh_token`).
//!
//! Grants are the intersection of what was asked and what the ACL allows, never an error
//! for asking more; a request without scope (what `docker login` sends) gets a token with
//! empty access. Failed logins are throttled before any backend is asked; a backend
//! that cannot answer makes a 503 (`UNAVAILABLE`), never a failed login.

use std::net::IpAddr;
use std::time::SystemTime;

use base64::Engine;
use bytes::Bytes;
use serde::Serialize;

use super::access_tokens;
use super::identity::{Backend, Identity};
use super::token::claims::AccessEntry;
use super::users::Login;
use super::Auth;
use crate::error::RegistryError;
use crate::registry::Scope;

/// Largest token the realm issues (bytes of the JWT). A client sends it back in
/// `Authorization: Bearer …`, which must fit the edge's request-header limit
/// (`request::MAX_HEADER_BYTES`) with room left for the request line and the other
/// headers a client sends (docker and containerd send under 2 KiB); a larger token would be
/// issued and then refused with 431 on every request that carries it.
pub const MAX_TOKEN_BYTES: usize = crate::request::MAX_HEADER_BYTES - 16 * 1024;

/// A token request, already read off the wire.
pub struct TokenRequest<'a> {
    pub post: bool,
    /// Query parameters (GET) or form fields (POST), in order, repeated keys kept.
    pub params: Vec<(String, String)>,
    pub authorization: Option<&'a str>,
    pub client_ip: IpAddr,
}

impl TokenRequest<'_> {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> {
        self.params
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The endpoint's answer.
#[derive(Debug)]
pub enum TokenReply {
    Issued {
        body: Bytes,
        account: String,
    },
    Refused {
        error: RegistryError,
        retry_after: Option<u64>,
    },
}

#[derive(Serialize)]
struct Body<'a> {
    token: &'a str,
    access_token: &'a str,
    expires_in: u64,
    issued_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
}

enum Credentials {
    Anonymous,
    Password { user: String, password: String },
    Refresh(String),
}

/// What an `Authorization` header offers the realm.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Basic {
    /// No header, or another scheme: an anonymous request.
    Absent,
    /// `Basic` with something that is not base64 of `user:password`: refused like a
    /// wrong password, not silently treated as anonymous.
    Malformed,
    Credentials(String, String),
}

/// Reads an `Authorization` header as the realm does (public for the fuzz targets).
pub(crate) fn basic_credentials(authorization: Option<&str>) -> Basic {
    let Some(value) = authorization else {
        return Basic::Absent;
    };
    let value = value.trim();
    let (scheme, encoded) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return Basic::Absent;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim());
    let text = decoded.ok().and_then(|bytes| String::from_utf8(bytes).ok());
    match text.as_deref().and_then(|t| t.split_once(':')) {
        Some((user, password)) => Basic::Credentials(user.to_string(), password.to_string()),
        None => Basic::Malformed,
    }
}

/// 429 while the client or account is blocked (`blocked_for` answers only waits > 0).
fn too_many_failed_logins(wait: std::time::Duration) -> TokenReply {
    TokenReply::Refused {
        error: RegistryError::TooManyFailedLogins,
        retry_after: Some(crate::limits::retry_after_seconds(wait)),
    }
}

fn refused_login() -> TokenReply {
    TokenReply::Refused {
        error: RegistryError::BadCredentials,
        retry_after: None,
    }
}

/// 503 at the realm: the backend that had to answer could not. Not a failed login.
fn unavailable(backend: &Backend) -> TokenReply {
    TokenReply::Refused {
        error: RegistryError::LoginUnavailable {
            backend: backend.name(),
        },
        retry_after: None,
    }
}

fn bad(message: &str) -> TokenReply {
    TokenReply::Refused {
        error: RegistryError::BadTokenRequest(message.to_string()),
        retry_after: None,
    }
}

/// A step of the endpoint either goes on with its value or has the answer already (a
/// refusal).
type Step<T> = Result<T, TokenReply>;

impl Auth {
    pub async fn handle_token_request(
        &self,
        req: &TokenRequest<'_>,
        now: SystemTime,
    ) -> TokenReply {
        match self.login(req, now).await {
            Ok((identity, refresh_token)) => self.issue(req, &identity, refresh_token, now),
            Err(refused) => refused,
        }
    }

    /// Who the request proves to be, and the refresh token to hand out (or hand back).
    async fn login(
        &self,
        req: &TokenRequest<'_>,
        now: SystemTime,
    ) -> Step<(Identity, Option<String>)> {
        match req.param("service") {
            Some(service) if service == self.tokens.service() => {}
            Some(_) => return Err(bad("unknown service")),
            None => return Err(bad("service parameter is required")),
        }
        match self.credentials(req).await? {
            Credentials::Anonymous => Ok((Identity::anonymous(), None)),
            Credentials::Password { user, password } => {
                self.password_login(req, &user, &password, now).await
            }
            Credentials::Refresh(token) => self.refresh_login(req, token, now).await,
        }
    }

    /// The credentials of a POST form (`grant_type`) or of a GET's `Authorization`.
    async fn credentials(&self, req: &TokenRequest<'_>) -> Step<Credentials> {
        if req.post {
            return match req.param("grant_type") {
                Some("password") => match (req.param("username"), req.param("password")) {
                    (Some(user), Some(password)) => Ok(Credentials::Password {
                        user: user.to_string(),
                        password: password.to_string(),
                    }),
                    _ => Err(bad("username and password are required")),
                },
                Some("refresh_token") => match req.param("refresh_token") {
                    Some(token) => Ok(Credentials::Refresh(token.to_string())),
                    None => Err(bad("refresh_token is required")),
                },
                _ => Err(bad("unsupported grant_type")),
            };
        }
        match basic_credentials(req.authorization) {
            Basic::Credentials(user, password) => Ok(Credentials::Password { user, password }),
            Basic::Absent => Ok(Credentials::Anonymous),
            Basic::Malformed => {
                self.throttle.record_failure(req.client_ip, "").await;
                Err(refused_login())
            }
        }
    }

    /// A user and password, asked of the backends unless the client or account is
    /// blocked; with `offline_token=true` (or `access_type=offline`) a refresh token too.
    async fn password_login(
        &self,
        req: &TokenRequest<'_>,
        user: &str,
        password: &str,
        now: SystemTime,
    ) -> Step<(Identity, Option<String>)> {
        let token_login = (self.access_tokens.as_ref())
            .filter(|_| password.starts_with(access_tokens::secret::PREFIX));
        // Only the IP counts for an OIDC entry's login name, which every job shares, and for
        // a token's name, which every client config holds (anyone could lock it out, and
        // its 256-bit secret needs no per-account limit).
        let throttled = match token_login.is_some() || self.users.is_oidc_login(user, password) {
            true => "",
            false => user,
        };
        if let Some(wait) = self.throttle.blocked_for(req.client_ip, throttled).await {
            return Err(too_many_failed_logins(wait));
        }
        let login = match token_login {
            Some(tokens) => {
                let credentials = (user, password);
                access_tokens::login::login(tokens, &self.users, credentials, req.client_ip, now)
                    .await
            }
            None => {
                let login = self.users.login(user, password, req.client_ip).await;
                access_tokens::login::not_a_token_name(self.access_tokens.as_deref(), login).await
            }
        };
        let identity = match login {
            Login::Accepted(identity) => identity,
            Login::Refused => {
                self.throttle.record_failure(req.client_ip, throttled).await;
                return Err(refused_login());
            }
            Login::Unavailable(backend) => return Err(unavailable(&backend)),
        };
        let offline = req.param("offline_token") == Some("true")
            || req.param("access_type") == Some("offline");
        let refresh = offline
            .then(|| self.users.refresh_not_after(&identity, now))
            .and_then(|not_after| {
                // A bound already reached (an http login with cache_ttl 0) gets none.
                let issued = self.refresh.issue_refresh(&identity, not_after, now);
                (issued.expires_in > 0).then_some(issued.token)
            });
        Ok((identity, refresh))
    }

    /// A refresh token the realm issued, for a user the issuing backend still knows.
    async fn refresh_login(
        &self,
        req: &TokenRequest<'_>,
        token: String,
        now: SystemTime,
    ) -> Step<(Identity, Option<String>)> {
        if let Some(wait) = self.throttle.blocked_for(req.client_ip, "").await {
            return Err(too_many_failed_logins(wait));
        }
        let Ok(claims) = self.refresh.verify(&token) else {
            self.throttle.record_failure(req.client_ip, "").await;
            return Err(refused_login());
        };
        // Refresh tokens from before backends existed name none: htpasswd's.
        let mut identity = claims
            .identity
            .clone()
            .unwrap_or_else(|| Identity::new(&claims.sub, Backend::Htpasswd));
        identity.account = claims.sub.clone();
        // The user must still exist in the backend that issued the token; an access
        // token must still be good.
        let login = match (&identity.backend, &self.access_tokens) {
            (Backend::AccessToken { name, id }, Some(tokens)) => {
                let token = (name.as_str(), id.as_str());
                access_tokens::login::refresh(tokens, &self.users, token, req.client_ip, now).await
            }
            _ => self.users.refresh(identity).await,
        };
        match login {
            Login::Accepted(identity) => Ok((identity, Some(token))),
            Login::Refused => {
                self.throttle.record_failure(req.client_ip, "").await;
                Err(refused_login())
            }
            Login::Unavailable(backend) => Err(unavailable(&backend)),
        }
    }

    /// The token for what was asked and the ACL allows `identity` (possibly nothing).
    fn issue(
        &self,
        req: &TokenRequest<'_>,
        identity: &Identity,
        refresh_token: Option<String>,
        now: SystemTime,
    ) -> TokenReply {
        let account = identity.account.clone();
        let mut entries = Vec::new();
        let granted: Vec<Scope> = Scope::parse_all(req.all("scope"))
            .into_iter()
            .filter_map(|mut scope| {
                let grant = self.acl.grant(identity, &scope, Some(req.client_ip));
                scope.actions = grant.actions;
                (!scope.actions.is_empty()).then(|| {
                    entries.push(AccessEntry::new(&scope, &grant.from));
                    scope
                })
            })
            .collect();
        // An OIDC login's registry token ends with the ID token that proved it.
        let issued = self
            .tokens
            .issue_until(&account, entries, identity.not_after, now);
        if issued.token.len() > MAX_TOKEN_BYTES {
            return bad(&format!(
                "a token for these {} scopes would be {} bytes; the edge accepts tokens of at most \
                 {MAX_TOKEN_BYTES} bytes (request headers are limited to {} bytes): ask for fewer scopes",
                granted.len(),
                issued.token.len(),
                crate::request::MAX_HEADER_BYTES,
            ));
        }
        let body = Body {
            token: &issued.token,
            access_token: &issued.token,
            expires_in: issued.expires_in,
            issued_at: humantime::format_rfc3339_seconds(issued.issued_at).to_string(),
            refresh_token: refresh_token.as_deref(),
            scope: req.post.then(|| {
                granted
                    .iter()
                    .map(Scope::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            }),
        };
        let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        TokenReply::Issued { body, account }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn basic_header_shapes() {
        let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
        let creds = |u: &str, p: &str| Basic::Credentials(u.into(), p.into());
        assert_eq!(basic_credentials(None), Basic::Absent);
        assert_eq!(basic_credentials(Some("Bearer abc")), Basic::Absent);
        let ok = format!("basic {}", b64(b"alice:pw:with:colons"));
        assert_eq!(
            basic_credentials(Some(&ok)),
            creds("alice", "pw:with:colons")
        );
        let empty = format!("Basic {}", b64(b":"));
        assert_eq!(basic_credentials(Some(&empty)), creds("", ""));
        for bad in [
            "Basic".to_string(),
            "Basic ".to_string(),
            "Basic %%%".to_string(),
            format!("Basic {}", b64(b"no-colon")),
            format!("Basic {}", b64(&[0xff, b':', 0xfe])),
            format!("Basic {} extra", b64(b"a:b")),
        ] {
            assert_eq!(basic_credentials(Some(&bad)), Basic::Malformed, "{bad}");
        }
    }
}
