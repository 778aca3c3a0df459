//! The token endpoint (`realm_path`): GET with Basic credentials or anonymous, and the
//! OAuth2 POST form (`grant_type=password` / `refresh_token`).
//!
//! Grants are the intersection of what was asked and what the ACL allows, never an error
//! for asking more; a request without scope (what `docker login` sends) gets a token with
//! empty access. Failed logins are throttled before any bcrypt work.

use std::net::IpAddr;
use std::time::SystemTime;

use base64::Engine;
use bytes::Bytes;
use serde::Serialize;

use super::scope::Scope;
use super::Auth;
use crate::error::RegistryError;

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

fn basic_credentials(authorization: Option<&str>) -> Option<(String, String)> {
    let (scheme, encoded) = authorization?.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn bad(message: &str) -> TokenReply {
    TokenReply::Refused {
        error: RegistryError::BadTokenRequest(message.to_string()),
        retry_after: None,
    }
}

impl Auth {
    pub async fn handle_token_request(
        &self,
        req: &TokenRequest<'_>,
        now: SystemTime,
    ) -> TokenReply {
        match req.param("service") {
            Some(service) if service == self.tokens.service() => {}
            Some(_) => return bad("unknown service"),
            None => return bad("service parameter is required"),
        }
        let credentials = if req.post {
            match req.param("grant_type") {
                Some("password") => match (req.param("username"), req.param("password")) {
                    (Some(user), Some(password)) => Credentials::Password {
                        user: user.to_string(),
                        password: password.to_string(),
                    },
                    _ => return bad("username and password are required"),
                },
                Some("refresh_token") => match req.param("refresh_token") {
                    Some(token) => Credentials::Refresh(token.to_string()),
                    None => return bad("refresh_token is required"),
                },
                _ => return bad("unsupported grant_type"),
            }
        } else {
            match basic_credentials(req.authorization) {
                Some((user, password)) => Credentials::Password { user, password },
                None => Credentials::Anonymous,
            }
        };

        let (account, refresh_token) = match credentials {
            Credentials::Anonymous => (String::new(), None),
            Credentials::Password { user, password } => {
                if let Some(wait) = self.throttle.blocked_for(req.client_ip, &user) {
                    let retry_after = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                    return TokenReply::Refused {
                        error: RegistryError::TooManyFailedLogins,
                        retry_after: Some(retry_after),
                    };
                }
                if !self.users.verify(&user, &password).await.ok {
                    self.throttle.record_failure(req.client_ip, &user);
                    return TokenReply::Refused {
                        error: RegistryError::BadCredentials,
                        retry_after: None,
                    };
                }
                let offline = req.param("offline_token") == Some("true")
                    || req.param("access_type") == Some("offline");
                let refresh = offline.then(|| self.refresh.issue(&user, &[], now).token);
                (user, refresh)
            }
            Credentials::Refresh(token) => match self.refresh.verify(&token) {
                // A user removed from htpasswd loses their refresh tokens at once.
                Ok(claims) if self.users.contains(&claims.sub) => (claims.sub.clone(), Some(token)),
                _ => {
                    self.throttle.record_failure(req.client_ip, "");
                    return TokenReply::Refused {
                        error: RegistryError::BadCredentials,
                        retry_after: None,
                    };
                }
            },
        };

        let granted: Vec<Scope> = Scope::parse_all(req.all("scope"))
            .into_iter()
            .filter_map(|mut scope| {
                scope.actions = self.acl.grant(&account, &scope);
                (!scope.actions.is_empty()).then_some(scope)
            })
            .collect();
        let issued = self.tokens.issue(&account, &granted, now);
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
