//! Registry API vocabulary, shared by every layer that reads a request: what a request
//! addresses and does (`route`), which repository names are valid (`name`), and the scopes
//! tokens grant (`scope`). It imports nothing from the crate.

pub mod name;
pub mod route;
pub mod scope;

pub use name::is_valid_repository;
pub use route::{decoded_path, is_api_path, Action, Endpoint, Route};
pub use scope::Scope;
