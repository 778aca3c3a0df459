//! `auth.users`: who may log in at the edge's realm — an htpasswd file, a directory
//! (LDAP), OpenID providers whose ID tokens serve as passwords, and an external
//! authenticator. Files are read by `load::load_all`; nothing here contacts a server.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use super::error::ConfigError;
use super::file;
use super::validate::Validator;

/// The login backends, asked in the order htpasswd → LDAP → http (OIDC by the token's
/// `iss`), and the credential cache they share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsersSettings {
    pub htpasswd: Option<PathBuf>,
    /// How long a correct login is answered from the cache; zero disables it.
    pub cache_ttl: Duration,
    pub ldap: Option<LdapSettings>,
    pub oidc: Vec<OidcSettings>,
    pub http: Option<HttpAuthenticatorSettings>,
}

impl UsersSettings {
    /// Users of one htpasswd file only, as `auth.users: { htpasswd, cache_ttl }` reads.
    pub fn htpasswd_only(path: PathBuf, cache_ttl: Duration) -> UsersSettings {
        UsersSettings {
            htpasswd: Some(path),
            cache_ttl,
            ldap: None,
            oidc: Vec::new(),
            http: None,
        }
    }
}

/// `auth.users.ldap`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapSettings {
    /// `ldap://…` or `ldaps://…`, as written.
    pub url: String,
    pub start_tls: bool,
    pub ca: Option<PathBuf>,
    pub bind_dn: Option<String>,
    pub bind_password_file: Option<PathBuf>,
    pub user_base: String,
    /// Holds `{user}`.
    pub user_filter: String,
    pub group_base: Option<String>,
    /// Holds `{dn}` and/or `{user}`.
    pub group_filter: String,
    pub group_attribute: String,
    pub timeout: Duration,
}

/// `auth.users.oidc[]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcSettings {
    /// Exactly as tokens carry it in `iss` (discovery is read below it).
    pub issuer: String,
    pub audience: String,
    pub username: String,
    pub account_claim: String,
    pub groups_claim: Option<String>,
    pub ca: Option<PathBuf>,
}

/// `auth.users.http`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAuthenticatorSettings {
    pub url: String,
    pub timeout: Duration,
    pub ca: Option<PathBuf>,
}

pub(super) fn users_settings(
    v: &Validator,
    users: file::UsersFile,
) -> Result<UsersSettings, ConfigError> {
    let file::UsersFile {
        htpasswd,
        cache_ttl,
        ldap,
        oidc,
        http,
    } = users;
    if htpasswd.is_none() && ldap.is_none() && oidc.is_empty() && http.is_none() {
        return Err(v.invalid(
            "auth.users",
            "names no backend: set htpasswd, ldap, oidc or http",
        ));
    }
    let mut issuers = BTreeSet::new();
    let oidc = oidc
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            let entry = oidc_settings(v, i, entry)?;
            if !issuers.insert(entry.issuer.clone()) {
                return Err(v.invalid(
                    format!("auth.users.oidc[{i}].issuer"),
                    format!("{:?} is listed twice", entry.issuer),
                ));
            }
            Ok(entry)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(UsersSettings {
        htpasswd: htpasswd.map(|p| v.file_path(&p)),
        cache_ttl: v.duration(
            "auth.users.cache_ttl",
            cache_ttl.as_deref(),
            Duration::from_secs(60),
        )?,
        ldap: ldap.map(|l| ldap_settings(v, l)).transpose()?,
        oidc,
        http: http.map(|h| http_settings(v, h)).transpose()?,
    })
}

fn ldap_settings(v: &Validator, ldap: file::LdapFile) -> Result<LdapSettings, ConfigError> {
    let file::LdapFile {
        url,
        start_tls,
        ca,
        bind_dn,
        bind_password_file,
        user_base,
        user_filter,
        group_base,
        group_filter,
        group_attribute,
        timeout,
    } = ldap;
    check_ldap_url(v, &url, start_tls)?;
    if bind_dn.is_some() != bind_password_file.is_some() {
        return Err(v.invalid(
            "auth.users.ldap.bind_password_file",
            "bind_dn and bind_password_file go together (the password never sits in the YAML)",
        ));
    }
    let group_filter = group_filter.unwrap_or_else(|| "(member={dn})".to_string());
    check_ldap_filters(v, &user_filter, &group_filter)?;
    if user_base.is_empty() {
        return Err(v.invalid("auth.users.ldap.user_base", "must not be empty"));
    }
    Ok(LdapSettings {
        url,
        start_tls,
        ca: ca.map(|p| v.file_path(&p)),
        bind_dn,
        bind_password_file: bind_password_file.map(|p| v.file_path(&p)),
        user_base,
        user_filter,
        group_base,
        group_filter,
        group_attribute: group_attribute.unwrap_or_else(|| "cn".to_string()),
        timeout: v.nonzero_duration(
            "auth.users.ldap.timeout",
            timeout.as_deref(),
            Duration::from_secs(5),
        )?,
    })
}

/// `ldap://host[:port]` or `ldaps://host[:port]`; StartTLS only on `ldap://`.
fn check_ldap_url(v: &Validator, url: &str, start_tls: bool) -> Result<(), ConfigError> {
    let parsed = url::Url::parse(url).ok().filter(|u| u.host_str().is_some());
    let scheme = parsed.as_ref().map(|u| u.scheme().to_string());
    match scheme.as_deref() {
        Some("ldap") | Some("ldaps") => {}
        _ => {
            return Err(v.invalid(
                "auth.users.ldap.url",
                format!("{url:?} is not an ldap://host[:port] or ldaps://host[:port] URL"),
            ))
        }
    }
    if start_tls && scheme.as_deref() == Some("ldaps") {
        return Err(v.invalid(
            "auth.users.ldap.start_tls",
            "is for ldap:// URLs; an ldaps:// connection is TLS from the start",
        ));
    }
    Ok(())
}

/// The user filter holds `{user}`, the group filter `{dn}` or `{user}`, and both are LDAP
/// filters once those are filled in.
fn check_ldap_filters(
    v: &Validator,
    user_filter: &str,
    group_filter: &str,
) -> Result<(), ConfigError> {
    if !user_filter.contains("{user}") {
        return Err(v.invalid(
            "auth.users.ldap.user_filter",
            format!("{user_filter:?} must contain {{user}}"),
        ));
    }
    if !group_filter.contains("{dn}") && !group_filter.contains("{user}") {
        return Err(v.invalid(
            "auth.users.ldap.group_filter",
            format!("{group_filter:?} must contain {{dn}} or {{user}}"),
        ));
    }
    for (key, filter) in [
        ("auth.users.ldap.user_filter", user_filter),
        ("auth.users.ldap.group_filter", group_filter),
    ] {
        // Parsed as the directory will receive it, with sample values in the placeholders:
        // a filter the client library cannot encode fails every login at run time.
        let sample = filter.replace("{user}", "x").replace("{dn}", "cn=x");
        if ldap3::parse_filter(&sample).is_err() {
            return Err(v.invalid(
                key,
                format!("{filter:?} is not an LDAP filter (RFC 4515): check its parentheses"),
            ));
        }
    }
    Ok(())
}

fn oidc_settings(
    v: &Validator,
    index: usize,
    entry: file::OidcFile,
) -> Result<OidcSettings, ConfigError> {
    let file::OidcFile {
        issuer,
        audience,
        username,
        account_claim,
        groups_claim,
        ca,
    } = entry;
    let key = |field: &str| format!("auth.users.oidc[{index}].{field}");
    let https = url::Url::parse(&issuer)
        .is_ok_and(|u| u.scheme() == "https" && u.host_str().is_some() && u.query().is_none());
    if !https {
        return Err(v.invalid(
            key("issuer"),
            format!("{issuer:?} is not an https:// URL (OpenID discovery is read from it)"),
        ));
    }
    for (field, value) in [("audience", &audience), ("username", &username)] {
        if value.is_empty() {
            return Err(v.invalid(key(field), "must not be empty"));
        }
    }
    if username.contains(':') {
        return Err(v.invalid(
            key("username"),
            "must not contain ':' (Basic credentials split there)",
        ));
    }
    let account_claim = account_claim.unwrap_or_else(|| "sub".to_string());
    if account_claim.is_empty() || groups_claim.as_deref() == Some("") {
        return Err(v.invalid(key("account_claim"), "claim names must not be empty"));
    }
    Ok(OidcSettings {
        issuer,
        audience,
        username,
        account_claim,
        groups_claim,
        ca: ca.map(|p| v.file_path(&p)),
    })
}

fn http_settings(
    v: &Validator,
    http: file::HttpAuthenticatorFile,
) -> Result<HttpAuthenticatorSettings, ConfigError> {
    let file::HttpAuthenticatorFile { url, timeout, ca } = http;
    let ok = url::Url::parse(&url)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
    if !ok {
        return Err(v.invalid(
            "auth.users.http.url",
            format!("{url:?} is not an absolute http(s) URL"),
        ));
    }
    Ok(HttpAuthenticatorSettings {
        url,
        timeout: v.nonzero_duration(
            "auth.users.http.timeout",
            timeout.as_deref(),
            Duration::from_secs(5),
        )?,
        ca: ca.map(|p| v.file_path(&p)),
    })
}
