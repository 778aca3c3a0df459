//! `auth:` as written: the token realm, the login backends, the access rules, the trusted
//! token services and failed-login throttling.

use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct AuthFile {
    /// The edge's own token realm. Optional when `trusted_issuers` is set (verify-only mode).
    /// Default: absent (no realm at the edge).
    #[serde(default)]
    pub token: Option<TokenFile>,
    /// Who may log in at the edge's realm; needs `token`. Default: absent (nobody logs in).
    #[serde(default)]
    pub users: Option<UsersFile>,
    /// Token services whose tokens the edge accepts (GitLab's `/jwt/auth`, docker_auth,
    /// Harbor). Default none.
    #[serde(default)]
    pub trusted_issuers: Vec<TrustedIssuerFile>,
    /// Ordered rules; first match wins; no match = no access. Default `[]` (nobody gets anything).
    #[serde(default)]
    pub acl: Vec<AclRuleFile>,
    /// Failed-login throttling. Default `{ per_client_ip: 10, per_account: 30 }` per minute.
    #[serde(default)]
    pub failed_logins: Option<FailedLoginsFile>,
    /// Access tokens for machines (`registry-edge token create`); needs `token`. Default:
    /// absent (no access tokens).
    #[serde(default)]
    pub access_tokens: Option<AccessTokensFile>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct AccessTokensFile {
    /// Folder of the embedded token store (SQLite, shared with the `token` commands). With
    /// `shared_state.redis` the tokens are kept in Redis instead (the folder then holds an
    /// unused, empty store).
    pub state_dir: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct TokenFile {
    /// Path of the token endpoint on the https listeners. Default `/jwt/auth`.
    #[serde(default)]
    pub realm_path: Option<String>,
    /// Must equal the registry's `auth.token.service`.
    pub service: String,
    /// Must equal the registry's `auth.token.issuer`.
    pub issuer: String,
    /// PEM private key: RSA (RS256) or EC P-256 (ES256).
    pub signing_key: String,
    /// Its certificate (chain), listed in the registry's `rootcertbundle`.
    pub certificate: String,
    /// Token lifetime. Default `5m`; at least 60s.
    #[serde(default)]
    pub expiration: Option<String>,
    /// Refresh-token lifetime. Default `7d`.
    #[serde(default)]
    pub refresh_expiration: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct TrustedIssuerFile {
    /// The tokens' `iss`, as the registry's `auth.token.issuer`.
    pub issuer: String,
    /// The tokens' `aud`, as the registry's `auth.token.service`.
    pub service: String,
    /// PEM bundle of the certificates the issuer signs with (the registry's `rootcertbundle`).
    pub certificates: String,
    /// Absolute URL of the issuer's token endpoint, named in the edge's challenges.
    pub realm: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct UsersFile {
    /// htpasswd file with bcrypt entries (`htpasswd -B`). Optional when another backend is set.
    /// Default: none.
    #[serde(default)]
    pub htpasswd: Option<String>,
    /// How long a correct login (any backend) is answered without asking the backend again.
    /// Default `60s`; `0s` asks every time.
    #[serde(default)]
    pub cache_ttl: Option<String>,
    /// A directory (LDAP / Active Directory). Default none.
    #[serde(default)]
    pub ldap: Option<LdapFile>,
    /// OpenID providers whose ID tokens are accepted as passwords. Default none.
    #[serde(default)]
    pub oidc: Vec<OidcFile>,
    /// An external authenticator asked with a JSON POST. Default none.
    #[serde(default)]
    pub http: Option<HttpAuthenticatorFile>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct LdapFile {
    /// `ldap://host[:port]` or `ldaps://host[:port]`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS. Default false.
    #[serde(default)]
    pub start_tls: bool,
    /// PEM bundle of extra trust roots for the directory's certificate. Default none.
    #[serde(default)]
    pub ca: Option<String>,
    /// The service account that searches users and groups. Default: anonymous search.
    #[serde(default)]
    pub bind_dn: Option<String>,
    /// File holding the service account's password (one line). Needed with `bind_dn`.
    /// Default: none.
    #[serde(default)]
    pub bind_password_file: Option<String>,
    /// Where users are searched (subtree).
    pub user_base: String,
    /// Filter with `{user}`, e.g. `(&(objectClass=inetOrgPerson)(uid={user}))`.
    pub user_filter: String,
    /// Where groups are searched (subtree). Default: groups are not read.
    #[serde(default)]
    pub group_base: Option<String>,
    /// Filter with `{dn}` and/or `{user}`. Default `(member={dn})`.
    #[serde(default)]
    pub group_filter: Option<String>,
    /// Attribute that names a group. Default `cn`.
    #[serde(default)]
    pub group_attribute: Option<String>,
    /// Limit for one login's directory work. Default `5s`.
    #[serde(default)]
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct OidcFile {
    /// The provider's issuer URL (`iss`); discovery is read from
    /// `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// The `aud` tokens must carry.
    pub audience: String,
    /// The login name clients send with such a token.
    pub username: String,
    /// Claim that becomes the account (token subject). Default `sub`.
    #[serde(default)]
    pub account_claim: Option<String>,
    /// Claim holding the groups (array of strings). Default none.
    #[serde(default)]
    pub groups_claim: Option<String>,
    /// PEM bundle of extra trust roots for discovery and JWKS. Default none.
    #[serde(default)]
    pub ca: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct HttpAuthenticatorFile {
    /// Where `{"user","password","client_ip"}` is POSTed.
    pub url: String,
    /// Limit for one answer. Default `5s`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// PEM bundle of extra trust roots for the authenticator's certificate. Default none.
    #[serde(default)]
    pub ca: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct AclRuleFile {
    /// Glob on the account; `""` = anonymous, `*` = any authenticated user. Default: not
    /// looked at (a rule needs at least one of `account`, `group`, `claims`).
    #[serde(default)]
    pub account: Option<String>,
    /// Glob on the groups the login backend reported (LDAP, OIDC `groups_claim`, http).
    /// Default: not looked at.
    #[serde(default)]
    pub group: Option<String>,
    /// Exact string values the OIDC token's claims must have. Default none.
    #[serde(default)]
    pub claims: std::collections::BTreeMap<String, String>,
    /// Networks (CIDRs or addresses) the client must be in: its address after
    /// `forwarded.trusted_proxies` and PROXY protocol. A token granted through the rule
    /// works only from there. Default: not looked at.
    #[serde(default)]
    pub from: Option<Vec<String>>,
    /// `repository` (default) or `registry`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Glob on the name (`*` within a segment, `**` across); `${account}` = the user,
    /// `${claims.NAME}` = an OIDC token's claim.
    pub name: String,
    /// `pull`, `push`, `delete`, or `["*"]` for all; `[]` denies.
    pub actions: Vec<String>,
    /// Free text for operators. Default none.
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct FailedLoginsFile {
    /// Failed logins allowed per client IP per minute before 429. Default 10.
    #[serde(default)]
    pub per_client_ip: Option<u32>,
    /// Failed logins allowed per account per minute (all clients together). Default 30.
    #[serde(default)]
    pub per_account: Option<u32>,
}
