//! Validated runtime configuration: what the gateway actually runs with.
//!
//! Built from `file.rs` shapes by [`Config::from_file`]; every default is applied
//! and every string is parsed here, so the rest of the crate never sees raw text.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::num::NonZeroU32;

use ipnet::IpNet;

use crate::auth::acl::{Acl, Actions, Rule};
use crate::ratelimit::{LimitKey, PushLimit, UploadBytesLimit};

use super::file::{self, ConfigFile};
use super::ConfigError;

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
    pub forwarded: ForwardedSettings,
    pub limits: Limits,
    pub auth: Option<AuthSettings>,
    pub maintenance: Maintenance,
    /// `rate_limits.push`; `None` = unlimited.
    pub push_limit: Option<PushLimit>,
    /// `rate_limits.upload_bytes`; `None` = unlimited.
    pub upload_limit: Option<UploadBytesLimit>,
    /// `admin.listen`; `None` = no admin listener.
    pub admin_listen: Option<SocketAddr>,
    pub log_format: LogFormat,
    /// `shared_state.redis`; `None` = every limit is kept in this process.
    pub shared_state: Option<RedisSettings>,
}

/// `shared_state.redis`: limits kept in Redis so several instances act as one.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// May carry a password: never printed (see the `Debug` impl).
    pub url: String,
    pub key_prefix: String,
    pub timeout: Duration,
    pub on_unavailable: OnUnavailable,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &"<redacted>")
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("on_unavailable", &self.on_unavailable)
            .finish()
    }
}

/// What push limits do while Redis does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnavailable {
    /// Count in this process until Redis is back.
    Local,
    /// Refuse push starts with 503 (pulls are never affected).
    Deny,
}

/// `log.format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    /// One JSON object per line (fields flattened).
    Json,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Maintenance {
    pub read_only: bool,
}

/// Token authentication settings (files are loaded by `server::load`).
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
    pub acl: Acl,
    pub failed_logins_per_ip: NonZeroU32,
    pub failed_logins_per_account: NonZeroU32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    pub https_listen: Vec<SocketAddr>,
    pub http_listen: Vec<SocketAddr>,
    pub external_url: Option<ExternalUrl>,
    pub threads: usize,
    pub shutdown_grace: Duration,
    pub pid_file: Option<PathBuf>,
    pub client_timeouts: ClientTimeouts,
    pub strict_host: bool,
    pub proxy_protocol: bool,
}

/// How long a client may take; enforced per connection (`listen::guard`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// TLS handshake plus request headers.
    pub header: Duration,
    /// Longest pause inside a request body or a response.
    pub body: Duration,
    /// No request in progress.
    pub idle: Duration,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        ClientTimeouts {
            header: Duration::from_secs(60),
            body: Duration::from_secs(60),
            idle: Duration::from_secs(75),
        }
    }
}

/// The public `https://host[:port]` of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalUrl {
    /// `host` or `host:port`; the port is omitted when it is 443.
    pub authority: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificatePaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Explicit SNI names; `None` means "the DNS names in the certificate".
    pub server_names: Option<Vec<String>>,
}

/// `tls.acme`: one certificate for `domains`, obtained and renewed from an ACME CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSettings {
    pub directory: String,
    pub contact: Vec<String>,
    /// Lowercased DNS names.
    pub domains: Vec<String>,
    pub challenge: AcmeChallenge,
    pub state_dir: PathBuf,
    pub renew_before: Duration,
    pub ca_roots: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// `/.well-known/acme-challenge/<token>` on the plain-HTTP listeners.
    Http01,
    /// The `acme-tls/1` ALPN protocol on the TLS listeners.
    TlsAlpn01,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Consistent hashing on the repository name: a repository stays on one node.
    RepositoryHash,
    RoundRobin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    pub nodes: Vec<SocketAddr>,
    pub balance: Balance,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub health_path: String,
    pub health_interval: Duration,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardedSettings {
    pub trusted_proxies: Vec<IpNet>,
}

impl ForwardedSettings {
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// `None` = unlimited.
    pub max_body_size: Option<u64>,
}

/// Collects the file path so every error names file and key.
struct Validator<'a> {
    path: &'a Path,
}

impl Validator<'_> {
    fn invalid(&self, key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            key: key.into(),
            problem: problem.into(),
        }
    }

    fn duration(
        &self,
        key: &str,
        value: Option<&str>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(text) => humantime::parse_duration(text).map_err(|e| {
                self.invalid(
                    key,
                    format!("invalid duration {text:?} ({e}); use e.g. 900s or 5m"),
                )
            }),
        }
    }

    /// Like [`Validator::duration`], refusing zero.
    fn nonzero_duration(
        &self,
        key: &str,
        value: Option<&str>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let d = self.duration(key, value, default)?;
        if d.is_zero() {
            return Err(self.invalid(key, "must be greater than 0"));
        }
        Ok(d)
    }

    fn listen(&self, key: &str, values: &[String]) -> Result<Vec<SocketAddr>, ConfigError> {
        values
            .iter()
            .enumerate()
            .map(|(i, text)| {
                text.parse::<SocketAddr>().map_err(|_| {
                    self.invalid(
                        format!("{key}[{i}]"),
                        format!("{text:?} is not an IP:port address"),
                    )
                })
            })
            .collect()
    }

    /// Resolves relative paths against the config file's folder.
    fn file_path(&self, text: &str) -> PathBuf {
        let path = Path::new(text);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.path.parent().unwrap_or(Path::new(".")).join(path)
        }
    }
}

impl Config {
    pub(super) fn from_file(path: &Path, file: ConfigFile) -> Result<Config, ConfigError> {
        // Exhaustive destructuring: a new section does not compile until it is handled.
        let ConfigFile {
            server,
            tls,
            upstream,
            forwarded,
            limits,
            auth,
            maintenance,
            rate_limits,
            admin,
            log,
            shared_state,
        } = file;
        let v = Validator { path };
        let server = server_settings(&v, server)?;
        let (certificates, acme) = match tls {
            None => (Vec::new(), None),
            Some(file::TlsFile { certificates, acme }) => (
                certificate_paths(&v, certificates)?,
                acme.map(|a| acme_settings(&v, &server, a)).transpose()?,
            ),
        };
        if !server.https_listen.is_empty() && certificates.is_empty() && acme.is_none() {
            return Err(v.invalid(
                "tls.certificates",
                "at least one certificate (or tls.acme) is needed for server.https_listen",
            ));
        }
        let forwarded = forwarded_settings(&v, forwarded)?;
        if server.proxy_protocol && forwarded.trusted_proxies.is_empty() {
            return Err(v.invalid(
                "server.proxy_protocol",
                "PROXY headers are believed only from the load balancers listed in \
                 forwarded.trusted_proxies, and that list is empty: add the balancers' addresses",
            ));
        }
        Ok(Config {
            source: path.to_path_buf(),
            certificates,
            acme,
            upstream: upstream_settings(&v, upstream)?,
            forwarded,
            limits: Limits {
                max_body_size: (limits.max_body_size > 0).then_some(limits.max_body_size),
            },
            auth: auth.map(|a| auth_settings(&v, a)).transpose()?,
            push_limit: rate_limits.push.map(|p| push_limit(&v, p)).transpose()?,
            upload_limit: rate_limits
                .upload_bytes
                .map(|u| upload_limit(&v, u))
                .transpose()?,
            maintenance: Maintenance {
                read_only: maintenance.read_only,
            },
            admin_listen: admin
                .map(|a| admin_listen(&v, &server, &a.listen))
                .transpose()?,
            log_format: match log.format.as_deref() {
                None | Some("text") => LogFormat::Text,
                Some("json") => LogFormat::Json,
                Some(other) => {
                    return Err(
                        v.invalid("log.format", format!("{other:?} is not one of text, json"))
                    )
                }
            },
            shared_state: shared_state
                .map(|s| redis_settings(&v, s.redis))
                .transpose()?,
            server,
        })
    }
}

fn redis_settings(v: &Validator, redis: file::RedisFile) -> Result<RedisSettings, ConfigError> {
    let file::RedisFile {
        url,
        key_prefix,
        timeout,
        on_unavailable,
    } = redis;
    if let Err(e) = redis::IntoConnectionInfo::into_connection_info(url.as_str()) {
        // The error text never includes the URL, which may hold a password.
        return Err(v.invalid(
            "shared_state.redis.url",
            format!("not a redis:// or rediss:// URL ({e})"),
        ));
    }
    let timeout = v.nonzero_duration(
        "shared_state.redis.timeout",
        timeout.as_deref(),
        Duration::from_millis(50),
    )?;
    let on_unavailable = match on_unavailable.as_deref() {
        None | Some("local") => OnUnavailable::Local,
        Some("deny") => OnUnavailable::Deny,
        Some(other) => {
            return Err(v.invalid(
                "shared_state.redis.on_unavailable",
                format!("{other:?} is not one of local, deny"),
            ))
        }
    };
    Ok(RedisSettings {
        url,
        key_prefix: key_prefix.unwrap_or_else(|| "registry-edge:".to_string()),
        timeout,
        on_unavailable,
    })
}

fn server_settings(v: &Validator, server: file::ServerFile) -> Result<ServerSettings, ConfigError> {
    let file::ServerFile {
        https_listen,
        http_listen,
        external_url,
        threads,
        shutdown_grace,
        pid_file,
        header_timeout,
        body_timeout,
        idle_timeout,
        strict_host,
        proxy_protocol,
    } = server;
    let https_listen = v.listen("server.https_listen", &https_listen)?;
    let http_listen = v.listen("server.http_listen", &http_listen)?;
    if https_listen.is_empty() && http_listen.is_empty() {
        return Err(v.invalid(
            "server",
            "no listener: https_listen and http_listen are both empty",
        ));
    }
    let external_url = external_url
        .map(|text| parse_external_url(v, &text))
        .transpose()?;
    let threads = match threads {
        Some(0) => return Err(v.invalid("server.threads", "must be at least 1")),
        Some(n) => n,
        None => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    };
    Ok(ServerSettings {
        https_listen,
        http_listen,
        external_url,
        threads,
        shutdown_grace: v.duration(
            "server.shutdown_grace",
            shutdown_grace.as_deref(),
            Duration::from_secs(60),
        )?,
        pid_file: pid_file.map(|p| v.file_path(&p)),
        client_timeouts: client_timeouts(v, header_timeout, body_timeout, idle_timeout)?,
        strict_host: strict_host.unwrap_or(false),
        proxy_protocol: proxy_protocol.unwrap_or(false),
    })
}

/// The admin address: never a port the public listeners use.
fn admin_listen(
    v: &Validator,
    server: &ServerSettings,
    text: &str,
) -> Result<SocketAddr, ConfigError> {
    let addr: SocketAddr = text.parse().map_err(|_| {
        v.invalid(
            "admin.listen",
            format!("{text:?} is not an IP:port address"),
        )
    })?;
    let mut public = server.https_listen.iter().chain(&server.http_listen);
    if let Some(clash) = public.find(|p| p.port() == addr.port()) {
        return Err(v.invalid(
            "admin.listen",
            format!("{addr} shares its port with the public listener {clash}"),
        ));
    }
    Ok(addr)
}

fn client_timeouts(
    v: &Validator,
    header: Option<String>,
    body: Option<String>,
    idle: Option<String>,
) -> Result<ClientTimeouts, ConfigError> {
    let defaults = ClientTimeouts::default();
    let positive = |key: &str, value: Option<String>, default: Duration| {
        let d = v.duration(key, value.as_deref(), default)?;
        if d < Duration::from_secs(1) {
            return Err(v.invalid(key, "must be at least 1s"));
        }
        Ok(d)
    };
    Ok(ClientTimeouts {
        header: positive("server.header_timeout", header, defaults.header)?,
        body: positive("server.body_timeout", body, defaults.body)?,
        idle: positive("server.idle_timeout", idle, defaults.idle)?,
    })
}

fn parse_external_url(v: &Validator, text: &str) -> Result<ExternalUrl, ConfigError> {
    let key = "server.external_url";
    let url = url::Url::parse(text)
        .map_err(|e| v.invalid(key, format!("{text:?} is not a URL ({e})")))?;
    if url.scheme() != "https" {
        return Err(v.invalid(key, format!("{text:?} must start with https://")));
    }
    let host = url
        .host_str()
        .ok_or_else(|| v.invalid(key, format!("{text:?} has no host")))?;
    if url.path() != "/" || url.query().is_some() {
        return Err(v.invalid(key, format!("{text:?} must not have a path or query")));
    }
    let authority = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    Ok(ExternalUrl { authority })
}

/// Default `tls.acme.renew_before`: Let's Encrypt certificates last 90 days.
const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

fn acme_settings(
    v: &Validator,
    server: &ServerSettings,
    acme: file::AcmeFile,
) -> Result<AcmeSettings, ConfigError> {
    let file::AcmeFile {
        directory,
        contact,
        domains,
        challenge,
        state_dir,
        renew_before,
        ca_roots,
    } = acme;
    match url::Url::parse(&directory) {
        Ok(url) if url.scheme() == "https" && url.host().is_some() => {}
        _ => {
            return Err(v.invalid(
                "tls.acme.directory",
                format!("{directory:?} is not an https:// URL"),
            ))
        }
    }
    if let Some((i, bad)) = contact
        .iter()
        .enumerate()
        .find(|(_, c)| !c.starts_with("mailto:") || c.len() == "mailto:".len())
    {
        return Err(v.invalid(
            format!("tls.acme.contact[{i}]"),
            format!("{bad:?} is not a mailto: address"),
        ));
    }
    if domains.is_empty() {
        return Err(v.invalid("tls.acme.domains", "at least one name is needed"));
    }
    let domains: Vec<String> = domains.iter().map(|d| d.to_ascii_lowercase()).collect();
    for (i, domain) in domains.iter().enumerate() {
        if !is_dns_name(domain) {
            let why = if domain.starts_with("*.") {
                "wildcards need the dns-01 challenge, which registry-edge does not do"
            } else {
                "not a DNS name"
            };
            return Err(v.invalid(
                format!("tls.acme.domains[{i}]"),
                format!("{domain:?}: {why}"),
            ));
        }
    }
    let challenge = match challenge.as_deref() {
        None | Some("http-01") => AcmeChallenge::Http01,
        Some("tls-alpn-01") => AcmeChallenge::TlsAlpn01,
        Some(other) => {
            return Err(v.invalid(
                "tls.acme.challenge",
                format!("{other:?} is not one of http-01, tls-alpn-01"),
            ))
        }
    };
    if server.https_listen.is_empty() {
        return Err(v.invalid(
            "tls.acme",
            "needs server.https_listen to serve the certificate on",
        ));
    }
    if challenge == AcmeChallenge::Http01 && server.http_listen.is_empty() {
        return Err(v.invalid(
            "tls.acme.challenge",
            "http-01 is answered on server.http_listen, which is empty",
        ));
    }
    let renew_before = v.duration(
        "tls.acme.renew_before",
        renew_before.as_deref(),
        DEFAULT_RENEW_BEFORE,
    )?;
    Ok(AcmeSettings {
        directory,
        contact,
        domains,
        challenge,
        state_dir: v.file_path(&state_dir),
        renew_before,
        ca_roots: ca_roots.map(|p| v.file_path(&p)),
    })
}

/// A name a CA can validate with http-01 or tls-alpn-01: letters, digits, hyphens, dots.
fn is_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').count() >= 2
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn certificate_paths(
    v: &Validator,
    certificates: Vec<file::CertificateFile>,
) -> Result<Vec<CertificatePaths>, ConfigError> {
    certificates
        .into_iter()
        .enumerate()
        .map(
            |(
                i,
                file::CertificateFile {
                    cert,
                    key,
                    server_names,
                },
            )| {
                if let Some(names) = &server_names {
                    if let Some(bad) = names
                        .iter()
                        .find(|n| n.is_empty() || n.contains(['/', ' ', ':']))
                    {
                        return Err(v.invalid(
                            format!("tls.certificates[{i}].server_names"),
                            format!("{bad:?} is not a DNS name"),
                        ));
                    }
                }
                Ok(CertificatePaths {
                    cert: v.file_path(&cert),
                    key: v.file_path(&key),
                    server_names: server_names
                        .map(|names| names.iter().map(|n| n.to_ascii_lowercase()).collect()),
                })
            },
        )
        .collect()
}

fn upstream_settings(
    v: &Validator,
    upstream: file::UpstreamFile,
) -> Result<UpstreamSettings, ConfigError> {
    let file::UpstreamFile {
        nodes,
        balance,
        connect_timeout,
        read_timeout,
        health_check,
    } = upstream;
    if nodes.is_empty() {
        return Err(v.invalid("upstream.nodes", "at least one registry node is needed"));
    }
    let nodes = nodes
        .iter()
        .enumerate()
        .map(|(i, text)| {
            resolve_node(text).map_err(|problem| v.invalid(format!("upstream.nodes[{i}]"), problem))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let balance = match balance.as_deref() {
        None | Some("repository_hash") => Balance::RepositoryHash,
        Some("round_robin") => Balance::RoundRobin,
        Some(other) => {
            return Err(v.invalid(
                "upstream.balance",
                format!("{other:?} is not one of repository_hash, round_robin"),
            ))
        }
    };
    let (health_path, health_interval) = match health_check {
        None => (None, None),
        Some(file::HealthCheckFile { path, interval }) => (path, interval),
    };
    let health_path = health_path.unwrap_or_else(|| "/v2/".to_string());
    if !health_path.starts_with('/') {
        return Err(v.invalid(
            "upstream.health_check.path",
            format!("{health_path:?} must start with /"),
        ));
    }
    let health_interval = v.nonzero_duration(
        "upstream.health_check.interval",
        health_interval.as_deref(),
        Duration::from_secs(5),
    )?;
    Ok(UpstreamSettings {
        nodes,
        balance,
        connect_timeout: v.duration(
            "upstream.connect_timeout",
            connect_timeout.as_deref(),
            Duration::from_secs(5),
        )?,
        read_timeout: v.duration(
            "upstream.read_timeout",
            read_timeout.as_deref(),
            Duration::from_secs(900),
        )?,
        health_path,
        health_interval,
    })
}

fn resolve_node(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if !text.contains(':') {
        return Err(format!("{text:?} needs a port (host:port)"));
    }
    text.to_socket_addrs()
        .map_err(|e| format!("cannot resolve {text:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

fn forwarded_settings(
    v: &Validator,
    forwarded: file::ForwardedFile,
) -> Result<ForwardedSettings, ConfigError> {
    let file::ForwardedFile { trusted_proxies } = forwarded;
    let trusted_proxies = trusted_proxies
        .iter()
        .enumerate()
        .map(|(i, text)| {
            text.parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    v.invalid(
                        format!("forwarded.trusted_proxies[{i}]"),
                        format!("{text:?} is not a CIDR or IP address"),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ForwardedSettings { trusted_proxies })
}

fn auth_settings(v: &Validator, auth: file::AuthFile) -> Result<AuthSettings, ConfigError> {
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
        acl: Acl { rules },
        failed_logins_per_ip: positive("auth.failed_logins.per_client_ip", per_ip, 10)?,
        failed_logins_per_account: positive("auth.failed_logins.per_account", per_account, 30)?,
    })
}

fn acl_rule(v: &Validator, index: usize, rule: file::AclRuleFile) -> Result<Rule, ConfigError> {
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

fn limit_key(v: &Validator, field: &str, key: Option<&str>) -> Result<LimitKey, ConfigError> {
    match key {
        None | Some("account") => Ok(LimitKey::Account),
        Some("client_ip") => Ok(LimitKey::ClientIp),
        Some(other) => Err(v.invalid(field, format!("{other:?} is not one of account, client_ip"))),
    }
}

fn upload_limit(
    v: &Validator,
    upload: file::UploadBytesFile,
) -> Result<UploadBytesLimit, ConfigError> {
    let file::UploadBytesFile {
        key,
        per_second,
        burst,
    } = upload;
    let key = limit_key(v, "rate_limits.upload_bytes.key", key.as_deref())?;
    let per_second = NonZeroU32::new(per_second)
        .ok_or_else(|| v.invalid("rate_limits.upload_bytes.per_second", "must be at least 1"))?;
    let burst = match burst {
        None => per_second,
        Some(b) => NonZeroU32::new(b)
            .ok_or_else(|| v.invalid("rate_limits.upload_bytes.burst", "must be at least 1"))?,
    };
    Ok(UploadBytesLimit {
        key,
        per_second,
        burst,
    })
}

fn push_limit(v: &Validator, push: file::PushLimitFile) -> Result<PushLimit, ConfigError> {
    let file::PushLimitFile {
        key,
        per_minute,
        burst,
        exempt_accounts,
    } = push;
    let key = limit_key(v, "rate_limits.push.key", key.as_deref())?;
    let per_minute = NonZeroU32::new(per_minute)
        .ok_or_else(|| v.invalid("rate_limits.push.per_minute", "must be at least 1"))?;
    let burst = match burst {
        None => per_minute,
        Some(b) => NonZeroU32::new(b)
            .ok_or_else(|| v.invalid("rate_limits.push.burst", "must be at least 1"))?,
    };
    Ok(PushLimit {
        key,
        per_minute,
        burst,
        exempt_accounts: exempt_accounts.into_iter().collect(),
    })
}
