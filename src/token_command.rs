//! `registry-edge token create | list | revoke`: the commands work on the store the
//! configuration names (`auth.access_tokens.state_dir`, or Redis with
//! `shared_state.redis`) while the edge runs; the edge reads it at every login.

use std::time::{Duration, SystemTime};

use crate::auth::access_tokens::record::{unix, TokenKind, TokenRecord, TokenView};
use crate::auth::access_tokens::scopes::ScopePattern;
use crate::auth::access_tokens::store::StoreError;
use crate::auth::access_tokens::{secret, AccessTokens};
use crate::auth::users::Directory;
use crate::load::Loaded;
use crate::shared_state::SharedState;

/// How long a token lives when `--expires` is not given.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(90 * 24 * 3600);

/// Why a command failed; each message names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum TokenCommandError {
    #[error("no auth.access_tokens section: access tokens are off")]
    Off,
    #[error("--{option}: {problem}")]
    Invalid {
        option: &'static str,
        problem: String,
    },
    #[error("--name {0}: a token of that name exists (revoked tokens keep their name)")]
    NameTaken(String),
    #[error("--name {0}: a login backend (htpasswd, LDAP or an OIDC entry) already has a user of that name; token names share one namespace with users")]
    NameIsUser(String),
    #[error("--for-account {0}: no htpasswd or LDAP user of that name")]
    UnknownAccount(String),
    #[error("the {0} login backend cannot be asked right now; retry later")]
    BackendUnavailable(&'static str),
    #[error("no token with the id or name {0:?}")]
    NoSuchToken(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("shared_state.redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("cannot start the command's runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// `token create`'s options, as given.
#[derive(Debug, Clone, Default)]
pub struct NewToken {
    pub name: String,
    pub scopes: Vec<String>,
    /// `30s`, `15m`, `12h`, `90d` or `never`; `None`: [`DEFAULT_EXPIRY`].
    pub expires: Option<String>,
    pub for_account: Option<String>,
    pub from: Vec<String>,
    pub description: Option<String>,
}

/// A created token: what is stored, and the secret (shown once, never stored).
pub struct Created {
    pub record: TokenRecord,
    pub secret: String,
}

/// The store and the login backends of a loaded configuration.
struct Opened<'a> {
    tokens: std::sync::Arc<AccessTokens>,
    users: &'a Directory,
}

fn open(loaded: &Loaded) -> Result<Opened<'_>, TokenCommandError> {
    let auth = loaded.auth.as_ref().ok_or(TokenCommandError::Off)?;
    let local = auth.access_tokens.as_ref().ok_or(TokenCommandError::Off)?;
    let tokens = match &loaded.config.shared_state {
        Some(redis) => std::sync::Arc::new(AccessTokens::shared(SharedState::new(redis.clone())?)),
        None => local.clone(),
    };
    Ok(Opened {
        tokens,
        users: &auth.users,
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, TokenCommandError> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn invalid(option: &'static str, problem: impl Into<String>) -> TokenCommandError {
    TokenCommandError::Invalid {
        option,
        problem: problem.into(),
    }
}

/// `token create`: checks every option, then stores the token.
pub fn create(
    loaded: &Loaded,
    new: NewToken,
    now: SystemTime,
) -> Result<Created, TokenCommandError> {
    let opened = open(loaded)?;
    runtime()?.block_on(create_in(&opened.tokens, opened.users, new, now))
}

/// [`create`] on a store and login backends already open (the benchmarks).
pub async fn create_in(
    tokens: &AccessTokens,
    users: &Directory,
    new: NewToken,
    now: SystemTime,
) -> Result<Created, TokenCommandError> {
    use crate::auth::users::Login;
    let record = checked_record(&new, now)?;
    if let Some(account) = &new.for_account {
        match users.person(account).await {
            Login::Accepted(_) => {}
            Login::Refused => return Err(TokenCommandError::UnknownAccount(account.clone())),
            Login::Unavailable(b) => return Err(TokenCommandError::BackendUnavailable(b.name())),
        }
    }
    match users.knows(&new.name).await {
        Ok(false) => {}
        Ok(true) => return Err(TokenCommandError::NameIsUser(new.name.clone())),
        Err(backend) => return Err(TokenCommandError::BackendUnavailable(backend.name())),
    }
    let secret = secret::new_secret().map_err(StoreError::from)?;
    let key = tokens.hash_key().await?;
    let record = TokenRecord {
        hash: secret::hash(key, &secret),
        ..record
    };
    if !tokens.store().insert(record.clone()).await? {
        return Err(TokenCommandError::NameTaken(new.name.clone()));
    }
    Ok(Created { record, secret })
}

/// The record `new` describes (without its hash), every option checked.
fn checked_record(new: &NewToken, now: SystemTime) -> Result<TokenRecord, TokenCommandError> {
    check_name(&new.name).map_err(|p| invalid("name", p))?;
    if new.scopes.is_empty() {
        return Err(invalid(
            "scope",
            "at least one is needed, e.g. --scope 'team/app/**:pull'",
        ));
    }
    let scopes = new
        .scopes
        .iter()
        .map(|s| ScopePattern::parse(s).map(|p| p.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|p| invalid("scope", p))?;
    let from = new
        .from
        .iter()
        .map(|n| crate::config::parse_network(n).map(|net| net.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|p| invalid("from", p))?;
    let expires = match new.expires.as_deref() {
        Some("never") => None,
        None => Some(unix(now) + DEFAULT_EXPIRY.as_secs()),
        Some(text) => Some(unix(now) + lifetime(text).map_err(|p| invalid("expires", p))?),
    };
    let (kind, account) = match &new.for_account {
        Some(account) if !account.is_empty() => (TokenKind::Personal, account.clone()),
        Some(_) => return Err(invalid("for-account", "must name a user")),
        None => (TokenKind::Robot, new.name.clone()),
    };
    Ok(TokenRecord {
        id: secret::new_id().map_err(StoreError::from)?,
        name: new.name.clone(),
        kind,
        account,
        scopes,
        description: new.description.clone(),
        from,
        created: unix(now),
        expires,
        hash: String::new(),
        last_used_at: None,
        last_used_from: None,
        revoked: false,
    })
}

/// The longest `--expires` short of `never`: 100 years.
const MAX_EXPIRY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// An `--expires` duration in whole seconds: at least 1 s, at most [`MAX_EXPIRY`].
fn lifetime(text: &str) -> Result<u64, String> {
    let shape = || format!("{text:?} is not a duration (30s, 15m, 12h, 90d) or \"never\"");
    let duration = humantime::parse_duration(text).map_err(|_| shape())?;
    if duration < Duration::from_secs(1) {
        return Err(format!("{text:?}: a token must live at least 1s"));
    }
    if duration > MAX_EXPIRY {
        return Err(format!(
            "{text:?}: at most 100 years; use \"never\" for no expiry"
        ));
    }
    Ok(duration.as_secs())
}

/// A token name: what `docker login -u` sends, 1–64 of letters, digits, `.`, `_`, `-`,
/// starting with a letter or digit (no `:`, which ends the user in Basic credentials).
fn check_name(name: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    match ok {
        true => Ok(()),
        false => Err(format!(
            "{name:?}: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )),
    }
}

/// `token list`: every token, by name.
pub fn list(loaded: &Loaded) -> Result<Vec<TokenView>, TokenCommandError> {
    let opened = open(loaded)?;
    let records = runtime()?.block_on(opened.tokens.store().all())?;
    Ok(records.iter().map(TokenRecord::view).collect())
}

/// `token revoke ID|NAME`: the revoked token's name.
pub fn revoke(loaded: &Loaded, id_or_name: &str) -> Result<String, TokenCommandError> {
    let opened = open(loaded)?;
    runtime()?
        .block_on(opened.tokens.store().revoke(id_or_name))?
        .ok_or_else(|| TokenCommandError::NoSuchToken(id_or_name.to_string()))
}

/// `token list`'s table: one line per token.
pub fn table(views: &[TokenView]) -> String {
    let mut out = String::from("ID  NAME  KIND  ACCOUNT  EXPIRES  LAST USED  STATE  SCOPES\n");
    for v in views {
        let state = match (v.revoked, v.expired) {
            (true, _) => "revoked",
            (false, true) => "expired",
            (false, false) => "active",
        };
        let last = match (&v.last_used_at, &v.last_used_from) {
            (Some(at), Some(from)) => format!("{at} from {from}"),
            (Some(at), None) => at.clone(),
            _ => "never".into(),
        };
        let kind = match v.kind {
            TokenKind::Robot => "robot",
            TokenKind::Personal => "personal",
        };
        out.push_str(&format!(
            "{}  {}  {kind}  {}  {}  {last}  {state}  {}\n",
            v.id,
            v.name,
            v.account,
            v.expires.as_deref().unwrap_or("never"),
            v.scopes.join(" "),
        ));
    }
    out
}
