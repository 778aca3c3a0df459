//! registry-edge: an edge gateway for container registries, built on Pingora.
//!
//! It terminates TLS (rustls, h2 and HTTP/1.1), redirects plain HTTP to HTTPS, sets
//! forwarding headers the registry can trust, and streams uploads and downloads to a
//! pool of registry nodes with health checks and failover.
//!
//! # Layout
//! The request path, in order:
//! 1. `listen` accepts and guards the connection (deadlines, header limits, PROXY protocol).
//! 2. `proxy`'s admission steps: header limits, request id, framing and `Host`
//!    (`request`), strict host, route (`registry`, and the `routes` one that takes the
//!    repository: `proxy::routing`), repository name, read-only, the token realm
//!    (`auth::endpoint`), the token (`auth::check`), a read-only route, then the
//!    features' admission hooks: **cache** (answer a pull by digest, warm or from the one
//!    registry fetch of a cold digest) and **policy** (quotas, immutable tags),
//!    then the body size and the push limit (`limits`).
//! 3. `upstream` picks the node of the request's pool (affinity, upload-session pins); the
//!    policy's new-attempt hook; forwarding headers (`proxy::headers`); a route's pool path
//!    and token.
//! 4. Request body: counted, limited, throttled (`proxy::body`), then the policy's body
//!    hook (a held manifest, a bounded upload).
//! 5. The registry's answer: the node's answer noted (passive health), upload-session pins,
//!    then the features' response hooks (the cache confirms per endpoint, a by-tag
//!    manifest answer filling its digest; the policy records), the cache's response-body
//!    hook.
//! 6. Refusals, whenever decided, and failures: one path (`proxy::refusal`); then the
//!    access line and metrics.
//!
//! A feature (`cache`, `policy`) is one folder owning its per-request state and one hook
//! per phase it cares about; `hooks` holds what the phases and the features share, and
//! `proxy::features` calls the hooks. Everything a request is checked against comes from
//! [`config`] through [`load`] and `settings`.
//!
//! Vocabulary (import nothing from the crate):
//! - [`config`]: YAML file shapes → validated [`config::Config`], one file per section, each
//!   declaring its keys as live or needing a restart (what a reload walks); `reference`
//!   writes `docs/configuration.md` from them.
//! - [`registry`]: request → endpoint, repository, [`registry::Action`]; the name grammar;
//!   token scopes.
//!
//! Serving requests:
//! - `listen`: accept loops; the guarded stream (deadlines, HTTP/1 header limits as the
//!   block arrives), the connection watch, PROXY protocol.
//! - `proxy`: `EdgeProxy` (Pingora `ProxyHttp`): the phases, admission steps, body
//!   streaming, node choice, the features' hook calls, refusals and failures, the access
//!   log, the framing of the edge's own answers.
//! - `hooks`: what a feature sees of a request (`RequestFacts`) and can decide (`Outcome`,
//!   `Refusal`).
//! - `request`: what any listener reads from a request: host, client address, public
//!   origin, request ids, header limits, and whether it can be passed on unambiguously
//!   (`framing`).
//! - `redirect`: the plain-HTTP listeners (redirect to https, ACME http-01).
//! - `admin`: the admin listener (/metrics, /healthz, /readyz).
//! - `routes`: other registries behind the edge (`routes:`), each with its own pool: which
//!   requests a route takes (prefix, `Host`, containerd's `ns`), its pool's health checks,
//!   and the pool's names rewritten to the edge's in paths, headers and tag lists.
//! - [`upstream`]: registry node pool, repository affinity, active and passive health
//!   (`answers`: nodes that answered lately stay usable), upload-session
//!   pins, and the registry's API as the edge itself asks it (`registry_api`: direct to
//!   the nodes, the edge-signed lookup token).
//! - [`cache`] (feature): blobs and manifests pulled by digest, kept on disk (`cacache`,
//!   verified once, then trusted while unchanged), filled by one registry fetch per cold
//!   digest that every client reads as it grows, and served only to requests the edge
//!   authorized for a repository and endpoint the registry confirmed, as the registry
//!   answers there. Hooks: admit, upstream response, response body.
//! - [`policy`] (feature): storage quotas per namespace and immutable tags; the usage store
//!   (SQLite or Redis) and `usage scan`. Hooks: admit, new attempt, request body, upstream
//!   response.
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
//! - `state_dir`: the private folders the cache, the policy and the access tokens keep
//!   their state in, and how their SQLite stores are opened.
//! - `reload`: SIGHUP: validate the new config, then swap it in.
//! - [`drain`]: SIGTERM: stop accepting, exit once requests in flight finish.
//! - [`registry_config`]: the registry's matching `auth:` block; htpasswd lines.
//! - [`token_command`]: `registry-edge token create | list | revoke` (access tokens).
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
pub(crate) mod routes;
pub mod server;
pub(crate) mod settings;
pub mod shared_state;
pub(crate) mod state_dir;
pub mod tls;
pub mod token_command;
pub mod upstream;
