//! Serde shapes of the YAML configuration file, exactly as operators write it.
//!
//! Nothing here is validated beyond YAML types, unknown keys and closed sets (`choices`);
//! `model.rs` and each section's converter (`server.rs`, `tls.rs`, …) turn these shapes into
//! the runtime types the gateway uses.

use serde::Deserialize;

use super::choices::{AcmeChallenge, Balance, LimitKey, LogFormat, OnUnavailable};

/// The whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConfigFile {
    /// Listeners and process settings.
    pub server: ServerFile,
    /// TLS certificates served on `server.https_listen`. Required when that list is not empty.
    #[serde(default)]
    pub tls: Option<TlsFile>,
    /// The registry nodes requests are proxied to.
    pub upstream: UpstreamFile,
    /// Trust in forwarding headers set by a load balancer in front. Default: trust nobody.
    #[serde(default)]
    pub forwarded: ForwardedFile,
    /// Request limits. Default: no body size limit.
    #[serde(default)]
    pub limits: LimitsFile,
    /// Token authentication at the edge. Default: absent (no token checks, proxy only).
    #[serde(default)]
    pub auth: Option<AuthFile>,
    /// Maintenance switches. Default `{ read_only: false }`.
    #[serde(default)]
    pub maintenance: MaintenanceFile,
    /// Rate limits. Default: none.
    #[serde(default)]
    pub rate_limits: RateLimitsFile,
    /// The admin listener (`/metrics`, `/healthz`, `/readyz`). Default: absent (off).
    #[serde(default)]
    pub admin: Option<AdminFile>,
    /// Log output. Default `{ format: text }`.
    #[serde(default)]
    pub log: LogFile,
    /// State shared by several edge instances. Default: absent (limits per instance).
    #[serde(default)]
    pub shared_state: Option<SharedStateFile>,
    /// The cache of blobs and manifests pulled by digest. Default: absent (off).
    #[serde(default)]
    pub cache: Option<CacheFile>,
    /// Storage quotas and immutable tags. Default: absent (off).
    #[serde(default)]
    pub policy: Option<super::policy::PolicyFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CacheFile {
    /// Folder of the entries (relative to the config file's folder).
    pub dir: String,
    /// Bytes on disk, e.g. `50GiB`.
    pub max_size: String,
    /// Bytes of small objects also kept in memory. Default 64MiB (at most `max_size`).
    #[serde(default)]
    pub memory: Option<String>,
    /// Largest object cached. Default 20GiB (at most `max_size`).
    #[serde(default)]
    pub max_object: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SharedStateFile {
    pub redis: RedisFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RedisFile {
    /// `redis://[user:password@]host:port/db` or `rediss://…` (TLS).
    pub url: String,
    /// Prefix of every key. Default `registry-edge:`.
    #[serde(default)]
    pub key_prefix: Option<String>,
    /// Longest wait for an answer before falling back. Default `50ms`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// `local` (default): per-instance limits while Redis is away; `deny`: refuse pushes (503).
    #[serde(default)]
    pub on_unavailable: Option<OnUnavailable>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogFile {
    /// `text` (default) or `json` (one JSON object per line).
    #[serde(default)]
    pub format: Option<LogFormat>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AdminFile {
    /// Plain-HTTP address for metrics and health checks, e.g. `127.0.0.1:9090`; never one
    /// of the public listeners.
    pub listen: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RateLimitsFile {
    /// Push starts (`POST …/blobs/uploads/`, `PUT …/manifests/…`) per key. Default: unlimited.
    #[serde(default)]
    pub push: Option<PushLimitFile>,
    /// Request-body bandwidth per key; over it uploads are slowed, not failed. Default: unlimited.
    #[serde(default)]
    pub upload_bytes: Option<UploadBytesFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UploadBytesFile {
    /// `account` (default) or `client_ip`, as for `push`.
    #[serde(default)]
    pub key: Option<LimitKey>,
    /// Sustained bytes per second per key.
    pub per_second: u32,
    /// Bytes that may pass at once before the rate applies. Default: `per_second`.
    #[serde(default)]
    pub burst: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PushLimitFile {
    /// `account` (default; token subject, anonymous falls back to client_ip) or `client_ip`.
    #[serde(default)]
    pub key: Option<LimitKey>,
    /// Sustained push starts per minute per key.
    pub per_minute: u32,
    /// Push starts allowed at once before the rate applies. Default: `per_minute`.
    #[serde(default)]
    pub burst: Option<u32>,
    /// Accounts never limited. Default `[]`.
    #[serde(default)]
    pub exempt_accounts: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MaintenanceFile {
    /// Refuse pushes and deletes (405) while pulls keep working, e.g. during garbage
    /// collection. Default false.
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuthFile {
    /// The edge's own token realm. Optional when `trusted_issuers` is set (verify-only mode).
    #[serde(default)]
    pub token: Option<TokenFile>,
    /// Who may log in at the edge's realm; needs `token`.
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TokenFile {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TrustedIssuerFile {
    /// The tokens' `iss`, as the registry's `auth.token.issuer`.
    pub issuer: String,
    /// The tokens' `aud`, as the registry's `auth.token.service`.
    pub service: String,
    /// PEM bundle of the certificates the issuer signs with (the registry's `rootcertbundle`).
    pub certificates: String,
    /// Absolute URL of the issuer's token endpoint, named in the edge's challenges.
    pub realm: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UsersFile {
    /// htpasswd file with bcrypt entries (`htpasswd -B`). Optional when another backend is set.
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LdapFile {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OidcFile {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HttpAuthenticatorFile {
    /// Where `{"user","password","client_ip"}` is POSTed.
    pub url: String,
    /// Limit for one answer. Default `5s`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// PEM bundle of extra trust roots for the authenticator's certificate. Default none.
    #[serde(default)]
    pub ca: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AclRuleFile {
    /// Glob on the account; `""` = anonymous, `*` = any authenticated user.
    #[serde(default)]
    pub account: Option<String>,
    /// Glob on the groups the login backend reported (LDAP, OIDC `groups_claim`, http).
    #[serde(default)]
    pub group: Option<String>,
    /// Exact string values the OIDC token's claims must have. Default none.
    #[serde(default)]
    pub claims: std::collections::BTreeMap<String, String>,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FailedLoginsFile {
    /// Failed logins allowed per client IP per minute before 429. Default 10.
    #[serde(default)]
    pub per_client_ip: Option<u32>,
    /// Failed logins allowed per account per minute (all clients together). Default 30.
    #[serde(default)]
    pub per_account: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ServerFile {
    /// TLS listeners. Default `["0.0.0.0:443"]`.
    #[serde(default = "default_https_listen")]
    pub https_listen: Vec<String>,
    /// Plain listeners that only redirect to https; `[]` disables. Default `["0.0.0.0:80"]`.
    #[serde(default = "default_http_listen")]
    pub http_listen: Vec<String>,
    /// Public URL of the registry (`https://host[:port]`); default: derived from `Host`.
    #[serde(default)]
    pub external_url: Option<String>,
    /// Worker threads per listening service. Default: the number of CPUs.
    #[serde(default)]
    pub threads: Option<usize>,
    /// How long in-flight requests may run after SIGTERM before the process exits. Default `60s`.
    #[serde(default)]
    pub shutdown_grace: Option<String>,
    /// File the process id is written to (for `registry-edge reload --pid-file`). Default none.
    #[serde(default)]
    pub pid_file: Option<String>,
    /// A client must finish the TLS handshake and the request headers this long after
    /// connecting (or after the first byte of a later request). Default `60s`.
    #[serde(default)]
    pub header_timeout: Option<String>,
    /// Longest pause while receiving a request body or sending a response. Default `60s`.
    #[serde(default)]
    pub body_timeout: Option<String>,
    /// A connection with no request in progress is closed after this long. Default `75s`.
    #[serde(default)]
    pub idle_timeout: Option<String>,
    /// Refuse (421) requests whose Host names none of the certificates or `external_url`.
    /// Default false.
    #[serde(default)]
    pub strict_host: Option<bool>,
    /// Every listener expects a PROXY protocol (v1 or v2) header first, as written by an L4
    /// load balancer; connections without one are refused. Default false.
    #[serde(default)]
    pub proxy_protocol: Option<bool>,
}

fn default_https_listen() -> Vec<String> {
    vec!["0.0.0.0:443".to_string()]
}

fn default_http_listen() -> Vec<String> {
    vec!["0.0.0.0:80".to_string()]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TlsFile {
    /// Certificates; the first is the default, the others are chosen by SNI.
    #[serde(default)]
    pub certificates: Vec<CertificateFile>,
    /// Certificates obtained and renewed from an ACME CA. Default: absent.
    #[serde(default)]
    pub acme: Option<AcmeFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AcmeFile {
    /// The CA's RFC 8555 directory URL.
    pub directory: String,
    /// Account contacts, e.g. `mailto:ops@example.com`. Default: none.
    #[serde(default)]
    pub contact: Vec<String>,
    /// Names on the certificate (one certificate for all of them).
    pub domains: Vec<String>,
    /// `http-01` (default) or `tls-alpn-01`.
    #[serde(default)]
    pub challenge: Option<AcmeChallenge>,
    /// Account key, certificate and key are kept here.
    pub state_dir: String,
    /// Renew this long before expiry. Default `30d`.
    #[serde(default)]
    pub renew_before: Option<String>,
    /// Extra PEM roots trusted for the directory's TLS certificate.
    #[serde(default)]
    pub ca_roots: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CertificateFile {
    /// PEM certificate chain, leaf first.
    pub cert: String,
    /// PEM private key: PKCS#8, PKCS#1 RSA or SEC1 EC.
    pub key: String,
    /// SNI names served with this certificate. Default: the DNS names in the certificate.
    #[serde(default)]
    pub server_names: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpstreamFile {
    /// Registry nodes as `host:port`; at least one.
    pub nodes: Vec<String>,
    /// `repository_hash` (default) or `round_robin`.
    #[serde(default)]
    pub balance: Option<Balance>,
    /// Default `5s`.
    #[serde(default)]
    pub connect_timeout: Option<String>,
    /// Idle time allowed between two reads from a node, like `proxy_read_timeout`. Default `900s`.
    #[serde(default)]
    pub read_timeout: Option<String>,
    /// Active health check. Default `{ path: /v2/, interval: 5s }`.
    #[serde(default)]
    pub health_check: Option<HealthCheckFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HealthCheckFile {
    /// Path requested with GET; 200 or 401 means healthy. Default `/v2/`.
    #[serde(default)]
    pub path: Option<String>,
    /// Time between checks. Default `5s`.
    #[serde(default)]
    pub interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ForwardedFile {
    /// CIDRs (or single addresses) whose `X-Forwarded-*` headers are kept. Default `[]`.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitsFile {
    /// Largest request body in bytes; 0 = unlimited. Default 0.
    #[serde(default)]
    pub max_body_size: u64,
}
