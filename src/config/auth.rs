//! `auth`: the token realm, users, the access policy, and the token services the edge trusts.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use super::acl::{acl_rule, Rule};
use super::error::ConfigError;
use super::file;
use super::keys::{key_table, Changes};
use super::users::{users_settings, UsersSettings};
use super::validate::Validator;

/// The edge's own token realm (`auth.token`, `auth.users`, `auth.acl`); files are loaded by
/// `load::load_all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    pub realm_path: String,
    pub service: String,
    pub issuer: String,
    pub signing_key: PathBuf,
    pub certificate: PathBuf,
    pub expiration: Duration,
    pub refresh_expiration: Duration,
    /// `auth.users`: the login backends and their shared credential cache.
    pub users: UsersSettings,
    /// `auth.acl`: the access policy's rules, in order (first match wins).
    pub acl: Vec<Rule>,
    pub failed_logins_per_ip: NonZeroU32,
    pub failed_logins_per_account: NonZeroU32,
    /// `auth.access_tokens.state_dir`: the token store's folder; `None` = no access tokens.
    pub access_tokens: Option<PathBuf>,
}

/// `auth.trusted_issuers[]`: a token service whose tokens the edge accepts without issuing
/// any (GitLab's `/jwt/auth`, docker_auth, Harbor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedIssuer {
    /// The tokens' `iss`.
    pub issuer: String,
    /// The tokens' `aud`.
    pub service: String,
    /// PEM bundle of the issuer's signing certificates.
    pub certificates: PathBuf,
    /// Absolute URL of the issuer's token endpoint (the challenge's `realm`).
    pub realm: String,
}

key_table! {
    // Every reload builds a new `Auth` from the whole section (users, keys, rules).
    AUTH = Live("auth");
    pub(super) TRUSTED_ISSUERS = Live("auth.trusted_issuers");
}

/// Notes whether the edge's own realm (`auth` but its trusted issuers) differs.
pub(super) fn auth_changes(
    old: &Option<AuthSettings>,
    new: &Option<AuthSettings>,
    changes: &mut Changes,
) {
    let (Some(old), Some(new)) = (old, new) else {
        return changes.note(AUTH, old, new);
    };
    let AuthSettings {
        realm_path,
        service,
        issuer,
        signing_key,
        certificate,
        expiration,
        refresh_expiration,
        users,
        acl,
        failed_logins_per_ip,
        failed_logins_per_account,
        access_tokens,
    } = old;
    changes.note(AUTH, access_tokens, &new.access_tokens);
    changes.note(AUTH, realm_path, &new.realm_path);
    changes.note(AUTH, service, &new.service);
    changes.note(AUTH, issuer, &new.issuer);
    changes.note(AUTH, signing_key, &new.signing_key);
    changes.note(AUTH, certificate, &new.certificate);
    changes.note(AUTH, expiration, &new.expiration);
    changes.note(AUTH, refresh_expiration, &new.refresh_expiration);
    changes.note(AUTH, users, &new.users);
    changes.note(AUTH, acl, &new.acl);
    changes.note(AUTH, failed_logins_per_ip, &new.failed_logins_per_ip);
    changes.note(
        AUTH,
        failed_logins_per_account,
        &new.failed_logins_per_account,
    );
}

/// The `auth` section: the edge's own realm when `auth.token` is set, and the trusted
/// issuers. Without `auth.token` (verify-only mode) the edge issues nothing, so `users`,
/// `acl` and `failed_logins` are refused rather than silently ignored.
pub(super) fn auth_settings(
    v: &Validator,
    auth: file::AuthFile,
) -> Result<(Option<AuthSettings>, Vec<TrustedIssuer>), ConfigError> {
    let file::AuthFile {
        token,
        users,
        trusted_issuers,
        acl,
        failed_logins,
        access_tokens,
    } = auth;
    let trusted = trusted_issuers
        .into_iter()
        .enumerate()
        .map(|(i, t)| trusted_issuer(v, i, t))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(token) = token else {
        verify_only(v, &trusted, &users, &acl, &failed_logins)?;
        if access_tokens.is_some() {
            return Err(v.invalid(
                "auth.access_tokens",
                "needs auth.token: access tokens log in at the edge's own realm",
            ));
        }
        return Ok((None, trusted));
    };
    let Some(users) = users else {
        return Err(v.invalid(
            "auth.users",
            "needed with auth.token: the users who log in (htpasswd, ldap, oidc or http)",
        ));
    };
    let token = token_settings(v, token)?;
    let rules = acl
        .into_iter()
        .enumerate()
        .map(|(i, rule)| acl_rule(v, i, rule))
        .collect::<Result<Vec<_>, _>>()?;
    let (per_ip, per_account) = failed_logins_limits(v, failed_logins)?;
    same_issuer_and_service(v, &trusted, Some((&token.issuer, &token.service)))?;
    let Token {
        realm_path,
        service,
        issuer,
        signing_key,
        certificate,
        expiration,
        refresh_expiration,
    } = token;
    let settings = AuthSettings {
        realm_path,
        service,
        issuer,
        signing_key,
        certificate,
        expiration,
        refresh_expiration,
        users: users_settings(v, users)?,
        acl: rules,
        failed_logins_per_ip: per_ip,
        failed_logins_per_account: per_account,
        access_tokens: access_tokens
            .map(|file::AccessTokensFile { state_dir }| {
                let key = "auth.access_tokens.state_dir";
                if state_dir.trim().is_empty() {
                    return Err(v.invalid(key, "must name a directory"));
                }
                let dir = v.file_path(&state_dir);
                v.writable_dir(key, &dir)?;
                Ok(dir)
            })
            .transpose()?,
    };
    Ok((Some(settings), trusted))
}

/// Verify-only mode (no `auth.token`): it needs a trusted issuer, and refuses the keys
/// that only the edge's own realm would use.
fn verify_only(
    v: &Validator,
    trusted: &[TrustedIssuer],
    users: &Option<file::UsersFile>,
    acl: &[file::AclRuleFile],
    failed_logins: &Option<file::FailedLoginsFile>,
) -> Result<(), ConfigError> {
    let needs_token = |key: &str, why: &str| v.invalid(key, format!("needs auth.token: {why}"));
    if trusted.is_empty() {
        return Err(v.invalid(
            "auth.token",
            "needed unless auth.trusted_issuers lists a token service to trust",
        ));
    }
    if users.is_some() {
        return Err(needs_token(
            "auth.users",
            "users log in at the edge's own realm; in verify-only mode the trusted issuer \
             authenticates them",
        ));
    }
    if !acl.is_empty() {
        return Err(needs_token(
            "auth.acl",
            "in verify-only mode the trusted issuer's tokens carry the access",
        ));
    }
    if failed_logins.is_some() {
        return Err(needs_token(
            "auth.failed_logins",
            "nobody logs in at the edge in verify-only mode",
        ));
    }
    same_issuer_and_service(v, trusted, None)
}

/// `auth.token`, validated.
struct Token {
    realm_path: String,
    service: String,
    issuer: String,
    signing_key: PathBuf,
    certificate: PathBuf,
    expiration: Duration,
    refresh_expiration: Duration,
}

fn token_settings(v: &Validator, token: file::TokenFile) -> Result<Token, ConfigError> {
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
        if value.is_empty() || !is_plain_header_text(value) {
            return Err(v.invalid(
                key,
                "must be non-empty, without quotes, backslashes or control characters",
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
    Ok(Token {
        realm_path,
        service,
        issuer,
        signing_key: v.file_path(&signing_key),
        certificate: v.file_path(&certificate),
        expiration,
        refresh_expiration,
    })
}

/// `auth.failed_logins`: per client IP (default 10) and per account (default 30) a minute.
fn failed_logins_limits(
    v: &Validator,
    failed_logins: Option<file::FailedLoginsFile>,
) -> Result<(NonZeroU32, NonZeroU32), ConfigError> {
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
    Ok((
        positive("auth.failed_logins.per_client_ip", per_ip, 10)?,
        positive("auth.failed_logins.per_account", per_account, 30)?,
    ))
}

fn trusted_issuer(
    v: &Validator,
    index: usize,
    entry: file::TrustedIssuerFile,
) -> Result<TrustedIssuer, ConfigError> {
    let file::TrustedIssuerFile {
        issuer,
        service,
        certificates,
        realm,
    } = entry;
    let key = |field: &str| format!("auth.trusted_issuers[{index}].{field}");
    for (field, value) in [("issuer", &issuer), ("service", &service)] {
        if value.is_empty() || !is_plain_header_text(value) {
            return Err(v.invalid(
                key(field),
                "must be non-empty, without quotes, backslashes or control characters",
            ));
        }
    }
    let url_ok = url::Url::parse(&realm)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
    if !url_ok || !is_plain_header_text(&realm) {
        return Err(v.invalid(
            key("realm"),
            format!("{realm:?} is not an absolute http(s) URL (the issuer's token endpoint)"),
        ));
    }
    Ok(TrustedIssuer {
        issuer,
        service,
        certificates: v.file_path(&certificates),
        realm,
    })
}

/// Text that goes into a `WWW-Authenticate` quoted string (and into the registry's YAML as
/// `registry-config` prints it) as is: no quotes, backslashes or control characters (CR,
/// LF, tab, NUL). `url::Url::parse` strips tabs and newlines silently, so a URL is checked
/// here on its raw text too.
fn is_plain_header_text(text: &str) -> bool {
    !text
        .chars()
        .any(|c| c == '"' || c == '\\' || c.is_control())
}

/// The registry behind the edge accepts one `issuer` and one `service`
/// (distribution's `auth.token`), so every token the edge lets through must carry the same:
/// a trusted issuer that differs would pass the edge and then fail at the registry.
fn same_issuer_and_service(
    v: &Validator,
    trusted: &[TrustedIssuer],
    own: Option<(&str, &str)>,
) -> Result<(), ConfigError> {
    let Some((issuer, service)) = own.or_else(|| {
        trusted
            .first()
            .map(|t| (t.issuer.as_str(), t.service.as_str()))
    }) else {
        return Ok(());
    };
    let against = match own {
        Some(_) => "auth.token's",
        None => "auth.trusted_issuers[0]'s",
    };
    for (i, t) in trusted.iter().enumerate() {
        for (field, value, wanted) in [
            ("issuer", &t.issuer, issuer),
            ("service", &t.service, service),
        ] {
            if value != wanted {
                return Err(v.invalid(
                    format!("auth.trusted_issuers[{i}].{field}"),
                    format!(
                        "{value:?} differs from {against} {wanted:?}: the registry behind the \
                         edge accepts one {field}, so its tokens would be refused there"
                    ),
                ));
            }
        }
    }
    Ok(())
}
