//! The per-request check: does the bearer token grant what the request needs?
//!
//! Every refusal is a 401 with a `WWW-Authenticate: Bearer` challenge naming the realm,
//! the service and the scope to ask for (`error="invalid_token"` when a bad token was
//! sent, `error="insufficient_scope"` when a valid one lacks access), as distribution's
//! own access controller answers.

use std::net::IpAddr;

use super::access::Needed;
use super::token::{TokenAuthority, TokenError, TrustedIssuers};
use super::Auth;
use crate::error::RegistryError;
use crate::registry::Scope;

/// The outcome of checking one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not a path the edge checks.
    Unchecked,
    /// The token grants what is needed; `subject` is its `sub` (`""` for anonymous tokens).
    Allowed { subject: String },
    Denied {
        error: RegistryError,
        challenge_error: Option<&'static str>,
        scopes: Vec<Scope>,
        /// A valid token's `sub` when it lacks the scope (for the access log).
        subject: Option<String>,
    },
}

/// The token in an `Authorization: Bearer …` header value.
pub(crate) fn bearer_token(authorization: Option<&str>) -> Option<&str> {
    let value = authorization?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl Auth {
    /// Checks a request against this realm's tokens only (see [`check`]).
    pub fn check(
        &self,
        needed: &Needed,
        authorization: Option<&str>,
        client: Option<IpAddr>,
    ) -> Verdict {
        let own = Some(&self.tokens);
        check(
            own,
            &TrustedIssuers::default(),
            needed,
            (authorization, client),
        )
    }

    /// `WWW-Authenticate` value for a refusal; `realm` is the absolute token URL.
    pub fn challenge(&self, realm: &str, scopes: &[Scope], error: Option<&str>) -> String {
        challenge(realm, self.tokens.service(), scopes, error)
    }
}

/// Checks a request's bearer token against what it `needed`. A token whose header names a
/// trusted issuer's key is that issuer's to verify; any other goes to `own`, the edge's
/// realm (none in verify-only mode: then it is invalid). `client` is the request's address
/// (after trusted proxies): an access entry granted by a `from:` rule works only from there.
pub fn check(
    own: Option<&TokenAuthority>,
    trusted: &TrustedIssuers,
    needed: &Needed,
    (authorization, client): (Option<&str>, Option<IpAddr>),
) -> Verdict {
    let scopes = match needed {
        Needed::Nothing => return Verdict::Unchecked,
        Needed::AnyToken => Vec::new(),
        Needed::Scopes(scopes) => scopes.clone(),
    };
    let Some(token) = bearer_token(authorization) else {
        return Verdict::Denied {
            error: RegistryError::Unauthorized {
                needed: scopes.clone(),
            },
            challenge_error: None,
            scopes,
            subject: None,
        };
    };
    let verified = trusted.verify(token).unwrap_or_else(|| match own {
        Some(tokens) => tokens.verify(token),
        None => Err(TokenError::Invalid),
    });
    let claims = match verified {
        Ok(claims) => claims,
        Err(e) => {
            return Verdict::Denied {
                error: RegistryError::InvalidToken(e.to_string()),
                challenge_error: Some("invalid_token"),
                scopes,
                subject: None,
            }
        }
    };
    if scopes.iter().all(|scope| claims.allows(scope, client)) {
        Verdict::Allowed {
            subject: claims.sub.clone(),
        }
    } else {
        Verdict::Denied {
            error: RegistryError::Unauthorized {
                needed: scopes.clone(),
            },
            challenge_error: Some("insufficient_scope"),
            scopes,
            subject: Some(claims.sub.clone()),
        }
    }
}

/// `WWW-Authenticate` value for a refusal (distribution's `accesscontroller.go` shape):
/// `realm` is the absolute token URL, `service` the audience to ask for.
pub fn challenge(realm: &str, service: &str, scopes: &[Scope], error: Option<&str>) -> String {
    let mut value = format!("Bearer realm=\"{realm}\",service=\"{service}\"");
    if !scopes.is_empty() {
        let joined: Vec<String> = scopes.iter().map(Scope::to_string).collect();
        value.push_str(&format!(",scope=\"{}\"", joined.join(" ")));
    }
    if let Some(error) = error {
        value.push_str(&format!(",error=\"{error}\""));
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(Some("Basic abc")), None);
        assert_eq!(bearer_token(Some("Bearer ")), None);
        assert_eq!(bearer_token(None), None);
    }
}
