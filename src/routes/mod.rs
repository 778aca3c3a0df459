//! `routes`: other registries behind the edge, each with a pool of its own.
//!
//! A request for a repository is matched against the routes in order (`table`): by the
//! repository's prefix, the request's `Host`, or containerd's `ns` query parameter. A match
//! gives the repository its **name at the edge** (the route's prefix and the name the pool
//! knows), which the ACL, the limits, the cache and the logs see, and the pool's name, which
//! the request carries towards the pool (`rewrite`: the path on the way out; `Location`,
//! `Link` and a tag list's `name` on the way back, for clients that used the prefix).
//!
//! - `table`: the routes in force and the match.
//! - `health`: the route pools' health checks (routes come and go with reloads, so they are
//!   not Pingora services).
//! - `rewrite`: pool names in paths, headers and tag lists.

mod health;
pub(crate) mod rewrite;
mod table;

pub(crate) use health::check_if_due;
pub(crate) use table::{Routed, Routes};
