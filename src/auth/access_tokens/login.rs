//! Logging in at the realm with an access token (`docker login -u NAME -p rgt_…`), and
//! refreshing a refresh token issued to one.
//!
//! A robot token logs in as itself; a personal token as the user it names, looked up
//! again at every login and refresh (an LDAP user's groups re-read, a user who left
//! refused), so the ACL's grant is always today's.

use std::net::IpAddr;
use std::time::SystemTime;

use super::record::{TokenKind, TokenRecord};
use super::scopes::{ScopePattern, TokenGrant};
use super::{AccessTokens, TokenCheck};
use crate::auth::identity::{Backend, Identity};
use crate::auth::users::{Directory, Login};

/// A login as `name` with the token secret `secret` from `client`.
pub(crate) async fn login(
    tokens: &AccessTokens,
    users: &Directory,
    (name, secret): (&str, &str),
    client: IpAddr,
    now: SystemTime,
) -> Login {
    let checked = tokens.check(name, secret, client, now).await;
    log_in(tokens, users, (name, checked), client, now).await
}

/// A refresh of a refresh token issued to the token `name` with id `id`: the token must
/// still be good (a revoke or expiry ends its refresh tokens at once).
pub(crate) async fn refresh(
    tokens: &AccessTokens,
    users: &Directory,
    (name, id): (&str, &str),
    client: IpAddr,
    now: SystemTime,
) -> Login {
    let checked = tokens.recheck(name, id, client, now).await;
    log_in(tokens, users, (name, checked), client, now).await
}

/// A login a backend accepted, refused when its account is also a token's name: a user
/// added after the token (or one `token create` could not see, an http authenticator's)
/// would otherwise be the robot's account, with its exemptions and budgets. While the
/// store cannot be asked the login stands (logged).
pub(crate) async fn not_a_token_name(tokens: Option<&AccessTokens>, login: Login) -> Login {
    let (Some(tokens), Login::Accepted(identity)) = (tokens, &login) else {
        return login;
    };
    match tokens.store().get(&identity.account).await {
        Ok(None) => login,
        Ok(Some(_)) => {
            tracing::warn!(account = %identity.account, backend = identity.backend.name(), "login refused: an access token has this name; rename the user or the token");
            Login::Refused
        }
        Err(e) => {
            tracing::warn!(error = %crate::report::chain(&e), "access token store unavailable: a login was not checked against token names");
            login
        }
    }
}

/// The login a checked token makes; a use is recorded for an accepted one.
async fn log_in(
    tokens: &AccessTokens,
    users: &Directory,
    (name, checked): (&str, TokenCheck),
    client: IpAddr,
    now: SystemTime,
) -> Login {
    let record = match checked {
        TokenCheck::Valid(record) => record,
        TokenCheck::Refused(reason) => {
            tracing::info!(token = %name, %client, %reason, "access token refused");
            return Login::Refused;
        }
        TokenCheck::Unavailable(e) => {
            tracing::warn!(error = %crate::report::chain(&e), "access token store unavailable");
            return Login::Unavailable(Backend::AccessToken {
                name: String::new(),
                id: String::new(),
            });
        }
    };
    let login = identity(users, &record).await;
    if let Login::Accepted(_) = &login {
        tokens.used(&record, client, now).await;
    }
    login
}

/// The identity a good token logs in as.
async fn identity(users: &Directory, record: &TokenRecord) -> Login {
    let mut identity = match record.kind {
        TokenKind::Robot => Identity::new(&record.name, Backend::Anonymous),
        TokenKind::Personal => match users.person(&record.account).await {
            Login::Accepted(person) => person,
            Login::Refused => {
                tracing::info!(token = %record.name, account = %record.account, "personal access token refused: its user is gone");
                return Login::Refused;
            }
            unavailable @ Login::Unavailable(_) => return unavailable,
        },
    };
    identity.backend = Backend::AccessToken {
        name: record.name.clone(),
        id: record.id.clone(),
    };
    identity.not_after = record.expires;
    identity.token = Some(grant(record));
    Login::Accepted(identity)
}

/// The grant of a stored token (its scopes were checked at `create`; one that no longer
/// parses grants nothing).
fn grant(record: &TokenRecord) -> TokenGrant {
    TokenGrant {
        robot: record.kind == TokenKind::Robot,
        scopes: record
            .scopes
            .iter()
            .filter_map(|s| ScopePattern::parse(s).ok())
            .collect(),
        from: record.from.iter().filter_map(|n| n.parse().ok()).collect(),
    }
}
