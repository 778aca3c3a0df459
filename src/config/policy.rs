//! `policy:`: storage quotas per namespace and immutable tags, enforced at the edge.
//!
//! Sizes as in `cache:` (`20GiB`, `500MB`, bytes); globs are `globset`'s: `*` and `?` stay
//! within one path segment, `**` crosses them, `[0-9]` is a class.

use std::collections::BTreeMap;
use std::path::PathBuf;

use globset::{Glob, GlobBuilder, GlobMatcher};

use super::error::ConfigError;
use super::file::{ImmutableItem, PolicyFile, QuotasFile};
use super::keys::{key_table, Changes};
use super::validate::Validator;

/// The validated `policy:` section.
#[derive(Debug, Clone)]
pub struct PolicySettings {
    /// The embedded store's folder (created 0700). Unused when `shared_state.redis` is set.
    pub state_dir: PathBuf,
    /// Leading path segments that make a namespace: `team/app/x` → `team` at depth 1.
    pub namespace_depth: usize,
    pub quotas: Quotas,
    pub immutable: ImmutableTags,
}

/// `policy.quotas`: bytes per namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quotas {
    /// For namespaces not listed; `None` = no limit.
    pub default: Option<u64>,
    pub namespaces: BTreeMap<String, u64>,
    pub exempt_accounts: Vec<String>,
}

impl Quotas {
    /// The quota of `namespace` in bytes; `None` = no limit.
    pub(crate) fn of(&self, namespace: &str) -> Option<u64> {
        self.namespaces.get(namespace).copied().or(self.default)
    }
}

/// One `immutable_tags` rule: tags matching `tags` in repositories matching `name`.
#[derive(Debug, Clone)]
pub struct TagRule {
    /// The globs as written, for messages.
    pub name_glob: String,
    pub tag_globs: Vec<String>,
    /// Accounts this rule does not hold for (besides the section's).
    pub exempt_accounts: Vec<String>,
    name: GlobMatcher,
    tags: Vec<GlobMatcher>,
}

/// `policy.immutable_tags`.
#[derive(Debug, Clone, Default)]
pub struct ImmutableTags {
    pub rules: Vec<TagRule>,
    pub exempt_accounts: Vec<String>,
}

impl ImmutableTags {
    /// Whether `tag` of `repository` may not move once it exists, for `account`.
    pub(crate) fn protects(&self, repository: &str, tag: &str, account: &str) -> bool {
        self.rules_for(account)
            .any(|r| r.name.is_match(repository) && r.tags.iter().any(|t| t.is_match(tag)))
    }

    /// Whether any rule covers some tag of `repository` for `account`.
    pub(crate) fn covers_repository(&self, repository: &str, account: &str) -> bool {
        self.rules_for(account).any(|r| r.name.is_match(repository))
    }

    /// The rules that hold for `account`.
    fn rules_for<'a>(&'a self, account: &'a str) -> impl Iterator<Item = &'a TagRule> + 'a {
        let exempt = move |list: &[String]| list.iter().any(|a| a == account);
        let all_exempt = exempt(&self.exempt_accounts);
        self.rules
            .iter()
            .filter(move |r| !all_exempt && !exempt(&r.exempt_accounts))
    }
}

impl PartialEq for ImmutableTags {
    fn eq(&self, other: &Self) -> bool {
        let globs = |t: &ImmutableTags| {
            t.rules
                .iter()
                .map(|r| {
                    (
                        r.name_glob.clone(),
                        r.tag_globs.clone(),
                        r.exempt_accounts.clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
        globs(self) == globs(other) && self.exempt_accounts == other.exempt_accounts
    }
}

impl PartialEq for PolicySettings {
    fn eq(&self, other: &Self) -> bool {
        self.state_dir == other.state_dir
            && self.namespace_depth == other.namespace_depth
            && self.quotas == other.quotas
            && self.immutable == other.immutable
    }
}

key_table! {
    // The usage store is opened at start (so are its keys' depth); removing `policy:`
    // turns it off at once, like `cache:`.
    POLICY = AtRestartUnlessRemoved("policy");
    STATE_DIR = AtRestart("policy.state_dir");
    NAMESPACE_DEPTH = AtRestart("policy.namespace_depth");
    // The rules are read per request.
    QUOTAS = Live("policy.quotas");
    IMMUTABLE_TAGS = Live("policy.immutable_tags");
}

/// Notes which `policy` keys differ; turning the section on or off is a change of `policy`.
pub(super) fn policy_changes(
    old: &Option<PolicySettings>,
    new: &Option<PolicySettings>,
    changes: &mut Changes,
) {
    let (Some(old), Some(new)) = (old, new) else {
        let on = |p: &Option<PolicySettings>| p.as_ref().map(|_| ());
        return changes.note_optional(POLICY, &on(old), &on(new));
    };
    let PolicySettings {
        state_dir,
        namespace_depth,
        quotas,
        immutable,
    } = old;
    changes.note(STATE_DIR, state_dir, &new.state_dir);
    changes.note(NAMESPACE_DEPTH, namespace_depth, &new.namespace_depth);
    changes.note(QUOTAS, quotas, &new.quotas);
    changes.note(IMMUTABLE_TAGS, immutable, &new.immutable);
}

pub(super) fn policy_settings(
    v: &Validator,
    file: PolicyFile,
) -> Result<PolicySettings, ConfigError> {
    let PolicyFile {
        state_dir,
        namespace_depth,
        quotas,
        immutable_tags,
    } = file;
    if state_dir.trim().is_empty() {
        return Err(v.invalid("policy.state_dir", "must name a directory"));
    }
    let state_dir = v.file_path(&state_dir);
    v.writable_dir("policy.state_dir", &state_dir)?;
    let namespace_depth = namespace_depth.unwrap_or(1);
    if namespace_depth == 0 {
        return Err(v.invalid("policy.namespace_depth", "must be 1 or more"));
    }
    let quotas = match quotas {
        None => Quotas::default(),
        Some(q) => quotas_settings(v, q, namespace_depth)?,
    };
    let mut immutable = ImmutableTags::default();
    for (i, item) in immutable_tags.into_iter().enumerate() {
        immutable_item(v, i, item, &mut immutable)?;
    }
    Ok(PolicySettings {
        state_dir,
        namespace_depth,
        quotas,
        immutable,
    })
}

/// `policy.quotas`: sizes with units, namespaces a repository can have at `depth`.
fn quotas_settings(v: &Validator, q: QuotasFile, depth: usize) -> Result<Quotas, ConfigError> {
    let QuotasFile {
        default,
        namespaces,
        exempt_accounts,
    } = q;
    Ok(Quotas {
        default: default
            .map(|text| quota_size(v, "policy.quotas.default", &text))
            .transpose()?,
        namespaces: namespaces
            .into_iter()
            .map(|(namespace, text)| {
                let key = format!("policy.quotas.namespaces.{namespace}");
                check_namespace(v, &key, &namespace, depth)?;
                Ok((namespace, quota_size(v, &key, &text)?))
            })
            .collect::<Result<_, ConfigError>>()?,
        exempt_accounts,
    })
}

/// Item `index` of `policy.immutable_tags`, added to `immutable`: a rule, or accounts
/// exempt from every rule.
fn immutable_item(
    v: &Validator,
    index: usize,
    item: ImmutableItem,
    immutable: &mut ImmutableTags,
) -> Result<(), ConfigError> {
    let key = format!("policy.immutable_tags[{index}]");
    match item {
        ImmutableItem {
            name: None,
            tags: None,
            exempt_accounts: Some(accounts),
        } => immutable.exempt_accounts.extend(accounts),
        ImmutableItem {
            name: Some(name),
            tags: Some(tags),
            exempt_accounts,
        } => {
            if tags.is_empty() {
                return Err(v.invalid(&key, "tags: needs at least one glob"));
            }
            immutable.rules.push(TagRule {
                name: glob(v, &format!("{key}.name"), &name)?,
                tags: tags
                    .iter()
                    .map(|t| glob(v, &format!("{key}.tags"), t))
                    .collect::<Result<_, _>>()?,
                name_glob: name,
                tag_globs: tags,
                exempt_accounts: exempt_accounts.unwrap_or_default(),
            });
        }
        _ => {
            return Err(v.invalid(
                &key,
                "a rule needs both name (a repository glob) and tags (tag globs), and may \
                 have exempt_accounts; an item with exempt_accounts alone exempts those \
                 accounts from every rule",
            ))
        }
    }
    Ok(())
}

/// A quota's size: a number without a unit would be bytes, which is never what a quota
/// means (`3` is 3 bytes, not 3 GiB): refused, except `0`.
fn quota_size(v: &Validator, key: &str, text: &str) -> Result<u64, ConfigError> {
    let trimmed = text.trim();
    if trimmed != "0" && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return Err(v.invalid(
            key,
            format!("{trimmed:?} has no unit; write e.g. {trimmed}GiB or {trimmed}MB (bytes: {trimmed}B)"),
        ));
    }
    v.size(key, trimmed)
}

/// A listed namespace must be one a repository can have: lowercase name components
/// (distribution's grammar: `[a-z0-9]` with `.`, `_`, `-` between) and at most
/// `namespace_depth` of them, or it would silently never match.
fn check_namespace(
    v: &Validator,
    key: &str,
    namespace: &str,
    depth: usize,
) -> Result<(), ConfigError> {
    let component = |c: &str| {
        !c.is_empty()
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && c.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
    };
    let parts: Vec<&str> = namespace.split('/').collect();
    if !parts.iter().all(|c| component(c)) {
        return Err(v.invalid(key, "not a namespace a repository can have (lowercase letters, digits, and . _ - between them)"));
    }
    if parts.len() > depth {
        return Err(v.invalid(key, format!("has {} path segments; policy.namespace_depth is {depth}, so no repository is in it", parts.len())));
    }
    Ok(())
}

/// A glob where `*` stays within a path segment and `**` crosses them (`team/*` matches
/// `team/app`, not `team/app/x`).
fn glob(v: &Validator, key: &str, text: &str) -> Result<GlobMatcher, ConfigError> {
    if text.is_empty() {
        return Err(v.invalid(key, "an empty glob matches nothing"));
    }
    GlobBuilder::new(text)
        .literal_separator(true)
        .build()
        .map(|g: Glob| g.compile_matcher())
        .map_err(|e| v.invalid(key, format!("invalid glob {text:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(yaml: &str) -> Result<PolicySettings, ConfigError> {
        let file: PolicyFile = serde_yaml::from_str(yaml).unwrap();
        let path = std::path::Path::new("/tmp/edge.yaml");
        policy_settings(&Validator::new(path), file)
    }

    #[test]
    fn the_documented_section_parses() {
        let s = settings(
            r#"
state_dir: /tmp/registry-edge-policy-test
namespace_depth: 1
quotas:
  default: 20GiB
  namespaces: { team-a: 100GiB, sandbox: 5GiB }
  exempt_accounts: [admin]
immutable_tags:
  - { name: "**", tags: ["v[0-9]*", "release-*"] }
  - exempt_accounts: [release-bot]
"#,
        )
        .unwrap();
        assert_eq!(s.quotas.of("team-a"), Some(100 << 30));
        assert_eq!(s.quotas.of("other"), Some(20 << 30));
        assert_eq!(s.immutable.exempt_accounts, ["release-bot"]);
        assert!(s.immutable.protects("team/app", "v1.0", "alice"));
        assert!(s.immutable.protects("a/b/c", "release-7", "alice"));
        assert!(!s.immutable.protects("a/b/c", "release-7", "release-bot"));
        assert!(!s.immutable.protects("team/app", "latest", "alice"));
        assert!(!s.immutable.protects("team/app", "version", "alice"));
    }

    #[test]
    fn star_stays_within_a_segment() {
        let s = settings(
            "{ state_dir: /tmp/p, immutable_tags: [ { name: \"team/*\", tags: [\"*\"], exempt_accounts: [bot] } ] }",
        )
        .unwrap();
        assert!(s.immutable.protects("team/app", "x", "alice"));
        assert!(
            !s.immutable.protects("team/app", "x", "bot"),
            "a rule's own exemption"
        );
        assert!(!s.immutable.protects("team/app/sub", "x", "alice"));
        assert_eq!(s.quotas.of("team"), None);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (yaml, key) in [
            (
                "{ state_dir: /tmp/p, quotas: { default: lots } }",
                "policy.quotas.default",
            ),
            (
                "{ state_dir: /tmp/p, quotas: { namespaces: { a: 5XB } } }",
                "policy.quotas.namespaces.a",
            ),
            (
                "{ state_dir: /tmp/p, namespace_depth: 0 }",
                "policy.namespace_depth",
            ),
            (
                "{ state_dir: /tmp/p, immutable_tags: [ { name: \"[\", tags: [x] } ] }",
                "policy.immutable_tags[0].name",
            ),
            (
                "{ state_dir: /tmp/p, immutable_tags: [ { name: a, tags: [] } ] }",
                "policy.immutable_tags[0]",
            ),
            ("{ state_dir: /dev/null }", "policy.state_dir"),
            (
                "{ state_dir: /tmp/p, quotas: { default: 3 } }",
                "policy.quotas.default",
            ),
            (
                "{ state_dir: /tmp/p, immutable_tags: [ { name: a } ] }",
                "policy.immutable_tags[0]",
            ),
            (
                "{ state_dir: /tmp/p, quotas: { namespaces: { Team: 1GiB } } }",
                "policy.quotas.namespaces.Team",
            ),
            (
                "{ state_dir: /tmp/p, quotas: { namespaces: { team/app: 1GiB } } }",
                "policy.quotas.namespaces.team/app",
            ),
        ] {
            let error = settings(yaml).unwrap_err().to_string();
            assert!(error.contains(key), "{yaml}: {error}");
        }
    }
}
