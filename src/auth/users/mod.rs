//! Who may log in at the edge's realm (`auth.users`): the backends, asked in order, and
//! the credential cache in front of them all.
//!
//! - `htpasswd`: bcrypt entries of one file.
//! - `ldap`: a directory, search-then-bind, through a small connection pool; `ldap_entry`:
//!   filters filled with escaped values and search entries read without panicking.
//! - `oidc`: OpenID providers whose ID tokens serve as passwords.
//! - `http`: an external authenticator asked with a JSON POST.
//! - `cache`: correct logins, under an HMAC of user and password.
//! - `trust`: TLS client settings the network backends share.
//!
//! Order (issue 17): a password that is a JWT whose `iss` is a configured OIDC issuer, sent
//! with that entry's `username`, goes to that provider only. Otherwise htpasswd, then LDAP,
//! then the http authenticator: a backend that does not know the user passes to the next,
//! a wrong password for a known user stops there.

pub mod cache;
pub mod htpasswd;
pub mod http;
pub mod ldap;
mod ldap_entry;
pub mod oidc;
pub mod trust;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::auth::identity::{Backend, Identity};
use crate::config::UsersSettings;
use cache::LoginCache;
use htpasswd::{Htpasswd, HtpasswdError, Verdict};
use http::{HttpAnswer, HttpAuthenticator};
use ldap::{Ldap, LdapAnswer, LdapLoadError};
use oidc::{OidcAnswer, OidcProvider};
use trust::TrustError;

/// Why the backends could not be set up; [`UsersError::key`] names the config key.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error(transparent)]
    Htpasswd(#[from] HtpasswdError),
    #[error(transparent)]
    Ldap(#[from] LdapLoadError),
    #[error("{source}")]
    Oidc { index: usize, source: TrustError },
    #[error(transparent)]
    Http(TrustError),
}

impl UsersError {
    /// The config key the problem belongs to.
    pub(crate) fn key(&self) -> String {
        match self {
            UsersError::Htpasswd(_) => "auth.users.htpasswd".into(),
            UsersError::Ldap(LdapLoadError::Trust(_)) => "auth.users.ldap.ca".into(),
            UsersError::Ldap(_) => "auth.users.ldap.bind_password_file".into(),
            UsersError::Oidc { index, .. } => format!("auth.users.oidc[{index}].ca"),
            UsersError::Http(_) => "auth.users.http.ca".into(),
        }
    }
}

/// The result of a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Login {
    Accepted(Identity),
    /// Wrong password, unknown user, or a token that does not verify.
    Refused,
    /// The backend that had to answer could not (down, timing out, answering nonsense).
    Unavailable(Backend),
}

/// The login backends of one configuration.
pub struct Directory {
    htpasswd: Option<Arc<Htpasswd>>,
    ldap: Option<Ldap>,
    oidc: Vec<OidcProvider>,
    http: Option<HttpAuthenticator>,
    cache: LoginCache,
    /// How long the cache trusts a positive answer (also the longest refresh token an
    /// http-authenticated user gets, see [`Directory::refresh_not_after`]).
    cache_ttl: std::time::Duration,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("htpasswd", &self.htpasswd)
            .field("ldap", &self.ldap)
            .field("oidc", &self.oidc)
            .field("http", &self.http)
            .finish()
    }
}

impl Directory {
    /// Reads every file the backends name (htpasswd, bind password, trust roots);
    /// contacts no server.
    pub(crate) fn load(settings: &UsersSettings) -> Result<Directory, UsersError> {
        let htpasswd = match &settings.htpasswd {
            Some(path) => Some(Arc::new(Htpasswd::load(path)?)),
            None => None,
        };
        let ldap = settings.ldap.as_ref().map(Ldap::load).transpose()?;
        let oidc = settings
            .oidc
            .iter()
            .enumerate()
            .map(|(index, s)| {
                OidcProvider::load(s).map_err(|source| UsersError::Oidc { index, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let http = settings
            .http
            .as_ref()
            .map(HttpAuthenticator::load)
            .transpose()
            .map_err(UsersError::Http)?;
        Ok(Directory {
            htpasswd,
            ldap,
            oidc,
            http,
            cache: LoginCache::new(settings.cache_ttl),
            cache_ttl: settings.cache_ttl,
        })
    }

    /// Checks a user and password against the backends, the cache first.
    pub(crate) async fn login(&self, user: &str, password: &str, client_ip: IpAddr) -> Login {
        if let Some(identity) = self.cache.get(user, password) {
            if self.still_known(&identity) {
                return Login::Accepted(identity);
            }
        }
        let login = self.ask(user, password, client_ip).await;
        if let Login::Accepted(identity) = &login {
            self.cache.insert(user, password, identity);
        }
        login
    }

    /// A cached htpasswd login ends when the user leaves the file (reloads rebuild the
    /// directory, and with it the cache, so this only matters within one configuration).
    fn still_known(&self, identity: &Identity) -> bool {
        match identity.backend {
            Backend::Htpasswd => self
                .htpasswd
                .as_ref()
                .is_some_and(|h| h.contains(&identity.account)),
            _ => !identity.expired(SystemTime::now()),
        }
    }

    async fn ask(&self, user: &str, password: &str, client_ip: IpAddr) -> Login {
        if let Some(provider) = self.oidc_for(user, password) {
            return match provider.verify(password).await {
                OidcAnswer::Correct(identity) => Login::Accepted(identity),
                OidcAnswer::Wrong(reason) => {
                    tracing::info!(issuer = provider.issuer(), %reason, "OIDC token refused");
                    Login::Refused
                }
                OidcAnswer::Unavailable(problem) => {
                    tracing::warn!(issuer = provider.issuer(), %problem, "OIDC provider unavailable");
                    Login::Unavailable(Backend::Oidc {
                        issuer: provider.issuer().to_string(),
                    })
                }
            };
        }
        let last_is_htpasswd = self.ldap.is_none() && self.http.is_none();
        if let Some(htpasswd) = &self.htpasswd {
            match htpasswd.verify(user, password, last_is_htpasswd).await {
                Verdict::Correct => return Login::Accepted(Identity::new(user, Backend::Htpasswd)),
                Verdict::Wrong => return Login::Refused,
                Verdict::Unknown => {}
            }
        }
        if let Some(ldap) = &self.ldap {
            match ldap.login(user, password).await {
                LdapAnswer::Correct(account, groups) => {
                    let identity = Identity::new(&account, Backend::Ldap).with_groups(groups);
                    return Login::Accepted(identity);
                }
                LdapAnswer::Wrong => return Login::Refused,
                LdapAnswer::Unknown => {}
                LdapAnswer::Unavailable(problem) => {
                    tracing::warn!(%problem, "LDAP unavailable");
                    return Login::Unavailable(Backend::Ldap);
                }
            }
        }
        if let Some(http) = &self.http {
            return match http.login(user, password, client_ip).await {
                HttpAnswer::Correct(groups) => {
                    Login::Accepted(Identity::new(user, Backend::Http).with_groups(groups))
                }
                HttpAnswer::Wrong => Login::Refused,
                HttpAnswer::Unavailable(problem) => {
                    tracing::warn!(%problem, "http authenticator unavailable");
                    Login::Unavailable(Backend::Http)
                }
            };
        }
        Login::Refused
    }

    /// Whether this user and password go to an OIDC provider (whose login name every job
    /// of that provider shares).
    pub(crate) fn is_oidc_login(&self, user: &str, password: &str) -> bool {
        self.oidc_for(user, password).is_some()
    }

    /// The OIDC provider a login goes to: its `username`, and a JWT from its issuer.
    fn oidc_for(&self, user: &str, password: &str) -> Option<&OidcProvider> {
        let candidates: Vec<&OidcProvider> =
            self.oidc.iter().filter(|p| p.username() == user).collect();
        if candidates.is_empty() {
            return None;
        }
        let issuer = oidc::unverified_issuer(password)?;
        candidates.into_iter().find(|p| p.issuer() == issuer)
    }

    /// Re-checks the identity a refresh token carries with the backend that issued it:
    /// `Accepted` with what is true now, `Refused` when the user is gone (or the backend
    /// is no longer configured). LDAP users are looked up again (groups re-read); the
    /// other backends cannot be asked without the password, so their groups and claims
    /// ride in the refresh token, whose life [`Directory::refresh_not_after`] bounds.
    pub(crate) async fn refresh(&self, identity: Identity) -> Login {
        match &identity.backend {
            Backend::Anonymous => Login::Refused,
            Backend::Htpasswd => match &self.htpasswd {
                Some(h) if h.contains(&identity.account) => Login::Accepted(identity),
                _ => Login::Refused,
            },
            Backend::Ldap => {
                let Some(ldap) = &self.ldap else {
                    return Login::Refused;
                };
                match ldap.lookup(&identity.account).await {
                    LdapAnswer::Correct(_, groups) => Login::Accepted(identity.with_groups(groups)),
                    LdapAnswer::Wrong | LdapAnswer::Unknown => Login::Refused,
                    LdapAnswer::Unavailable(problem) => {
                        tracing::warn!(%problem, "LDAP unavailable");
                        Login::Unavailable(Backend::Ldap)
                    }
                }
            }
            Backend::Http if self.http.is_some() => Login::Accepted(identity),
            Backend::Oidc { issuer } if self.oidc.iter().any(|p| p.issuer() == issuer) => {
                Login::Accepted(identity)
            }
            // A token's refresh is the token store's to decide (`access_tokens::login`).
            Backend::Http | Backend::Oidc { .. } | Backend::AccessToken { .. } => Login::Refused,
        }
    }

    /// The user `account` as the backends know them without a password (what a personal
    /// access token acts as): an htpasswd user, or an LDAP user with the groups LDAP lists
    /// now. `Refused` when neither knows them (OIDC and http users cannot be looked up).
    pub(crate) async fn person(&self, account: &str) -> Login {
        if self.htpasswd.as_ref().is_some_and(|h| h.contains(account)) {
            return Login::Accepted(Identity::new(account, Backend::Htpasswd));
        }
        let Some(ldap) = &self.ldap else {
            return Login::Refused;
        };
        match ldap.lookup(account).await {
            LdapAnswer::Correct(account, groups) => {
                Login::Accepted(Identity::new(&account, Backend::Ldap).with_groups(groups))
            }
            LdapAnswer::Wrong | LdapAnswer::Unknown => Login::Refused,
            LdapAnswer::Unavailable(problem) => {
                tracing::warn!(%problem, "LDAP unavailable");
                Login::Unavailable(Backend::Ldap)
            }
        }
    }

    /// Whether `name` is a login name of a backend: an htpasswd or LDAP user, or an OIDC
    /// entry's `username` (access-token names share no namespace with them). `Err` names
    /// the backend that could not answer.
    pub(crate) async fn knows(&self, name: &str) -> Result<bool, Backend> {
        if self.oidc.iter().any(|p| p.username() == name) {
            return Ok(true);
        }
        match self.person(name).await {
            Login::Accepted(_) => Ok(true),
            Login::Refused => Ok(false),
            Login::Unavailable(backend) => Err(backend),
        }
    }

    /// The latest a refresh token for `identity` may live until (seconds since the epoch),
    /// `None` for no bound beyond `auth.token.refresh_expiration`. An OIDC login's refresh
    /// token ends with the ID token; an http authenticator's after `cache_ttl` (the time
    /// the edge trusts its answer without asking) — neither can be re-checked without the
    /// credential.
    pub(crate) fn refresh_not_after(&self, identity: &Identity, now: SystemTime) -> Option<u64> {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        match identity.backend {
            Backend::Oidc { .. } => Some(identity.not_after.unwrap_or(now)),
            Backend::Http => Some(now + self.cache_ttl.as_secs()),
            // A token's refresh tokens end with it (a refresh re-reads it anyway).
            Backend::AccessToken { .. } => identity.not_after,
            _ => None,
        }
    }
}
