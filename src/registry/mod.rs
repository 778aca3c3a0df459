//! Registry API vocabulary: what a request path means.

pub mod route;

pub use route::{decoded_path, is_api_path, Action, Endpoint, Route};
