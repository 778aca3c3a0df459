//! One access token as the store keeps it, and as `token list --json` shows it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A robot token is its own account; a personal one acts as a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Robot,
    Personal,
}

/// A stored token. Times are seconds since the Unix epoch. `hash` is the secret's keyed
/// hash (`secret::hash`); the secret itself is never stored, and `Debug` leaves the hash out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    /// The login name (`docker login -u NAME`).
    pub name: String,
    pub kind: TokenKind,
    /// The registry token's subject: the token's name (robot) or the user (personal).
    pub account: String,
    /// As written at `create` (`team/app/**:pull,push`).
    pub scopes: Vec<String>,
    pub description: Option<String>,
    /// Networks logins must come from (CIDR text); empty: anywhere.
    pub from: Vec<String>,
    pub created: u64,
    /// `None`: never expires.
    pub expires: Option<u64>,
    pub hash: String,
    pub last_used_at: Option<u64>,
    pub last_used_from: Option<String>,
    pub revoked: bool,
}

impl std::fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("account", &self.account)
            .field("scopes", &self.scopes)
            .field("from", &self.from)
            .field("expires", &self.expires)
            .field("revoked", &self.revoked)
            .finish_non_exhaustive()
    }
}

impl TokenRecord {
    /// Whether the token has expired at `now`.
    pub(crate) fn expired(&self, now: SystemTime) -> bool {
        self.expires.is_some_and(|end| end <= unix(now))
    }

    /// What `token list --json` shows: no hash, times in RFC 3339.
    pub fn view(&self) -> TokenView {
        TokenView {
            id: self.id.clone(),
            name: self.name.clone(),
            kind: self.kind,
            account: self.account.clone(),
            scopes: self.scopes.clone(),
            description: self.description.clone(),
            from: self.from.clone(),
            created: Some(rfc3339(self.created)),
            expires: self.expires.map(rfc3339),
            last_used_at: self.last_used_at.map(rfc3339),
            last_used_from: self.last_used_from.clone(),
            revoked: self.revoked,
            expired: self.expired(SystemTime::now()),
        }
    }
}

/// A token in `token list --json` (the contract: times RFC 3339, `null` when none).
#[derive(Debug, Clone, Serialize)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub kind: TokenKind,
    pub account: String,
    pub scopes: Vec<String>,
    pub description: Option<String>,
    pub from: Vec<String>,
    pub created: Option<String>,
    pub expires: Option<String>,
    pub last_used_at: Option<String>,
    pub last_used_from: Option<String>,
    pub revoked: bool,
    /// Past its `expires` now (a convenience beside the contract's fields).
    pub expired: bool,
}

/// Seconds since the Unix epoch.
pub(crate) fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// RFC 3339 (UTC); times past year 9999 (which RFC 3339 cannot write) as 9999's last second.
fn rfc3339(seconds: u64) -> String {
    const LAST: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let time = UNIX_EPOCH + Duration::from_secs(seconds.min(LAST));
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn far_times_are_written_not_panicked_on() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59Z");
    }
}
