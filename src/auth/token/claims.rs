//! Token claims as distribution reads them, and why a presented token is refused.

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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    /// A string, not an array: distribution 2.8 fails to parse an array.
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    #[serde(default)]
    pub access: Vec<AccessEntry>,
}

impl Claims {
    /// Whether these claims grant every action of `needed`.
    pub fn allows(&self, needed: &Scope) -> bool {
        needed.actions.iter().all(|action| {
            self.access.iter().any(|entry| {
                entry.kind == needed.kind
                    && entry.name == needed.name
                    && entry.actions.iter().any(|a| a == action || a == "*")
            })
        })
    }
}
