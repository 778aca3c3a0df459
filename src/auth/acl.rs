//! Access policy: the first rule matching (identity, type, name) decides; no match = no access.
//!
//! A rule selects by `account`, `group` and/or `claims`; every selector it gives must
//! match. `account`, `group` and `name` are globs: `*` matches within one path segment,
//! `**` across segments, `?` one character. An account pattern of `""` matches only
//! anonymous requests, and `*` only authenticated users, so a rule for "everyone logged
//! in" never opens a repository to anonymous clients by accident. `group` matches any of
//! the groups the login backend reported; `claims` needs each listed claim to equal its
//! value exactly. In a name, `${account}` expands to the account and `${claims.NAME}` to
//! an OIDC claim; a value that holds glob characters (or is empty or absent) makes the
//! rule not match, so an identity can never widen a pattern.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::auth::glob::glob_match;
use crate::auth::identity::Identity;
use crate::registry::Scope;

pub use crate::config::{Actions, Rule};

/// Whether `rule` applies to `identity` asking for `scope` from `client`.
fn rule_matches(rule: &Rule, identity: &Identity, scope: &Scope, client: Option<IpAddr>) -> bool {
    if rule.kind != scope.kind {
        return false;
    }
    if !rule.from.is_empty() && !client.is_some_and(|ip| in_networks(&rule.from, ip)) {
        return false;
    }
    let account = identity.account.as_str();
    let account_ok = match rule.account.as_deref() {
        None => true,
        Some("") => account.is_empty(),
        Some(pattern) => !account.is_empty() && glob_match(pattern, account),
    };
    let group_ok = match rule.group.as_deref() {
        None => true,
        Some(pattern) => identity.groups.iter().any(|g| glob_match(pattern, g)),
    };
    let claims_ok = rule
        .claims
        .iter()
        .all(|(name, value)| identity.claims.get(name) == Some(value));
    if !(account_ok && group_ok && claims_ok) {
        return false;
    }
    match expand(&rule.name, identity) {
        Some(pattern) => glob_match(&pattern, &scope.name),
        None => false,
    }
}

/// `${account}` and `${claims.NAME}` expansion; `None` when a value is missing, empty or
/// would act as a pattern. `${account}` must also be one path segment.
fn expand(pattern: &str, identity: &Identity) -> Option<String> {
    if !pattern.contains("${") {
        return Some(pattern.to_string());
    }
    let mut out = String::with_capacity(pattern.len() + 32);
    let mut rest = pattern;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}')?;
        let value = match &after[..end] {
            "account" if identity.account.contains('/') => return None,
            "account" => identity.account.as_str(),
            inner => identity
                .claims
                .get(inner.strip_prefix("claims.")?)?
                .as_str(),
        };
        if value.is_empty() || value.contains(['*', '?']) {
            return None;
        }
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// The ordered rule list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    pub rules: Vec<Rule>,
}

/// What a rule granted: the actions, and the networks the token may use them from (the
/// rule's `from:`; empty = anywhere).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    pub actions: BTreeSet<String>,
    pub from: Vec<IpNet>,
}

impl Acl {
    /// The actions of `requested` that `identity` gets from `client` (its address after
    /// trusted proxies; `None` matches no `from:` rule): the intersection with the first
    /// matching rule, possibly empty. Asking for more is never an error.
    ///
    /// An access token's identity gets only what its scopes allow: all of that for a robot
    /// (no rule is consulted for it, not even `account: "*"`), the ACL's grant within it
    /// for a personal token (the ACL sees the user it acts as).
    pub fn grant(&self, identity: &Identity, requested: &Scope, client: Option<IpAddr>) -> Grant {
        let Some(token) = &identity.token else {
            return self.rules_grant(identity, requested, client);
        };
        let actions = token.actions_for(requested);
        if token.robot || actions.is_empty() {
            return Grant {
                actions,
                from: token.from.clone(),
            };
        }
        let narrowed = Scope {
            actions,
            ..requested.clone()
        };
        let grant = self.rules_grant(identity, &narrowed, client);
        match both(&grant.from, &token.from) {
            Some(from) => Grant { from, ..grant },
            None => Grant::default(),
        }
    }

    fn rules_grant(&self, identity: &Identity, requested: &Scope, client: Option<IpAddr>) -> Grant {
        let Some(rule) = self
            .rules
            .iter()
            .find(|r| rule_matches(r, identity, requested, client))
        else {
            return Grant::default();
        };
        let actions = match &rule.actions {
            Actions::All => requested.actions.clone(),
            Actions::Only(allowed) => requested.actions.intersection(allowed).cloned().collect(),
        };
        Grant {
            actions,
            from: rule.from.clone(),
        }
    }
}

/// The networks in both lists (each empty = anywhere); `None` when they share none.
fn both(a: &[IpNet], b: &[IpNet]) -> Option<Vec<IpNet>> {
    if a.is_empty() || b.is_empty() {
        return Some(if a.is_empty() { b.to_vec() } else { a.to_vec() });
    }
    let shared: Vec<IpNet> = a
        .iter()
        .flat_map(|x| b.iter().map(move |y| (x, y)))
        .filter_map(|(x, y)| match (x.contains(y), y.contains(x)) {
            (true, _) => Some(*y),
            (_, true) => Some(*x),
            _ => None,
        })
        .collect();
    (!shared.is_empty()).then_some(shared)
}

/// Whether `ip` is in one of `networks` (an IPv4-mapped IPv6 address as its IPv4 one).
pub(crate) fn in_networks(networks: &[IpNet], ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    networks.iter().any(|net| net.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::identity::Backend;

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
        let backend = if account.is_empty() {
            Backend::Anonymous
        } else {
            Backend::Htpasswd
        };
        granted_to(acl, &Identity::new(account, backend), scope)
    }

    fn granted_to(acl: &Acl, identity: &Identity, scope: &str) -> Vec<String> {
        let client = "192.0.2.1".parse().ok();
        acl.grant(identity, &Scope::parse(scope).unwrap(), client)
            .actions
            .into_iter()
            .collect()
    }

    #[test]
    fn network_lists_intersect() {
        let nets =
            |list: &[&str]| -> Vec<IpNet> { list.iter().map(|n| n.parse().unwrap()).collect() };
        assert_eq!(
            both(&[], &nets(&["10.0.0.0/8"])),
            Some(nets(&["10.0.0.0/8"]))
        );
        assert_eq!(
            both(&nets(&["10.0.0.0/8"]), &[]),
            Some(nets(&["10.0.0.0/8"]))
        );
        assert_eq!(
            both(
                &nets(&["10.0.0.0/8", "fd00::/8"]),
                &nets(&["10.1.0.0/16", "192.0.2.0/24"])
            ),
            Some(nets(&["10.1.0.0/16"]))
        );
        assert_eq!(both(&nets(&["10.0.0.0/8"]), &nets(&["192.0.2.0/24"])), None);
    }

    #[test]
    fn from_selects_by_client_network_and_travels_with_the_grant() {
        let mut inside = Rule::new("", "repository", "public/**", &["pull"]);
        inside.from = vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()];
        let mut everyone = Rule::new("*", "repository", "public/**", &["pull"]);
        everyone.account = None;
        everyone.from = vec!["192.168.0.0/16".parse().unwrap()];
        let acl = Acl {
            rules: vec![inside, everyone],
        };
        let anonymous = Identity::anonymous();
        let scope = Scope::parse("repository:public/x:pull").unwrap();
        let from = |ip: &str| acl.grant(&anonymous, &scope, ip.parse().ok());
        assert_eq!(from("10.1.2.3").actions.len(), 1);
        assert_eq!(
            from("10.1.2.3").from.len(),
            2,
            "the rule's networks come along"
        );
        assert_eq!(from("::ffff:10.1.2.3").actions.len(), 1, "IPv4-mapped");
        assert_eq!(from("fd12::1").actions.len(), 1);
        assert!(from("11.0.0.1").actions.is_empty());
        assert!(acl.grant(&anonymous, &scope, None).actions.is_empty());
        // A rule with only `from:` selects everyone there, anonymous included.
        assert_eq!(
            from("192.168.1.1").from,
            ["192.168.0.0/16".parse::<IpNet>().unwrap()]
        );
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
    fn group_and_claims_selectors_all_must_match() {
        let mut platform = Rule::new("*", "repository", "platform/**", &["*"]);
        platform.account = None;
        platform.group = Some("platform".into());
        let mut claims = Rule::new(
            "",
            "repository",
            "${claims.repository}/**",
            &["pull", "push"],
        );
        claims.account = None;
        claims.claims = [("repository".to_string(), "acme/app".to_string())].into();
        let mut both = Rule::new("ci-*", "repository", "shared/*", &["pull"]);
        both.group = Some("dev*".into());
        let acl = Acl {
            rules: vec![platform, claims, both],
        };
        let alice = Identity::new("alice", Backend::Ldap).with_groups(vec!["platform".into()]);
        let bob = Identity::new("bob", Backend::Ldap).with_groups(vec!["developers".into()]);
        let ci_bob = Identity::new("ci-bob", Backend::Ldap).with_groups(vec!["developers".into()]);
        let mut job = Identity::new("repo:acme/app", Backend::Http);
        job.claims = [("repository".to_string(), "acme/app".to_string())].into();
        let mut other_job = job.clone();
        other_job.claims = [("repository".to_string(), "acme/other".to_string())].into();
        let mut pattern_job = job.clone();
        pattern_job.claims = [("repository".to_string(), "*".to_string())].into();
        let cases: &[(&Identity, &str, &[&str])] = &[
            (
                &alice,
                "repository:platform/x/y:pull,push",
                &["pull", "push"],
            ),
            (&bob, "repository:platform/x:pull", &[]),
            (
                &job,
                "repository:acme/app/cache:pull,push,delete",
                &["pull", "push"],
            ),
            (&job, "repository:acme/other/x:pull", &[]),
            (&other_job, "repository:acme/app/x:pull", &[]),
            (&pattern_job, "repository:anything/x:pull", &[]),
            (&bob, "repository:shared/x:pull", &[]),
            (&ci_bob, "repository:shared/x:pull", &["pull"]),
        ];
        for (identity, scope, expected) in cases {
            assert_eq!(
                granted_to(&acl, identity, scope),
                *expected,
                "{} {scope}",
                identity.account
            );
        }
        assert!(granted(&acl, "", "repository:platform/x:pull").is_empty());
    }
}
