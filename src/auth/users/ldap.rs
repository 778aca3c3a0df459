//! Users from a directory (`auth.users.ldap`): bind as the service account, search the
//! user (exactly one entry), read their groups, then bind as the user's DN with the
//! given password — the usual "search then bind" of nginx-auth-ldap, docker_auth and
//! Harbor.
//!
//! `{user}` and `{dn}` are escaped per RFC 4515 §3 before they enter a filter
//! (`ldap3::ldap_escape`), so a name like `*)(uid=*` matches nobody. Empty passwords are
//! refused before any bind: RFC 4513 §5.1.2 makes a simple bind with a DN and no password
//! an *unauthenticated* bind that many servers accept. Connections come from a small
//! pool (deadpool); any error discards the connection rather than return it.

use std::path::PathBuf;

use deadpool::managed::{self, Metrics, Object, Pool, RecycleError, RecycleResult};
use ldap3::{ldap_escape, LdapConnAsync, LdapConnSettings, LdapError, Scope};

use super::ldap_entry::{fill, naming_attribute, parse_entry};
use super::trust::{client_config, TrustError};
use crate::config::LdapSettings;

/// Connections kept open to the directory.
const POOL_SIZE: usize = 8;

/// LDAP result codes (RFC 4511 §4.1.9) that mean "the server cannot answer now", not "no".
const BUSY: [u32; 3] = [51, 52, 80];
/// invalidCredentials.
const INVALID_CREDENTIALS: u32 = 49;

/// Why the LDAP backend could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LdapLoadError {
    #[error("{}: cannot read the bind password: {source}", path.display())]
    Password {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: the bind password file is empty", path.display())]
    EmptyPassword { path: PathBuf },
    #[error("{}: the bind password file must hold one line (the password)", path.display())]
    SeveralLines { path: PathBuf },
    #[error(transparent)]
    Trust(#[from] TrustError),
}

/// What the directory said about a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LdapAnswer {
    /// The password is the user's: the account as the directory spells it, and its groups.
    Correct(String, Vec<String>),
    Wrong,
    /// No entry matched the user filter.
    Unknown,
    /// The directory could not be asked (down, timing out, refusing the service account).
    Unavailable(String),
}

struct Manager {
    url: String,
    settings: LdapConnSettings,
}

impl managed::Manager for Manager {
    type Type = ldap3::Ldap;
    type Error = LdapError;

    async fn create(&self) -> Result<ldap3::Ldap, LdapError> {
        let (conn, ldap) = LdapConnAsync::with_settings(self.settings.clone(), &self.url).await?;
        ldap3::drive!(conn);
        Ok(ldap)
    }

    async fn recycle(&self, ldap: &mut ldap3::Ldap, _: &Metrics) -> RecycleResult<LdapError> {
        if ldap.is_closed() {
            return Err(RecycleError::message("connection closed"));
        }
        Ok(())
    }
}

/// The directory and its connection pool.
pub(crate) struct Ldap {
    settings: LdapSettings,
    bind_password: Option<String>,
    pool: Pool<Manager>,
}

impl std::fmt::Debug for Ldap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ldap")
            .field("url", &self.settings.url)
            .finish()
    }
}

impl Ldap {
    /// Reads the bind password and the trust roots; contacts nothing.
    pub(crate) fn load(settings: &LdapSettings) -> Result<Ldap, LdapLoadError> {
        let bind_password = match &settings.bind_password_file {
            None => None,
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| LdapLoadError::Password {
                        path: path.clone(),
                        source,
                    })?;
                let password = text.trim_end_matches(['\r', '\n']).to_string();
                if password.is_empty() {
                    return Err(LdapLoadError::EmptyPassword { path: path.clone() });
                }
                if password.contains(['\r', '\n']) {
                    return Err(LdapLoadError::SeveralLines { path: path.clone() });
                }
                Some(password)
            }
        };
        let tls = client_config(settings.ca.as_deref())?;
        let conn_settings = LdapConnSettings::new()
            .set_conn_timeout(settings.timeout)
            .set_starttls(settings.start_tls)
            .set_config(tls);
        let manager = Manager {
            url: settings.url.clone(),
            settings: conn_settings,
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .build()
            .map_err(|e| TrustError {
                path: PathBuf::new(),
                reason: format!("cannot build the LDAP pool: {}", crate::report::chain(&e)),
            })?;
        Ok(Ldap {
            settings: settings.clone(),
            bind_password,
            pool,
        })
    }

    /// Checks `password` for `user`.
    pub(crate) async fn login(&self, user: &str, password: &str) -> LdapAnswer {
        if password.is_empty() {
            return LdapAnswer::Wrong;
        }
        self.exchange(user, Some(password)).await
    }

    /// Whether `user` still exists, and their groups now (refresh tokens).
    pub(crate) async fn lookup(&self, user: &str) -> LdapAnswer {
        self.exchange(user, None).await
    }

    /// One login's directory work on a pooled connection, within `timeout`. A connection
    /// whose exchange failed or ran out of time is discarded, never handed out again with
    /// an operation still outstanding.
    async fn exchange(&self, user: &str, password: Option<&str>) -> LdapAnswer {
        let timeout = self.settings.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let late = || {
            LdapAnswer::Unavailable(format!(
                "{} did not answer within {}",
                self.settings.url,
                humantime::format_duration(timeout)
            ))
        };
        let mut conn = match tokio::time::timeout_at(deadline, self.pool.get()).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                return LdapAnswer::Unavailable(format!(
                    "cannot connect to {}: {}",
                    self.settings.url,
                    crate::report::chain(&e)
                ))
            }
            Err(_) => return late(),
        };
        conn.with_timeout(timeout);
        let work = self.search_and_bind(&mut conn, user, password);
        match tokio::time::timeout_at(deadline, work).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                drop(Object::take(conn));
                LdapAnswer::Unavailable(format!(
                    "{}: {}",
                    self.settings.url,
                    crate::report::chain(&e)
                ))
            }
            Err(_) => {
                drop(Object::take(conn));
                late()
            }
        }
    }

    /// Service bind, user search, groups, then (with a password) the user's own bind.
    async fn search_and_bind(
        &self,
        ldap: &mut ldap3::Ldap,
        user: &str,
        password: Option<&str>,
    ) -> Result<LdapAnswer, LdapError> {
        let s = &self.settings;
        let bind = match (&s.bind_dn, &self.bind_password) {
            (Some(dn), Some(pw)) => ldap.simple_bind(dn, pw).await?,
            _ => ldap.simple_bind("", "").await?,
        };
        if bind.rc != 0 {
            return Ok(LdapAnswer::Unavailable(format!(
                "the service account's bind was refused (LDAP result {}): check bind_dn and \
                 bind_password_file",
                bind.rc
            )));
        }
        let escaped_user = ldap_escape(user);
        let filter = fill(&s.user_filter, &[("{user}", &escaped_user)]);
        let naming = naming_attribute(&s.user_filter);
        let attrs = naming.map_or_else(|| vec!["1.1"], |a| vec![a]);
        let (entries, result) = ldap
            .search(&s.user_base, Scope::Subtree, &filter, attrs)
            .await?
            .success()?;
        if BUSY.contains(&result.rc) {
            return Ok(LdapAnswer::Unavailable(format!(
                "LDAP result {}",
                result.rc
            )));
        }
        let entry = match entries.as_slice() {
            [] => return Ok(LdapAnswer::Unknown),
            [entry] => match parse_entry(entry) {
                Some(entry) => entry,
                None => return Ok(LdapAnswer::Unavailable("a malformed search entry".into())),
            },
            more => {
                tracing::warn!(
                    entries = more.len(),
                    "auth.users.ldap.user_filter matched more than one entry; login refused"
                );
                return Ok(LdapAnswer::Wrong);
            }
        };
        // The directory's spelling of the name (`Alice` logs in as `alice`), so the ACL,
        // limits and logs see one account however it was typed.
        let account = naming
            .and_then(|a| entry.values(a).next())
            .unwrap_or(user)
            .to_string();
        let groups = self.groups(ldap, &entry.dn, &escaped_user).await?;
        let Some(password) = password else {
            return Ok(LdapAnswer::Correct(account, groups));
        };
        let bound = ldap.simple_bind(&entry.dn, password).await?;
        Ok(match bound.rc {
            0 => LdapAnswer::Correct(account, groups),
            rc if BUSY.contains(&rc) => LdapAnswer::Unavailable(format!("LDAP result {rc}")),
            INVALID_CREDENTIALS => LdapAnswer::Wrong,
            // Locked, expired or otherwise refused accounts: a "no", not an outage.
            _ => LdapAnswer::Wrong,
        })
    }

    async fn groups(
        &self,
        ldap: &mut ldap3::Ldap,
        dn: &str,
        escaped_user: &str,
    ) -> Result<Vec<String>, LdapError> {
        let s = &self.settings;
        let Some(base) = &s.group_base else {
            return Ok(Vec::new());
        };
        let escaped_dn = ldap_escape(dn);
        let filter = fill(
            &s.group_filter,
            &[("{dn}", &escaped_dn), ("{user}", escaped_user)],
        );
        let (entries, _) = ldap
            .search(
                base,
                Scope::Subtree,
                &filter,
                vec![s.group_attribute.as_str()],
            )
            .await?
            .success()?;
        let mut groups: Vec<String> = entries
            .iter()
            .filter_map(parse_entry)
            .flat_map(|entry| {
                entry
                    .values(&s.group_attribute)
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        groups.sort();
        groups.dedup();
        Ok(groups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn loading_contacts_no_server() {
        // The pool is built without touching the network.
        let settings = LdapSettings {
            url: "ldap://127.0.0.1:1".into(),
            start_tls: false,
            ca: None,
            bind_dn: None,
            bind_password_file: None,
            user_base: "ou=people,dc=example,dc=com".into(),
            user_filter: "(uid={user})".into(),
            group_base: None,
            group_filter: "(member={dn})".into(),
            group_attribute: "cn".into(),
            timeout: Duration::from_secs(1),
        };
        assert!(Ldap::load(&settings).is_ok());
    }
}
