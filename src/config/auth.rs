//! `auth`: the token realm, users and the access policy.

use std::collections::BTreeSet;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use super::file;
use super::validate::Validator;
use super::ConfigError;

/// Token authentication settings (files are loaded by `load::load_all`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    pub realm_path: String,
    pub service: String,
    pub issuer: String,
    pub signing_key: PathBuf,
    pub certificate: PathBuf,
    pub expiration: Duration,
    pub refresh_expiration: Duration,
    pub htpasswd: PathBuf,
    pub login_cache_ttl: Duration,
    /// `auth.acl`: the access policy's rules, in order (first match wins).
    pub acl: Vec<Rule>,
    pub failed_logins_per_ip: NonZeroU32,
    pub failed_logins_per_account: NonZeroU32,
}

pub(super) fn auth_settings(
    v: &Validator,
    auth: file::AuthFile,
) -> Result<AuthSettings, ConfigError> {
    let file::AuthFile {
        token,
        users,
        acl,
        failed_logins,
    } = auth;
    let file::TokenFile {
        realm_path,
        service,
        issuer,
        signing_key,
        certificate,
        expiration,
        refresh_expiration,
    } = token;
    let realm_path = realm_path.unwrap_or_else(|| "/jwt/auth".to_string());
    if !realm_path.starts_with('/')
        || realm_path.starts_with("/v2/")
        || realm_path == "/v2"
        || realm_path.contains(['?', '#'])
    {
        return Err(v.invalid(
            "auth.token.realm_path",
            format!("{realm_path:?} must be a path outside /v2/"),
        ));
    }
    for (key, value) in [
        ("auth.token.service", &service),
        ("auth.token.issuer", &issuer),
    ] {
        if value.is_empty() || value.contains(['"', '\\']) {
            return Err(v.invalid(
                key,
                "must be non-empty and contain no quotes or backslashes",
            ));
        }
    }
    let expiration = v.duration(
        "auth.token.expiration",
        expiration.as_deref(),
        Duration::from_secs(300),
    )?;
    if expiration < Duration::from_secs(60) {
        return Err(v.invalid(
            "auth.token.expiration",
            "must be at least 60s (clients need expires_in >= 60)",
        ));
    }
    let refresh_expiration = v.duration(
        "auth.token.refresh_expiration",
        refresh_expiration.as_deref(),
        Duration::from_secs(7 * 24 * 3600),
    )?;
    let rules = acl
        .into_iter()
        .enumerate()
        .map(|(i, rule)| acl_rule(v, i, rule))
        .collect::<Result<Vec<_>, _>>()?;
    let (per_ip, per_account) = match failed_logins {
        Some(file::FailedLoginsFile {
            per_client_ip,
            per_account,
        }) => (per_client_ip, per_account),
        None => (None, None),
    };
    let positive = |key: &str, value: Option<u32>, default: u32| {
        NonZeroU32::new(value.unwrap_or(default))
            .ok_or_else(|| v.invalid(key, "must be at least 1"))
    };
    Ok(AuthSettings {
        realm_path,
        service,
        issuer,
        signing_key: v.file_path(&signing_key),
        certificate: v.file_path(&certificate),
        expiration,
        refresh_expiration,
        htpasswd: v.file_path(&users.htpasswd),
        login_cache_ttl: v.duration(
            "auth.users.cache_ttl",
            users.cache_ttl.as_deref(),
            Duration::from_secs(60),
        )?,
        acl: rules,
        failed_logins_per_ip: positive("auth.failed_logins.per_client_ip", per_ip, 10)?,
        failed_logins_per_account: positive("auth.failed_logins.per_account", per_account, 30)?,
    })
}

pub(super) fn acl_rule(
    v: &Validator,
    index: usize,
    rule: file::AclRuleFile,
) -> Result<Rule, ConfigError> {
    let file::AclRuleFile {
        account,
        kind,
        name,
        actions,
        comment,
    } = rule;
    let key = |field: &str| format!("auth.acl[{index}].{field}");
    let kind = kind.unwrap_or_else(|| "repository".to_string());
    if kind != "repository" && kind != "registry" {
        return Err(v.invalid(
            key("type"),
            format!("{kind:?} is not one of repository, registry"),
        ));
    }
    if name.is_empty() {
        return Err(v.invalid(key("name"), "must not be empty"));
    }
    let actions = Actions::from_list(&actions);
    if let Actions::Only(list) = &actions {
        if let Some(bad) = list
            .iter()
            .find(|a| !matches!(a.as_str(), "pull" | "push" | "delete"))
        {
            return Err(v.invalid(
                key("actions"),
                format!("{bad:?} is not one of pull, push, delete, *"),
            ));
        }
    }
    Ok(Rule {
        account,
        kind,
        name,
        actions,
        comment,
    })
}

/// Actions a rule allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actions {
    /// `["*"]`: every action.
    All,
    /// An explicit list; empty = deny.
    Only(BTreeSet<String>),
}

impl Actions {
    /// As the config file reads an action list: `*` anywhere means every action.
    pub fn from_list<S: AsRef<str>>(actions: &[S]) -> Actions {
        if actions.iter().any(|a| a.as_ref() == "*") {
            Actions::All
        } else {
            Actions::Only(actions.iter().map(|a| a.as_ref().to_string()).collect())
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub account: String,
    /// `repository` (default) or `registry`.
    pub kind: String,
    pub name: String,
    pub actions: Actions,
    pub comment: Option<String>,
}

impl Rule {
    /// A rule as the config file would load it, without a comment.
    pub fn new(account: &str, kind: &str, name: &str, actions: &[&str]) -> Rule {
        Rule {
            account: account.into(),
            kind: kind.into(),
            name: name.into(),
            actions: Actions::from_list(actions),
            comment: None,
        }
    }
}
