//! Token authentication at the edge: scopes, access policy, tokens, users, the realm
//! endpoint and the per-request check.

pub mod access;
pub mod acl;
pub mod scope;
pub mod throttle;
pub mod token;
pub mod users;
