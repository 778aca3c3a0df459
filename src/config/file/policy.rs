//! `policy:` as written: the usage store, quotas per namespace, immutable tags.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

/// `policy:` as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct PolicyFile {
    /// The embedded store's folder (relative to the config file's folder).
    pub state_dir: String,
    /// Leading path segments of a repository that make its namespace. Default 1.
    #[serde(default)]
    pub namespace_depth: Option<usize>,
    /// Storage quotas per namespace. Default: none (usage is counted, nothing is refused).
    #[serde(default)]
    pub quotas: Option<QuotasFile>,
    /// Tags that may not move to another digest or be deleted: rules and exemptions.
    /// Default `[]`.
    #[serde(default)]
    pub immutable_tags: Vec<ImmutableItem>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct QuotasFile {
    /// Size allowed to a namespace not listed in `namespaces`, e.g. `20GiB`. Default: no
    /// limit.
    #[serde(default)]
    pub default: Option<String>,
    /// Size allowed per namespace, e.g. `{ team-a: 100GiB }`. Default `{}`.
    #[serde(default)]
    pub namespaces: BTreeMap<String, String>,
    /// Accounts (token subjects) whose pushes are never refused for a quota. Default `[]`.
    #[serde(default)]
    pub exempt_accounts: Vec<String>,
}

/// One item of `immutable_tags`: a rule `{ name, tags }` (optionally with its own
/// `exempt_accounts`), or `{ exempt_accounts }` alone: accounts exempt from every rule. The
/// issue's sketch puts `exempt_accounts:` under the rule list without a `-`, which is not
/// YAML; written as a list item (`- exempt_accounts: [...]`) it is.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct ImmutableItem {
    /// Glob on the repository (`*` within a segment, `**` across). Required in a rule.
    /// Default: none (an exemptions-only item).
    #[serde(default)]
    pub name: Option<String>,
    /// Globs on the tag, e.g. `["v[0-9]*", "release-*"]`. Required in a rule. Default: none.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// Accounts exempt from this rule, or from every rule in an item of its own.
    /// Default: none.
    #[serde(default)]
    pub exempt_accounts: Option<Vec<String>>,
}
