//! Configuration: YAML file shapes (`file`) turned into validated runtime types.
//!
//! A leaf of the crate: it imports nothing from it. `model` holds [`Config`] and its
//! assembly; each section's types sit beside their converter (`server`, `tls`, `upstream`,
//! `auth`, `users`, `acl`, `limits`, `shared_state`, `cache`, `policy`), with the table of
//! its keys that says which a reload applies live (`keys`; `changes` walks them);
//! `choices` holds the closed sets; `validate` names file and key in every error (`error`);
//! `reference` writes `docs/configuration.md` from the file shapes and the key tables.

mod acl;
mod auth;
mod cache;
mod changes;
mod choices;
mod error;
mod file;
mod keys;
mod limits;
mod model;
mod policy;
pub mod reference;
mod routes;
mod server;
mod shared_state;
mod tls;
mod upstream;
mod users;
mod validate;

use std::path::Path;

pub use acl::{parse_network, Actions, Rule};
pub use auth::{AuthSettings, TrustedIssuer};
pub use cache::CacheSettings;
pub use choices::{AcmeChallenge, Balance, LimitKey, LogFormat, OnUnavailable};
pub use error::ConfigError;
pub use keys::Applied;
pub(crate) use keys::Changes;
pub use limits::{Limits, PullBudget, PullLimit, PushLimit, UploadBytesLimit};
pub use model::{Config, Maintenance};
pub use policy::{ImmutableTags, PolicySettings, Quotas, TagRule};
pub use routes::{RouteSettings, DEFAULT_ROUTE};
pub use server::{AdminSettings, ClientTimeouts, ExternalUrl, ServerSettings};
pub use shared_state::RedisSettings;
pub use tls::{AcmeSettings, CertificatePaths};
pub use upstream::{ForwardedSettings, UpstreamSettings};
pub use users::{HttpAuthenticatorSettings, LdapSettings, OidcSettings, UsersSettings};
pub use validate::Names;
#[cfg(test)]
pub(crate) use {changes::all_keys, keys::Key};

/// Reads and validates a configuration file. Relative paths in it resolve against its folder.
pub(crate) fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with(path, Names::Resolve)
}

/// Like [`load`], with registry node names checked for shape only (`host:port`) and not
/// looked up: for commands that never contact the nodes (`registry-config`, `cache purge`,
/// `usage show`), so they work on a host whose DNS cannot resolve them. Nodes given by
/// name are then missing from `upstream.nodes`.
pub fn load_offline(path: &Path) -> Result<Config, ConfigError> {
    load_with(path, Names::ShapeOnly)
}

fn load_with(path: &Path, names: Names) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_with(path, &text, names)
}

/// Validates configuration text as if it had been read from `path`.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    parse_with(path, text, Names::Resolve)
}

fn parse_with(path: &Path, text: &str, names: Names) -> Result<Config, ConfigError> {
    let shape: file::ConfigFile = serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Config::from_file(path, shape, names)
}
