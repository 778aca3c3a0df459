//! registry-edge: an edge gateway for container registries, built on Pingora.
//!
//! It terminates TLS (rustls, h2 and HTTP/1.1), redirects plain HTTP to HTTPS, sets
//! forwarding headers the registry can trust, and streams uploads and downloads to a
//! pool of registry nodes with health checks and failover.
//!
//! # Layout
//! - [`config`]: YAML file shapes → validated runtime [`config::Config`]; `load()`.
//! - [`tls`]: PEM loading, key/cert matching, SNI certificate resolver.
//! - [`certgen`]: `gen-certs` (self-signed TLS and token-signing material).
//! - [`listen`]: accept loops; per-connection header/body/idle deadlines and header limits.
//! - [`metrics`]: Prometheus metrics; [`admin`]: the admin listener (/metrics, /healthz, /readyz).
//! - [`redirect`]: the plain-HTTP listeners' redirect to https.
//! - [`proxy`]: `EdgeProxy` (Pingora `ProxyHttp`), per-request ctx, forwarding headers, the
//!   public origin, the framing of the edge's own answers.
//! - [`upstream`]: registry node pool, repository affinity, health checks.
//! - [`registry`]: request path → endpoint and repository.
//! - [`auth`]: token endpoint, access policy, JWT signing/verification, per-request checks.
//! - [`registry_config`]: the registry's matching `auth:` block; htpasswd lines.
//! - [`error`]: the registry's JSON error envelope for the edge's own answers.
//! - [`server`]: assembles Pingora services from a config (used by `main` and tests).
//! - [`settings`]: the reloadable per-request snapshot of the configuration.
//! - [`reload`]: SIGHUP handling: validate the new config, then swap it in.
//! - [`drain`]: SIGTERM: stop accepting, exit once requests in flight finish (at most the grace).

pub mod acme;
pub mod admin;
pub mod auth;
pub mod certgen;
pub mod config;
pub mod drain;
pub mod error;
pub mod limits;
pub mod listen;
pub mod load;
pub mod metrics;
pub mod proxy;
pub mod redirect;
pub mod registry;
pub mod registry_config;
pub mod reload;
pub mod request;
pub mod server;
pub mod settings;
pub mod shared_state;
pub mod tls;
pub mod upstream;
