//! Token claims as distribution reads them, and why a presented token is refused.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use ipnet::IpNet;

use jsonwebtoken::{Algorithm, DecodingKey, TokenData, Validation};
use serde::{Deserialize, Serialize};

use crate::registry::Scope;

/// Why a presented token was refused. Never carries the token itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed or not signed by this registry's key")]
    Invalid,
    #[error("token has expired")]
    Expired,
    #[error("token was issued for another service or by another issuer")]
    WrongAudience,
}

/// One `access` entry of a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
    /// Networks (CIDR text) the entry may be used from, when an ACL rule with `from:`
    /// granted it; empty: anywhere. Not in the token spec: distribution ignores it, the
    /// edge checks it on every request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<String>,
}

impl AccessEntry {
    /// The entry granting `scope`, usable only from `from` (empty: anywhere).
    pub(crate) fn new(scope: &Scope, from: &[IpNet]) -> AccessEntry {
        AccessEntry {
            kind: scope.kind.clone(),
            name: scope.name.clone(),
            actions: scope.actions.iter().cloned().collect(),
            from: from.iter().map(IpNet::to_string).collect(),
        }
    }

    /// Whether a request from `client` may use the entry.
    fn usable_from(&self, client: Option<IpAddr>) -> bool {
        if self.from.is_empty() {
            return true;
        }
        let Some(client) = client else {
            return false;
        };
        let networks: Vec<IpNet> = self.from.iter().filter_map(|n| n.parse().ok()).collect();
        crate::auth::acl::in_networks(&networks, client)
    }
}

/// A token's claims. Only `iss`, `aud` and `exp` are required, as distribution requires
/// them: GitLab leaves `sub` out of deploy-token and anonymous tokens (it drops empty
/// fields), and other issuers may leave out `nbf`, `iat` or `jti`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The account; `""` (or absent) = anonymous.
    #[serde(default)]
    pub sub: String,
    /// A string, not an array: distribution 2.8 fails to parse an array.
    pub aud: String,
    pub exp: u64,
    #[serde(default)]
    pub nbf: u64,
    #[serde(default)]
    pub iat: u64,
    #[serde(default)]
    pub jti: String,
    #[serde(default)]
    pub access: Vec<AccessEntry>,
    /// Refresh tokens only: the login backend and the groups and claims it reported, so a
    /// refresh applies the same ACL as the login. Never set in registry tokens.
    #[serde(
        default,
        rename = "registry_edge",
        skip_serializing_if = "Option::is_none"
    )]
    pub identity: Option<crate::auth::identity::Identity>,
}

impl Claims {
    /// Whether these claims grant every action of `needed` to a request from `client`.
    pub(crate) fn allows(&self, needed: &Scope, client: Option<IpAddr>) -> bool {
        needed.actions.iter().all(|action| {
            self.access.iter().any(|entry| {
                entry.kind == needed.kind
                    && entry.name == needed.name
                    && entry.actions.iter().any(|a| a == action || a == "*")
                    && entry.usable_from(client)
            })
        })
    }
}

/// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds, wherever the edge checks a
/// token's times: its own tokens and refresh tokens, trusted issuers' tokens and OIDC ID
/// tokens. distribution allows the same 60 s (`Leeway` in `registry/auth/token/token.go`),
/// so a token the registry accepts is never refused at the edge, and instances of a fleet
/// whose clocks differ by seconds accept each other's tokens.
pub(crate) const LEEWAY: u64 = 60;

/// Decodes `token` and checks its signature with `key` (`algorithm` only, so `alg: none`
/// and HS* with a public key as secret fail), its issuer, audience, `exp` (required) and
/// `nbf`, both with `leeway` seconds. The caller checks that the header names `key`.
pub(super) fn decode(
    token: &str,
    key: &DecodingKey,
    algorithm: Algorithm,
    (issuer, service): (&str, &str),
    leeway: u64,
) -> Result<TokenData<Claims>, TokenError> {
    let mut validation = Validation::new(algorithm);
    validation.leeway = leeway;
    validation.validate_nbf = true;
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[service]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    let data =
        jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature
            | jsonwebtoken::errors::ErrorKind::ImmatureSignature => TokenError::Expired,
            jsonwebtoken::errors::ErrorKind::InvalidAudience
            | jsonwebtoken::errors::ErrorKind::InvalidIssuer => TokenError::WrongAudience,
            _ => TokenError::Invalid,
        })?;
    // distribution reads the times as int64: a larger value is one the registry refuses
    // (or reads as negative), so the edge must not take it as "never expires".
    let int64 = |t: u64| i64::try_from(t).is_ok();
    if ![data.claims.exp, data.claims.nbf, data.claims.iat]
        .into_iter()
        .all(int64)
    {
        return Err(TokenError::Invalid);
    }
    Ok(data)
}

/// The time checks [`decode`] applied at first verification, for a cached token.
pub(super) fn still_valid(claims: &Claims, now: SystemTime, leeway: u64) -> Result<(), TokenError> {
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    if claims.exp.saturating_add(leeway) < now || claims.nbf > now + leeway {
        return Err(TokenError::Expired);
    }
    Ok(())
}
