//! Storage quotas per namespace and immutable tags (`policy:`), a feature with four hooks
//! (see `crate::hooks` for the shape):
//!
//! - `admit` (admission's `Policy` step): refuse an upload start over quota, a manifest
//!   `PUT` declared over 4 MiB, a `DELETE` an immutable tag points to; look up a protected
//!   tag's digest.
//! - `new_attempt` (`upstream_peer`): a retried `PUT` holds its body again.
//! - `request_body`: hold a manifest whole and decide it (immutable tag, quota); cut an
//!   upload that streams past its namespace's quota.
//! - `upstream_response`: record a stored or deleted manifest on the registry's 2xx.
//!
//! Its per-request state is `RequestState` (`RequestCtx::policy`).
//!
//! - `admit`, `body`, `request`: the hooks and the per-request state.
//! - `usage`: the running `Policy`: usage per namespace, in `store` (SQLite in
//!   `policy.state_dir`, run off the async threads by `local`, which replaces a broken file)
//!   or in Redis (`redis_usage`, with `shared_state.redis`); `reserve`: bytes of manifest
//!   PUTs admitted and not yet answered; `error`: why usage cannot be read.
//! - `manifest`: what a manifest body references (descriptors and sizes).
//! - `scan`: `registry-edge usage scan` (rebuilding usage from the registry's API,
//!   `upstream::registry_api`) and `usage show`.
//! - `gauges`: the usage and quota metrics, refreshed in the background.
//!
//! Usage of a namespace is the sum of the sizes of the distinct blobs (layers, configs,
//! child manifests) referenced by the manifests stored in its repositories. The edge learns
//! it from the manifest PUTs and DELETEs it proxies, committing each only after the
//! registry answered 2xx.

mod admit;
mod body;
mod error;
mod gauges;
mod local;
mod manifest;
mod redis_usage;
mod request;
mod reserve;
pub mod scan;
mod store;
mod usage;

pub(crate) use admit::admit;
pub(crate) use body::request_body;
pub use error::PolicyError;
pub(crate) use gauges::UsageGauges;
pub(crate) use request::{new_attempt, upstream_response, RequestState};
pub(crate) use usage::Policy;
