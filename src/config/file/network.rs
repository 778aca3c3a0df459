//! `server:`, `tls:` and `upstream:` as written: where clients connect, the certificates
//! they are served, and the registry nodes requests go to.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::config::choices::{AcmeChallenge, Balance};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct ServerFile {
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

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct TlsFile {
    /// Certificates; the first is the default, the others are chosen by SNI. Default `[]`.
    #[serde(default)]
    pub certificates: Vec<CertificateFile>,
    /// Certificates obtained and renewed from an ACME CA. Default: absent.
    #[serde(default)]
    pub acme: Option<AcmeFile>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct AcmeFile {
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
    /// Extra PEM roots trusted for the directory's TLS certificate. Default: none (the
    /// system's roots).
    #[serde(default)]
    pub ca_roots: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct CertificateFile {
    /// PEM certificate chain, leaf first.
    pub cert: String,
    /// PEM private key: PKCS#8, PKCS#1 RSA or SEC1 EC.
    pub key: String,
    /// SNI names served with this certificate. Default: the DNS names in the certificate.
    #[serde(default)]
    pub server_names: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct UpstreamFile {
    /// Registry nodes as `host:port`; at least one.
    pub nodes: Vec<String>,
    /// `repository_hash` (default) or `round_robin`.
    #[serde(default)]
    pub balance: Option<Balance>,
    /// Longest wait for a node to accept a connection. Default `5s`.
    #[serde(default)]
    pub connect_timeout: Option<String>,
    /// Idle time allowed between two reads from a node, like `proxy_read_timeout`. Default `900s`.
    #[serde(default)]
    pub read_timeout: Option<String>,
    /// Active health check. Default `{ path: /v2/, interval: 5s }`.
    #[serde(default)]
    pub health_check: Option<HealthCheckFile>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct HealthCheckFile {
    /// Path requested with GET; 200 or 401 means healthy. Default `/v2/`.
    #[serde(default)]
    pub path: Option<String>,
    /// Time between checks. Default `5s`.
    #[serde(default)]
    pub interval: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RouteFile {
    /// The route's label in logs and metrics: `[a-z0-9-]+`, unique, not `default`.
    pub name: String,
    /// Repositories whose name starts with this (ending in `/`) go to this route's pool,
    /// which sees the name without it: `hub/` sends `hub/library/nginx` as `library/nginx`.
    /// Default: absent (the route's names at the edge start with `name/`: it is reached by
    /// those, and by `hosts` or `ns`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Every repository asked on one of these hosts (any port) goes to this route, named
    /// without a prefix (docker's `registry-mirrors`). Default: none.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// containerd's mirror requests whose `ns` query parameter is one of these
    /// (`?ns=docker.io`) go to this route. Default: none.
    #[serde(default)]
    pub ns: Vec<String>,
    /// The route's registry nodes as `host:port`; at least one.
    pub nodes: Vec<String>,
    /// As `upstream.balance`. Default `repository_hash`.
    #[serde(default)]
    pub balance: Option<Balance>,
    /// As `upstream.connect_timeout`. Default `5s`.
    #[serde(default)]
    pub connect_timeout: Option<String>,
    /// As `upstream.read_timeout`. Default `900s`.
    #[serde(default)]
    pub read_timeout: Option<String>,
    /// As `upstream.health_check`. Default `{ path: /v2/, interval: 5s }`.
    #[serde(default)]
    pub health_check: Option<HealthCheckFile>,
    /// Pushes and deletes are answered `405 UNSUPPORTED` (a pull-through mirror takes none).
    /// Default `false`.
    #[serde(default)]
    pub read_only: bool,
    /// Manifests pulled by tag are answered from the last good answer, up to this old,
    /// while the pool fails; needs `cache`. Default: absent (never stale).
    #[serde(default)]
    pub stale_if_error: Option<String>,
}
