//! The pool of registry nodes: selection (repository affinity or round robin) and health.

mod pool;
mod sessions;

pub use pool::{NodeList, NodePool, PoolService};
pub use sessions::UploadSessions;
