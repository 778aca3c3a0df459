//! `policy:` as written: the usage store, quotas per namespace, immutable tags.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `policy:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct PolicyFile {
    /// The embedded store's folder (relative to the config file's folder).
    pub state_dir: String,
    /// Leading path segments of a repository that make its namespace. Default 1.
    #[serde(default)]
    pub namespace_depth: Option<usize>,
    #[serde(default)]
    pub quotas: Option<QuotasFile>,
    #[serde(default)]
    pub immutable_tags: Vec<ImmutableItem>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct QuotasFile {
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub namespaces: BTreeMap<String, String>,
    #[serde(default)]
    pub exempt_accounts: Vec<String>,
}

/// One item of `immutable_tags`: a rule `{ name, tags }` (optionally with its own
/// `exempt_accounts`), or `{ exempt_accounts }` alone: accounts exempt from every rule. The
/// issue's sketch puts `exempt_accounts:` under the rule list without a `-`, which is not
/// YAML; written as a list item (`- exempt_accounts: [...]`) it is.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct ImmutableItem {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    #[serde(default)]
    pub exempt_accounts: Option<Vec<String>>,
}
