//! `auth.acl`: the access policy's rules, as written. Matching lives in `auth::acl`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

use super::error::ConfigError;
use super::file;
use super::validate::Validator;

/// Actions a rule allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actions {
    /// `["*"]`: every action.
    All,
    /// An explicit list; empty = deny.
    Only(BTreeSet<String>),
}

impl Actions {
    /// As the config file reads an action list: `*` anywhere means every action.
    pub(crate) fn from_list<S: AsRef<str>>(actions: &[S]) -> Actions {
        if actions.iter().any(|a| a.as_ref() == "*") {
            Actions::All
        } else {
            Actions::Only(actions.iter().map(|a| a.as_ref().to_string()).collect())
        }
    }
}

/// One rule: its selectors (every one given must match; at least one is given), the
/// resource it covers and what it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Glob on the account; `""` = anonymous only. `None`: any account.
    pub account: Option<String>,
    /// Glob on the groups the login backend reported. `None`: groups not looked at.
    pub group: Option<String>,
    /// Exact values the OIDC token's string claims must have; empty: not looked at.
    pub claims: BTreeMap<String, String>,
    /// Networks the client address must be in; empty: not looked at.
    pub from: Vec<IpNet>,
    /// `repository` (default) or `registry`.
    pub kind: String,
    /// Glob on the name, with `${account}` and `${claims.NAME}` placeholders.
    pub name: String,
    pub actions: Actions,
    pub comment: Option<String>,
}

impl Rule {
    /// An account rule as the config file would load it, without a comment.
    pub fn new(account: &str, kind: &str, name: &str, actions: &[&str]) -> Rule {
        Rule {
            account: Some(account.into()),
            group: None,
            claims: BTreeMap::new(),
            from: Vec::new(),
            kind: kind.into(),
            name: name.into(),
            actions: Actions::from_list(actions),
            comment: None,
        }
    }
}

pub(super) fn acl_rule(
    v: &Validator,
    index: usize,
    rule: file::AclRuleFile,
) -> Result<Rule, ConfigError> {
    let file::AclRuleFile {
        account,
        group,
        claims,
        from,
        kind,
        name,
        actions,
        comment,
    } = rule;
    let key = |field: &str| format!("auth.acl[{index}].{field}");
    if from.as_ref().is_some_and(Vec::is_empty) {
        return Err(v.invalid(
            key("from"),
            "an empty list would match every address: list networks, or leave from out",
        ));
    }
    let from = from.unwrap_or_default();
    if account.is_none() && group.is_none() && claims.is_empty() && from.is_empty() {
        return Err(v.invalid(
            format!("auth.acl[{index}]"),
            "a rule needs at least one selector: account, group, claims or from",
        ));
    }
    let from = from
        .iter()
        .map(|text| parse_network(text).map_err(|problem| v.invalid(key("from"), problem)))
        .collect::<Result<Vec<_>, _>>()?;
    if group.as_deref() == Some("") {
        return Err(v.invalid(key("group"), "must not be empty"));
    }
    if let Some(claim) = claims.keys().find(|c| c.is_empty()) {
        return Err(v.invalid(key("claims"), format!("claim name {claim:?} is empty")));
    }
    let kind = kind.unwrap_or_else(|| "repository".to_string());
    if kind != "repository" && kind != "registry" {
        return Err(v.invalid(
            key("type"),
            format!("{kind:?} is not one of repository, registry"),
        ));
    }
    if name.is_empty() {
        return Err(v.invalid(key("name"), "must not be empty"));
    }
    check_placeholders(&name).map_err(|problem| v.invalid(key("name"), problem))?;
    let actions = Actions::from_list(&actions);
    if let Actions::Only(list) = &actions {
        if let Some(bad) = list
            .iter()
            .find(|a| !matches!(a.as_str(), "pull" | "push" | "delete"))
        {
            return Err(v.invalid(
                key("actions"),
                format!("{bad:?} is not one of pull, push, delete, *"),
            ));
        }
    }
    Ok(Rule {
        account,
        group,
        claims,
        from,
        kind,
        name,
        actions,
        comment,
    })
}

/// A network as `from:` and `token create --from` write it: a CIDR (`10.0.0.0/8`,
/// `fd00::/8`) or one address. The host bits are cleared, so `10.1.2.3/8` is `10.0.0.0/8`;
/// an IPv4-mapped network (`::ffff:10.0.0.0/104`) is its IPv4 one, as client addresses are
/// read.
pub fn parse_network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    let net = text
        .parse::<IpNet>()
        .map(|net| net.trunc())
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is not a CIDR (10.0.0.0/8, fd00::/8) or an address"))?;
    Ok(match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        _ => net,
    })
}

/// Every `${…}` in a name is `${account}` or `${claims.NAME}` with a non-empty NAME: a
/// misspelt placeholder would otherwise be matched literally and never grant anything.
fn check_placeholders(name: &str) -> Result<(), String> {
    let mut rest = name;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("{name:?} has an unclosed ${{"));
        };
        let inner = &after[..end];
        let ok = inner == "account"
            || inner
                .strip_prefix("claims.")
                .is_some_and(|claim| !claim.is_empty());
        if !ok {
            return Err(format!(
                "{name:?}: ${{{inner}}} is not ${{account}} or ${{claims.NAME}}"
            ));
        }
        rest = &after[end + 1..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_read_as_client_addresses_are() {
        let net = |text| parse_network(text).map(|n| n.to_string());
        assert_eq!(net("10.1.2.3/8").unwrap(), "10.0.0.0/8");
        assert_eq!(net("192.0.2.7").unwrap(), "192.0.2.7/32");
        assert_eq!(net("::ffff:10.0.0.0/104").unwrap(), "10.0.0.0/8");
        assert_eq!(net("fd00::/8").unwrap(), "fd00::/8");
        assert!(net("10.0.0.0/40").unwrap_err().contains("10.0.0.0/40"));
    }
}
