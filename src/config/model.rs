//! Validated runtime configuration: what the gateway actually runs with.
//!
//! Built from `file.rs` shapes by [`Config::from_file`]; every default is applied
//! and every string is parsed here, so the rest of the crate never sees raw text.

use std::path::{Path, PathBuf};

use super::auth::{auth_settings, AuthSettings, TrustedIssuer};
use super::cache::{cache_settings, CacheSettings};
use super::choices::LogFormat;
use super::error::ConfigError;
use super::file::ConfigFile;
use super::keys::key_table;
use super::limits::{rate_limit_settings, Limits, PullLimit, PushLimit, UploadBytesLimit};
use super::policy::{policy_settings, PolicySettings};
use super::routes::{routes_settings, RouteSettings};
use super::server::{admin_settings, server_settings, AdminSettings, ServerSettings};
use super::shared_state::{redis_settings, RedisSettings};
use super::tls::{tls_settings, AcmeSettings, CertificatePaths};
use super::upstream::{forwarded_settings, upstream_settings, ForwardedSettings, UpstreamSettings};
use super::validate::{Names, Validator};

key_table! {
    // Read per request.
    pub(super) MAINTENANCE = Live("maintenance");
    // The log writer is set up at start.
    pub(super) LOG_FORMAT = AtRestart("log.format");
}

/// The gateway's validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was loaded from (for messages).
    pub source: PathBuf,
    pub server: ServerSettings,
    /// Certificates in order; the first is the default.
    pub certificates: Vec<CertificatePaths>,
    /// `tls.acme`; `None` = no certificates from an ACME CA.
    pub acme: Option<AcmeSettings>,
    pub upstream: UpstreamSettings,
    /// `routes`, in order (the first match wins); empty = every request to `upstream`.
    pub routes: Vec<RouteSettings>,
    pub forwarded: ForwardedSettings,
    pub limits: Limits,
    /// `auth.token` and what goes with it: the edge's own realm; `None` = none.
    pub auth: Option<AuthSettings>,
    /// `auth.trusted_issuers`: token services whose tokens the edge accepts.
    pub trusted_issuers: Vec<TrustedIssuer>,
    pub maintenance: Maintenance,
    /// `rate_limits.push`; `None` = unlimited.
    pub push_limit: Option<PushLimit>,
    /// `rate_limits.upload_bytes`; `None` = unlimited.
    pub upload_limit: Option<UploadBytesLimit>,
    /// `rate_limits.pull`; `None` = unlimited.
    pub pull_limit: Option<PullLimit>,
    /// `admin`; `None` = no admin listener.
    pub admin: Option<AdminSettings>,
    pub log_format: LogFormat,
    /// `shared_state.redis`; `None` = every limit is kept in this process.
    pub shared_state: Option<RedisSettings>,
    /// `cache`; `None` = every pull goes to the registry.
    pub cache: Option<CacheSettings>,
    /// `policy`; `None` = no quotas, no immutable tags.
    pub policy: Option<PolicySettings>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Maintenance {
    pub read_only: bool,
}

impl Config {
    pub(super) fn from_file(
        path: &Path,
        file: ConfigFile,
        names: Names,
    ) -> Result<Config, ConfigError> {
        // Exhaustive destructuring: a new section does not compile until it is handled.
        let ConfigFile {
            server,
            tls,
            upstream,
            routes,
            forwarded,
            limits,
            auth,
            maintenance,
            rate_limits,
            admin,
            log,
            shared_state,
            cache,
            policy,
        } = file;
        let v = Validator { path, names };
        let server = server_settings(&v, server)?;
        let (certificates, acme) = tls_settings(&v, &server, tls)?;
        let forwarded = forwarded_settings(&v, forwarded)?;
        if server.proxy_protocol && forwarded.trusted_proxies.is_empty() {
            return Err(v.invalid(
                "server.proxy_protocol",
                "PROXY headers are believed only from the load balancers listed in \
                 forwarded.trusted_proxies, and that list is empty: add the balancers' addresses",
            ));
        }
        let (auth, trusted_issuers) = match auth {
            Some(a) => auth_settings(&v, a)?,
            None => (None, Vec::new()),
        };
        let upstream = upstream_settings(&v, upstream)?;
        let routes = routes_settings(&v, routes, cache.is_some())?;
        let super::limits::RateLimitSettings {
            push: push_limit,
            upload_bytes: upload_limit,
            pull: pull_limit,
        } = rate_limit_settings(&v, rate_limits)?;
        Ok(Config {
            source: path.to_path_buf(),
            certificates,
            acme,
            upstream,
            routes,
            forwarded,
            limits: Limits {
                max_body_size: (limits.max_body_size > 0).then_some(limits.max_body_size),
            },
            auth,
            trusted_issuers,
            push_limit,
            upload_limit,
            pull_limit,
            maintenance: Maintenance {
                read_only: maintenance.read_only,
            },
            admin: admin
                .map(|a| admin_settings(&v, &server, &a.listen, a.public))
                .transpose()?,
            log_format: log.format.unwrap_or_default(),
            shared_state: shared_state
                .map(|s| redis_settings(&v, s.redis))
                .transpose()?,
            cache: cache.map(|c| cache_settings(&v, c)).transpose()?,
            policy: policy.map(|p| policy_settings(&v, p)).transpose()?,
            server,
        })
    }
}
