//! What an access token may do: its scopes as `token create --scope` writes them
//! (`team/app/**:pull,push`: a repository glob as the ACL's names are written, then the
//! actions), and the grant they make with the ACL.

use std::collections::BTreeSet;

use ipnet::IpNet;

use crate::auth::glob::glob_match;
use crate::registry::Scope;

/// Actions a scope may name (`*`: all of them), as ACL rules name them.
const ACTIONS: [&str; 4] = ["pull", "push", "delete", "*"];

/// One `--scope NAME:ACTIONS`: a repository glob (`*` within a segment, `**` across) and
/// the actions it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopePattern {
    pub name: String,
    pub actions: BTreeSet<String>,
}

impl ScopePattern {
    /// Reads `team/app/**:pull,push`. Errors say what is wrong, naming the text.
    pub fn parse(text: &str) -> Result<ScopePattern, String> {
        let shape = || format!("{text:?}: a scope is NAME:ACTIONS, e.g. \"team/app/**:pull,push\"");
        let (name, actions) = text.rsplit_once(':').ok_or_else(shape)?;
        if name.is_empty() || actions.is_empty() {
            return Err(shape());
        }
        let name_chars =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/*?".contains(c);
        if !name.chars().all(name_chars) || name.starts_with('/') || name.ends_with('/') {
            return Err(format!(
                "{text:?}: {name:?} is not a repository name or glob (lowercase letters, digits, \
                 . _ - / and the globs * ** ?)"
            ));
        }
        let actions: BTreeSet<String> = actions.split(',').map(|a| a.trim().to_string()).collect();
        if let Some(bad) = actions.iter().find(|a| !ACTIONS.contains(&a.as_str())) {
            return Err(format!(
                "{text:?}: {bad:?} is not one of pull, push, delete, *"
            ));
        }
        Ok(ScopePattern {
            name: name.to_string(),
            actions,
        })
    }

    fn allows(&self, action: &str) -> bool {
        self.actions.contains("*") || self.actions.contains(action)
    }
}

impl std::fmt::Display for ScopePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let actions: Vec<&str> = self.actions.iter().map(String::as_str).collect();
        write!(f, "{}:{}", self.name, actions.join(","))
    }
}

/// What a login with an access token brings to the ACL: a **robot** token's scopes are
/// its whole grant (no rule is consulted); a **personal** token's scopes narrow what the
/// ACL gives the account it acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    pub robot: bool,
    pub scopes: Vec<ScopePattern>,
    /// The token's `--from` networks: its registry tokens work only from there too.
    pub from: Vec<IpNet>,
}

impl TokenGrant {
    /// The actions of `requested` the token's scopes allow (repository scopes only).
    pub(crate) fn actions_for(&self, requested: &Scope) -> BTreeSet<String> {
        if requested.kind != "repository" {
            return BTreeSet::new();
        }
        let matching: Vec<&ScopePattern> = self
            .scopes
            .iter()
            .filter(|p| glob_match(&p.name, &requested.name))
            .collect();
        requested
            .actions
            .iter()
            .filter(|action| matching.iter().any(|p| p.allows(action)))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_with_the_text() {
        let scope = ScopePattern::parse("team/app/**:pull,push").unwrap();
        assert_eq!(scope.name, "team/app/**");
        assert_eq!(scope.to_string(), "team/app/**:pull,push");
        for (bad, says) in [
            ("team/app/**:fly", "\"fly\" is not one of"),
            ("team/app", "NAME:ACTIONS"),
            (":pull", "NAME:ACTIONS"),
            ("Team/App:pull", "not a repository name"),
            ("/x:pull", "not a repository name"),
        ] {
            let error = ScopePattern::parse(bad).unwrap_err();
            assert!(
                error.contains(says) && error.contains(bad),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn grant_is_the_union_of_matching_scopes_within_what_was_asked() {
        let grant = TokenGrant {
            robot: true,
            from: Vec::new(),
            scopes: vec![
                ScopePattern::parse("team/app/**:pull,push").unwrap(),
                ScopePattern::parse("team/*:pull").unwrap(),
                ScopePattern::parse("admin/**:*").unwrap(),
            ],
        };
        let actions = |scope: &str| -> Vec<String> {
            grant
                .actions_for(&Scope::parse(scope).unwrap())
                .into_iter()
                .collect()
        };
        assert_eq!(
            actions("repository:team/app/web:pull,push,delete"),
            ["pull", "push"]
        );
        assert_eq!(actions("repository:team/other:pull,push"), ["pull"]);
        assert!(actions("repository:elsewhere/x:pull").is_empty());
        assert_eq!(actions("repository:admin/x:delete"), ["delete"]);
        assert!(actions("registry:catalog:*").is_empty());
    }
}
