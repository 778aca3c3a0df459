//! Shared test harness: the real `distribution` registry, the real `registry-edge`
//! binary and real clients (curl, skopeo), all on 127.0.0.1 ephemeral ports.
//! Every process is killed when its handle drops; readiness is polled with a deadline.
//!
//! Everything below is re-exported here, so tests write `common::{curl, Edge, …}`.
//! - `process.rs`: [`Proc`] (killed on drop), [`free_port`], [`wait_for`], [`tool`], [`skip`]
//! - `registry.rs`: [`Registry`], the real registry node
//! - `edge.rs`: [`Edge`], [`edge_with_node`], [`upstream_yaml`], [`reload`]
//! - `clients.rs`: [`curl`], [`skopeo`], blob pushes and uploads, [`tiny_oci_layout`]
//! - `tls.rs`: [`make_certs`], openssl keys, raw TLS connections ([`tls_connect`], [`read_head`])
//! - `metrics.rs`: [`admin_metrics`], [`metric`], [`put_throttled_ms`]
//! - `checks.rs`: [`Checks`], soft assertions: the parts of one scenario all run, the
//!   test fails once naming every failed part
//!
//! Used by some tests only, by path: `auth` (token-auth fixtures), `config_cases` (the
//! table `check` is tested with), `echo` (an upstream that echoes what the edge sent),
//! `setup` (the registry and an edge with one feature, `cache:` or `policy:`, shared by
//! the cache and policy tests), `cache` and `policy` (what those tests ask of it),
//! `containerd` (a private containerd driven with `ctr`), `docker` (a private Docker engine), `docs` (the Markdown docs: complete configs, links), `images` (container images made offline, any layer
//! size), `h2client` (a raw HTTP/2 client), `ldap` (a real slapd with a seeded directory),
//! `oidc` (an OpenID Connect issuer whose keys the test holds), `pebble` (the ACME test
//! CA), `redis` (a real redis-server), `raw` (raw HTTP/1.1: request texts, answers read
//! back), `tokens` (`registry-edge token …`: create, list).
#![allow(dead_code)]

pub mod auth;
pub mod cache;
pub mod config_cases;
pub mod containerd;
pub mod docker;
pub mod docs;
pub mod echo;
pub mod h2client;
pub mod images;
pub mod ldap;
pub mod oidc;
pub mod pebble;
pub mod policy;
pub mod raw;
pub mod redis;
pub mod setup;
pub mod tokens;

mod checks;
mod clients;
mod edge;
mod metrics;
mod process;
mod registry;
mod tls;

// Each test binary uses a different part; a glob none of it uses is no mistake.
#[allow(unused_imports)]
pub use checks::*;
#[allow(unused_imports)]
pub use clients::*;
#[allow(unused_imports)]
pub use edge::*;
#[allow(unused_imports)]
pub use metrics::*;
#[allow(unused_imports)]
pub use process::*;
#[allow(unused_imports)]
pub use registry::*;
#[allow(unused_imports)]
pub use tls::*;
