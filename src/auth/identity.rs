//! Who a login proved to be: the account, the groups and claims the backend reported,
//! and which backend said so. The ACL matches on it; refresh tokens carry it.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::auth::access_tokens::scopes::TokenGrant;

/// The backend that authenticated a login, as refresh tokens name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum Backend {
    /// Not logged in.
    Anonymous,
    Htpasswd,
    Ldap,
    Http,
    /// An OpenID provider, by its issuer URL.
    Oidc {
        issuer: String,
    },
    /// An access token (`auth.access_tokens`), by its name and id: a refresh finds it
    /// again, and a token re-created under the same name is another one.
    #[serde(rename = "access_token")]
    AccessToken {
        name: String,
        id: String,
    },
}

impl Backend {
    /// The name used in logs and errors (`htpasswd`, `ldap`, `http`, `oidc`).
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Backend::Anonymous => "anonymous",
            Backend::Htpasswd => "htpasswd",
            Backend::Ldap => "ldap",
            Backend::Http => "http",
            Backend::Oidc { .. } => "oidc",
            Backend::AccessToken { .. } => "access_token",
        }
    }
}

/// An authenticated (or anonymous) identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The token subject; `""` = anonymous.
    #[serde(skip)]
    pub account: String,
    #[serde(flatten)]
    pub backend: Backend,
    /// Groups the backend reported (LDAP groups, an OIDC `groups_claim`, the http
    /// authenticator's `groups`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// An OIDC token's claims with string values (what ACL `claims` and `${claims.NAME}` see).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<String, String>,
    /// When the proof stops being good (an OIDC token's `exp`), in seconds since the epoch:
    /// cache entries and refresh tokens end there too.
    #[serde(skip)]
    pub not_after: Option<u64>,
    /// An access token's scopes, which bound (personal) or make (robot) the grant. Not
    /// carried in refresh tokens: a refresh reads the token again.
    #[serde(skip)]
    pub token: Option<TokenGrant>,
}

impl Identity {
    pub(crate) fn anonymous() -> Identity {
        Identity::new("", Backend::Anonymous)
    }

    /// An identity without groups or claims.
    pub fn new(account: &str, backend: Backend) -> Identity {
        Identity {
            account: account.to_string(),
            backend,
            groups: Vec::new(),
            claims: BTreeMap::new(),
            not_after: None,
            token: None,
        }
    }

    pub(crate) fn with_groups(mut self, groups: Vec<String>) -> Identity {
        self.groups = groups;
        self
    }

    /// Whether the proof has run out at `now`.
    pub(crate) fn expired(&self, now: SystemTime) -> bool {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        self.not_after.is_some_and(|end| end <= now)
    }
}
