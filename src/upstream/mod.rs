//! The pool of registry nodes and the edge's own requests to them.
//!
//! - `pool`: the node list, Ketama affinity with fallback, health checks.
//! - `answers`: passive health, the nodes that answered proxied requests lately.
//! - `sessions`: upload sessions pinned to the node that started them.
//! - `registry_api`: the registry's API as the edge asks it (the cache's confirmation,
//!   the policy's lookups, `usage scan`): direct to the node, never through a proxy.

mod answers;
mod pool;
pub(crate) mod registry_api;
mod sessions;

pub(crate) use pool::{NodeList, NodePool, PoolService};
pub(crate) use registry_api::RegistryClient;
pub use registry_api::{LookupError, RegistryClientError};
pub(crate) use sessions::UploadSessions;
