//! The pool of registry nodes: selection (repository affinity or round robin) and health.
//!
//! - `pool`: the node list, Ketama affinity with fallback, health checks.
//! - `sessions`: upload sessions pinned to the node that started them.
//! - `client`: the HTTP client for the edge's own requests to nodes (direct, no proxy).

mod client;
mod pool;
mod sessions;

pub use client::{registry_client, RegistryClientError};
pub(crate) use pool::{NodeList, NodePool, PoolService};
pub(crate) use sessions::UploadSessions;
