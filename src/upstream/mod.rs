//! The pool of registry nodes: selection (repository affinity or round robin) and health.

mod pool;

pub use pool::{NodeList, NodePool, PoolService};
