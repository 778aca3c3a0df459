//! Serde shapes of the YAML configuration file, exactly as operators write it.
//!
//! Nothing here is validated beyond YAML types, unknown keys and closed sets (`choices`);
//! `model.rs` and each section's converter (`server.rs`, `tls.rs`, …) turn these shapes into
//! the runtime types the gateway uses. The large sections have a file each (`auth`,
//! `network` for server, tls and upstream, `policy`); the small ones are here.

mod auth;
mod network;
mod policy;

pub(super) use auth::{
    AccessTokensFile, AclRuleFile, AuthFile, FailedLoginsFile, HttpAuthenticatorFile, LdapFile,
    OidcFile, TokenFile, TrustedIssuerFile, UsersFile,
};
pub(super) use network::{
    AcmeFile, CertificateFile, HealthCheckFile, RouteFile, ServerFile, TlsFile, UpstreamFile,
};
pub(super) use policy::{ImmutableItem, PolicyFile, QuotasFile};

use schemars::JsonSchema;
use serde::Deserialize;

use super::choices::{LimitKey, LogFormat, OnUnavailable};

/// The whole configuration file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ConfigFile {
    /// Listeners and process settings.
    pub server: ServerFile,
    /// TLS certificates served on `server.https_listen`. Required when that list is not
    /// empty. Default: absent.
    #[serde(default)]
    pub tls: Option<TlsFile>,
    /// The registry nodes requests are proxied to.
    pub upstream: UpstreamFile,
    /// Other registries behind the edge, each with a pool of its own, chosen by repository
    /// prefix, `Host` or containerd's `ns`; the first match wins. Default: none.
    #[serde(default)]
    pub routes: Vec<RouteFile>,
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
    pub policy: Option<PolicyFile>,
}

#[derive(Debug, Deserialize, JsonSchema)]
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

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SharedStateFile {
    /// The Redis server the instances share.
    pub redis: RedisFile,
}

#[derive(Debug, Deserialize, JsonSchema)]
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

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LogFile {
    /// `text` (default) or `json` (one JSON object per line).
    #[serde(default)]
    pub format: Option<LogFormat>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AdminFile {
    /// Plain-HTTP `IP:port` for metrics and health checks, e.g. `127.0.0.1:9090`; never a
    /// port of the public listeners, and loopback unless `public` is true.
    pub listen: String,
    /// Allow a non-loopback `listen` address (containers, where the pod or compose network
    /// is the boundary). `/metrics` names nodes and traffic, `/readyz` tells anyone whether
    /// the registry is up. Default false.
    #[serde(default)]
    pub public: bool,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RateLimitsFile {
    /// Push starts (`POST …/blobs/uploads/`, `PUT …/manifests/…`) per key. Default: unlimited.
    #[serde(default)]
    pub push: Option<PushLimitFile>,
    /// Request-body bandwidth per key; over it uploads are slowed, not failed. Default: unlimited.
    #[serde(default)]
    pub upload_bytes: Option<UploadBytesFile>,
    /// Manifest `GET`s per client address (anonymous) or account, as Docker Hub counts
    /// pulls. Default: unlimited.
    #[serde(default)]
    pub pull: Option<PullLimitFile>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PullLimitFile {
    /// Anonymous pulls, per client address (IPv6 per /64). Default: unlimited.
    #[serde(default)]
    pub anonymous: Option<PullBudgetFile>,
    /// Pulls of logged-in clients, per account. Default: unlimited.
    #[serde(default)]
    pub authenticated: Option<PullBudgetFile>,
    /// Accounts (users or access-token robots) never limited. Default `[]`.
    #[serde(default)]
    pub exempt_accounts: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PullBudgetFile {
    /// Sustained manifest `GET`s per hour per key.
    pub per_hour: u32,
    /// Manifest `GET`s allowed at once before the rate applies. Default: `per_hour`.
    #[serde(default)]
    pub burst: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
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

#[derive(Debug, Deserialize, JsonSchema)]
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

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct MaintenanceFile {
    /// Refuse pushes and deletes (405) while pulls keep working, e.g. during garbage
    /// collection. Default false.
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ForwardedFile {
    /// CIDRs (or single addresses) whose `X-Forwarded-*` headers are kept. Default `[]`.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitsFile {
    /// Largest request body in bytes (a number: `10737418240` for nginx's
    /// `client_max_body_size 10g`); 0 = unlimited. Default 0.
    #[serde(default)]
    pub max_body_size: u64,
}
