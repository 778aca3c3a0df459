//! Token scopes (`type[(class)]:name:action[,action]`) and repository name validation.
//!
//! A name may carry `host:port/`, so the type ends at the FIRST colon and the actions
//! start after the LAST one (distribution `docs/spec/auth/scope.md`). Malformed scopes
//! are dropped by the caller, never an error.

use std::collections::BTreeSet;
use std::fmt;

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
    pub fn catalog() -> Scope {
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
    pub fn parse_all<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Scope> {
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

/// Longest repository name distribution accepts.
const MAX_NAME_LEN: usize = 255;

/// The distribution name grammar, with an optional `host[:port]/` prefix:
/// components `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*` separated by `/`.
pub fn is_valid_repository(name: &str) -> bool {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return false;
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    // A first segment with a dot, a colon or equal to localhost is a registry host.
    if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
        if !is_valid_host(parts[0]) {
            return false;
        }
        parts.remove(0);
    }
    parts.iter().all(|c| is_valid_component(c))
}

fn is_valid_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let name_ok = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    port_ok && name_ok
}

fn is_valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    // Separators between alphanumeric runs: one `.`, one or two `_`, or any number of `-`.
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
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
    fn name_grammar() {
        for ok in [
            "a",
            "a/b",
            "a.b/c_d/e__f/g---h",
            "localhost/app",
            "my-host.io:5000/app",
            "0/1",
        ] {
            assert!(is_valid_repository(ok), "{ok}");
        }
        let long = "a".repeat(256);
        for bad in [
            "",
            "A",
            "a/",
            "/a",
            "a//b",
            "a/../b",
            ".a",
            "a.",
            "a..b",
            "a___b",
            "a%2fb",
            "a b",
            long.as_str(),
        ] {
            assert!(!is_valid_repository(bad), "{bad}");
        }
    }

    #[test]
    fn display_round_trips() {
        let scope = Scope::repository("team/app", &["push", "pull"]);
        assert_eq!(scope.to_string(), "repository:team/app:pull,push");
        assert_eq!(Scope::parse(&scope.to_string()), Some(scope));
    }
}
