//! registry-edge: an edge gateway for container registries, built on Pingora.
//!
//! It terminates TLS (rustls, h2 and HTTP/1.1), redirects plain HTTP to HTTPS, sets
//! forwarding headers the registry can trust, and streams uploads and downloads to a
//! pool of registry nodes with health checks and failover.
//!
//! # Layout
//! How a request flows: `listen` accepts and guards the connection, `proxy` admits the
//! request (checks, token, limits) and streams it to a node from `upstream`. Everything
//! it is checked against comes from [`config`] through [`load`] and `settings`.
//!
//! Vocabulary (import nothing from the crate):
//! - [`config`]: YAML file shapes → validated [`config::Config`], one file per section.
//! - [`registry`]: request → endpoint, repository, [`registry::Action`]; the name grammar;
//!   token scopes.
//!
//! Serving requests:
//! - `listen`: accept loops; the guarded stream (deadlines, HTTP/1 header limits as the
//!   block arrives), the connection watch, PROXY protocol.
//! - `proxy`: `EdgeProxy` (Pingora `ProxyHttp`): admission steps, body streaming, node
//!   choice, failures, the access log, the framing of the edge's own answers.
//! - `request`: what any listener reads from a request: host, public origin, request ids,
//!   header limits, and whether it can be passed on unambiguously (`framing`).
//! - `redirect`: the plain-HTTP listeners (redirect to https, ACME http-01).
//! - `admin`: the admin listener (/metrics, /healthz, /readyz).
//! - [`upstream`]: registry node pool, repository affinity, health checks, upload-session pins,
//!   and the HTTP client for the edge's own requests to nodes (no environment proxy).
//! - `cache`: blobs and manifests pulled by digest, kept on disk (`cacache`) and served
//!   only to requests the edge authorized for a repository the registry confirmed.
//! - [`policy`]: storage quotas per namespace and immutable tags: manifest references, the
//!   usage store (SQLite), registry lookups and `usage scan`.
//! - `error`: the registry's JSON error envelope for the edge's own answers.
//! - [`report`]: errors in log lines and `check` messages: the whole chain of causes.
//! - `metrics`: Prometheus metrics.
//! - [`log_writer`]: log lines to stdout, access lines buffered per thread.
//! - [`log_bridge`]: Pingora's `log` records into tracing, the client's faults as WARN.
//!
//! Identity and limits:
//! - [`auth`]: token endpoint, access policy (account/group/claims rules), identities,
//!   tokens (keys, claims, issuing, verifying), per-request checks, and the login backends
//!   (`auth::users`: htpasswd, LDAP, OIDC ID tokens, an http authenticator, the credential
//!   cache).
//! - [`limits`]: push, upload-byte and failed-login limits on one Redis-first core.
//! - [`shared_state`]: the Redis connection shared limits use, and its probe.
//!
//! TLS:
//! - [`tls`]: PEM loading, key/cert matching, the SNI certificate resolver.
//! - `acme`: certificates from an ACME CA, renewed in the background.
//! - [`certgen`]: `gen-certs` (self-signed TLS and token-signing material).
//!
//! Running:
//! - [`load`]: reads everything a config names (what `check`, `run` and a reload share).
//! - [`server`]: assembles the Pingora services (used by `main` and tests).
//! - `settings`: the reloadable per-request snapshot of the configuration.
//! - `reload`: SIGHUP: validate the new config, then swap it in.
//! - [`drain`]: SIGTERM: stop accepting, exit once requests in flight finish.
//! - [`registry_config`]: the registry's matching `auth:` block; htpasswd lines.
//!
//! Benchmarks: `bench_support` (hidden) lets `benches/hot_paths.rs` time private
//! per-request code.

#![warn(unreachable_pub)]

pub(crate) mod acme;
pub(crate) mod admin;
pub mod auth;
#[doc(hidden)]
pub mod bench_support;
pub mod cache;
pub mod certgen;
pub mod config;
pub mod drain;
pub(crate) mod error;
pub(crate) mod hooks;
pub mod limits;
pub(crate) mod listen;
pub mod load;
pub mod log_bridge;
pub mod log_writer;
pub(crate) mod metrics;
pub mod policy;
pub(crate) mod proxy;
pub(crate) mod redirect;
pub mod registry;
pub mod registry_config;
pub(crate) mod reload;
pub mod report;
pub(crate) mod request;
pub mod server;
pub(crate) mod settings;
pub mod shared_state;
pub mod tls;
pub mod upstream;
