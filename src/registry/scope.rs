//! Token scopes (`type[(class)]:name:action[,action]`), the token-auth spec's unit of access.
//!
//! A name may carry `host:port/`, so the type ends at the FIRST colon and the actions
//! start after the LAST one (distribution `docs/spec/auth/scope.md`). Malformed scopes
//! are dropped by the caller, never an error.

use std::collections::BTreeSet;
use std::fmt;

use super::name::is_valid_repository;

/// What a token grants or a request needs on one resource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Scope {
    /// `repository` or `registry` (other types parse but match no rule).
    pub kind: String,
    pub name: String,
    pub actions: BTreeSet<String>,
}

impl Scope {
    pub fn repository(name: &str, actions: &[&str]) -> Scope {
        Scope {
            kind: "repository".into(),
            name: name.into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// `registry:catalog:*`
    pub(crate) fn catalog() -> Scope {
        Scope {
            kind: "registry".into(),
            name: "catalog".into(),
            actions: ["*".to_string()].into(),
        }
    }

    /// Parses one scope; `None` when malformed or when a repository name is invalid.
    pub fn parse(text: &str) -> Option<Scope> {
        let (kind, rest) = text.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        // `repository(plugin):name:pull` — the class is deprecated and ignored.
        let kind = kind.split_once('(').map_or(kind, |(k, _)| k);
        if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_lowercase()) {
            return None;
        }
        let valid_name = match kind {
            "repository" => is_valid_repository(name),
            _ => !name.is_empty() && !name.contains(char::is_whitespace),
        };
        if !valid_name {
            return None;
        }
        let actions: BTreeSet<String> = actions
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_lowercase() || b == b'*'))
            .map(str::to_string)
            .collect();
        Some(Scope {
            kind: kind.to_string(),
            name: name.to_string(),
            actions,
        })
    }

    /// Parses every scope in repeated and/or space-separated values, dropping malformed ones.
    pub(crate) fn parse_all<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Scope> {
        values
            .into_iter()
            .flat_map(str::split_whitespace)
            .filter_map(Scope::parse)
            .collect()
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let actions: Vec<&str> = self.actions.iter().map(String::as_str).collect();
        write!(f, "{}:{}:{}", self.kind, self.name, actions.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scopes_with_hosts_and_classes() {
        type Expected<'a> = Option<(&'a str, &'a str, &'a [&'a str])>;
        let cases: &[(&str, Expected)] = &[
            (
                "repository:alice/app:pull,push",
                Some(("repository", "alice/app", &["pull", "push"])),
            ),
            (
                "repository:registry.example.com:5000/team/app:pull",
                Some((
                    "repository",
                    "registry.example.com:5000/team/app",
                    &["pull"],
                )),
            ),
            (
                "repository(plugin):app:pull",
                Some(("repository", "app", &["pull"])),
            ),
            ("registry:catalog:*", Some(("registry", "catalog", &["*"]))),
            ("repository:app:", Some(("repository", "app", &[]))),
            ("repository:Upper/App:pull", None),
            ("repository:../etc:pull", None),
            ("repository:a//b:pull", None),
            ("repository:app", None),
            ("nonsense", None),
            (":app:pull", None),
        ];
        for (text, expected) in cases {
            let parsed = Scope::parse(text);
            match expected {
                None => assert_eq!(parsed, None, "{text}"),
                Some((kind, name, actions)) => {
                    let scope = parsed.unwrap_or_else(|| panic!("{text} should parse"));
                    assert_eq!(scope.kind, *kind, "{text}");
                    assert_eq!(scope.name, *name, "{text}");
                    let got: Vec<&str> = scope.actions.iter().map(String::as_str).collect();
                    assert_eq!(got, *actions, "{text}");
                }
            }
        }
    }

    #[test]
    fn repeated_and_space_separated_values() {
        let scopes = Scope::parse_all([
            "repository:a:pull repository:b:push",
            "repository:c:pull",
            "bad",
        ]);
        let names: Vec<&str> = scopes.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn display_round_trips() {
        let scope = Scope::repository("team/app", &["push", "pull"]);
        assert_eq!(scope.to_string(), "repository:team/app:pull,push");
        assert_eq!(Scope::parse(&scope.to_string()), Some(scope));
    }
}
