//! Access policy: the first rule matching (account, type, name) decides; no match = no access.
//!
//! `account` and `name` are globs: `*` matches within one path segment, `**` across
//! segments, `?` one character. `${account}` in a name expands to the authenticated
//! user. An account pattern of `""` matches only anonymous requests, and `*` matches
//! only authenticated users, so a rule for "everyone logged in" never opens a
//! repository to anonymous clients by accident.

use std::collections::BTreeSet;

use crate::registry::Scope;

pub use crate::config::{Actions, Rule};

/// Whether `rule` applies to `account` asking for `scope`.
fn rule_matches(rule: &Rule, account: &str, scope: &Scope) -> bool {
    if rule.kind != scope.kind {
        return false;
    }
    let account_ok = match rule.account.as_str() {
        "" => account.is_empty(),
        pattern => !account.is_empty() && glob_match(pattern, account),
    };
    if !account_ok {
        return false;
    }
    match expand_account(&rule.name, account) {
        Some(pattern) => glob_match(&pattern, &scope.name),
        None => false,
    }
}

/// `${account}` expansion; `None` when the account would act as a pattern or is anonymous.
fn expand_account(pattern: &str, account: &str) -> Option<String> {
    if !pattern.contains("${account}") {
        return Some(pattern.to_string());
    }
    if account.is_empty() || account.contains(['*', '?', '/']) {
        return None;
    }
    Some(pattern.replace("${account}", account))
}

/// The ordered rule list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    pub rules: Vec<Rule>,
}

impl Acl {
    /// The actions of `requested` that `account` gets: the intersection with the first
    /// matching rule, possibly empty. Asking for more is never an error.
    pub fn grant(&self, account: &str, requested: &Scope) -> BTreeSet<String> {
        let Some(rule) = self
            .rules
            .iter()
            .find(|r| rule_matches(r, account, requested))
        else {
            return BTreeSet::new();
        };
        match &rule.actions {
            Actions::All => requested.actions.clone(),
            Actions::Only(allowed) => requested.actions.intersection(allowed).cloned().collect(),
        }
    }
}

/// Glob match: `**` any characters, `*` any characters but `/`, `?` one character but `/`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match p {
            [] => t.is_empty(),
            [b'*', b'*', rest @ ..] => (0..=t.len()).any(|i| go(rest, &t[i..])),
            [b'*', rest @ ..] => {
                let limit = t.iter().position(|&c| c == b'/').unwrap_or(t.len());
                (0..=limit).any(|i| go(rest, &t[i..]))
            }
            [b'?', rest @ ..] => matches!(t, [c, ..] if *c != b'/') && go(rest, &t[1..]),
            [c, rest @ ..] => matches!(t, [d, ..] if d == c) && go(rest, &t[1..]),
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(account: &str, kind: &str, name: &str, actions: &[&str]) -> Rule {
        Rule::new(account, kind, name, actions)
    }

    fn example() -> Acl {
        Acl {
            rules: vec![
                rule("admin", "repository", "**", &["*"]),
                rule("admin", "registry", "catalog", &["*"]),
                rule(
                    "*",
                    "repository",
                    "${account}/**",
                    &["pull", "push", "delete"],
                ),
                rule("ci-*", "repository", "builds/*", &["pull", "push"]),
                rule("", "repository", "public/*", &["pull"]),
                rule("*", "repository", "public/*", &["pull"]),
                rule("mallory", "repository", "**", &[]),
            ],
        }
    }

    fn granted(acl: &Acl, account: &str, scope: &str) -> Vec<String> {
        acl.grant(account, &Scope::parse(scope).unwrap())
            .into_iter()
            .collect()
    }

    #[test]
    fn first_match_and_intersection() {
        let acl = example();
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "admin",
                "repository:anything/deep/name:pull,push,delete",
                &["delete", "pull", "push"],
            ),
            ("admin", "registry:catalog:*", &["*"]),
            ("alice", "registry:catalog:*", &[]),
            ("alice", "repository:alice/app:pull,push", &["pull", "push"]),
            ("alice", "repository:alice/team/app:push", &["push"]),
            ("alice", "repository:bob/app:pull,push", &[]),
            ("alice", "repository:public/base:pull,push", &["pull"]),
            ("", "repository:public/base:pull,push", &["pull"]),
            ("", "repository:public/deep/base:pull", &[]),
            ("", "repository:alice/app:pull", &[]),
            (
                "ci-runner",
                "repository:builds/app:pull,push,delete",
                &["pull", "push"],
            ),
            ("ci-runner", "repository:builds/a/b:pull", &[]),
        ];
        for (account, scope, expected) in cases {
            assert_eq!(
                granted(&acl, account, scope),
                *expected,
                "{account:?} {scope}"
            );
        }
    }

    #[test]
    fn star_account_never_matches_anonymous() {
        let acl = Acl {
            rules: vec![rule("*", "repository", "**", &["*"])],
        };
        assert!(granted(&acl, "", "repository:a:pull").is_empty());
        assert_eq!(granted(&acl, "u", "repository:a:pull"), ["pull"]);
    }

    #[test]
    fn account_cannot_smuggle_patterns() {
        let acl = Acl {
            rules: vec![rule("**", "repository", "${account}/*", &["*"])],
        };
        assert!(granted(&acl, "*", "repository:x/app:pull").is_empty());
    }

    #[test]
    fn globs() {
        assert!(glob_match("a/*", "a/b"));
        assert!(!glob_match("a/*", "a/b/c"));
        assert!(glob_match("a/**", "a/b/c"));
        assert!(glob_match("**", "x/y"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "a/c"));
        assert!(glob_match("*", "catalog"));
        assert!(!glob_match("*", "a/b"));
    }
}
