//! The config's closed sets: values a key takes from a fixed list. They are serde enums, so
//! the file shapes (`file.rs`) refuse anything else, naming the key, the value and the
//! choices; the runtime types use the same enums.

use schemars::JsonSchema;
use serde::Deserialize;

/// `log.format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    /// One JSON object per line (fields flattened).
    Json,
}

/// `upstream.balance`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Consistent hashing on the repository name: a repository stays on one node.
    #[default]
    RepositoryHash,
    RoundRobin,
}

/// `tls.acme.challenge`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum AcmeChallenge {
    /// `/.well-known/acme-challenge/<token>` on the plain-HTTP listeners.
    #[default]
    #[serde(rename = "http-01")]
    Http01,
    /// The `acme-tls/1` ALPN protocol on the TLS listeners.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

/// What push limits do while Redis does not answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnUnavailable {
    /// Count in this process until Redis is back.
    #[default]
    Local,
    /// Refuse push starts with 503 (pulls are never affected).
    Deny,
}

/// What a push limit is keyed by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitKey {
    /// The token subject; anonymous requests use the client IP.
    #[default]
    Account,
    ClientIp,
}

impl LimitKey {
    /// The limiter key for a request: `account:NAME`, or `ip:ADDR` (also for anonymous).
    pub(crate) fn key_for(self, subject: Option<&str>, client_ip: &str) -> String {
        match (self, subject) {
            (LimitKey::Account, Some(account)) if !account.is_empty() => {
                format!("account:{account}")
            }
            _ => format!("ip:{client_ip}"),
        }
    }
}
