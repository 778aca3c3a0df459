//! `routes`: other registries behind the edge, each with a pool of its own, chosen by
//! repository prefix, `Host` or containerd's `ns` parameter.

use std::collections::HashSet;
use std::time::Duration;

use super::error::ConfigError;
use super::file::RouteFile;
use super::keys::{key_table, Changes};
use super::upstream::{pool_settings, PoolFile, UpstreamSettings};
use super::validate::Validator;
use crate::registry::is_valid_repository;

/// The label the default pool (`upstream`) has in metrics and the access log; no route may
/// take it.
pub const DEFAULT_ROUTE: &str = "default";

/// One route: which requests it takes and the pool they go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSettings {
    /// `[a-z0-9-]+`: the label in logs and metrics.
    pub name: String,
    /// What every repository name this route serves starts with at the edge: `prefix`, or
    /// for a route without one, `name` followed by `/`. The pool sees names without it.
    pub edge_prefix: String,
    /// Whether requests whose repository starts with `edge_prefix` come here (`prefix` set).
    pub by_prefix: bool,
    /// Hosts (lowercase, no port) whose every repository comes here.
    pub hosts: Vec<String>,
    /// containerd `ns` values whose requests come here.
    pub ns: Vec<String>,
    pub pool: UpstreamSettings,
    /// Pushes and deletes are refused with `405 UNSUPPORTED`.
    pub read_only: bool,
    /// Oldest remembered by-tag answer served while the pool fails; `None` = never.
    pub stale_if_error: Option<Duration>,
}

key_table! {
    // Rules are read per request; a route's pool keeps its node states when only its
    // nodes or timeouts changed, and is rebuilt (checks starting within a second) otherwise.
    ROUTES = Live("routes");
}

/// Notes whether `routes` differs.
pub(super) fn routes_changes(old: &[RouteSettings], new: &[RouteSettings], c: &mut Changes) {
    c.note(ROUTES, old, new);
}

/// `routes`, in order; `has_cache`: whether `cache` is configured (`stale_if_error` needs it).
pub(super) fn routes_settings(
    v: &Validator,
    routes: Vec<RouteFile>,
    has_cache: bool,
) -> Result<Vec<RouteSettings>, ConfigError> {
    let mut settings: Vec<RouteSettings> = Vec::with_capacity(routes.len());
    let (mut hosts, mut ns) = (HashSet::new(), HashSet::new());
    for (i, file) in routes.into_iter().enumerate() {
        let section = format!("routes[{i}]");
        let route = route_settings(v, &section, file, has_cache)?;
        if let Some(other) = settings.iter().find(|r| r.name == route.name) {
            return Err(v.invalid(
                format!("{section}.name"),
                format!("{:?} is already the name of another route", other.name),
            ));
        }
        if let Some(other) = settings
            .iter()
            .find(|r| overlaps(&r.edge_prefix, &route.edge_prefix))
        {
            return Err(v.invalid(
                format!("{section}.prefix"),
                format!(
                    "names starting with {:?} overlap route {:?}'s {:?}: a repository would \
                     belong to both",
                    route.edge_prefix, other.name, other.edge_prefix
                ),
            ));
        }
        for host in &route.hosts {
            if !hosts.insert(host.clone()) {
                return Err(v.invalid(
                    format!("{section}.hosts"),
                    format!("{host:?} is listed by another route"),
                ));
            }
        }
        for value in &route.ns {
            if !ns.insert(value.clone()) {
                return Err(v.invalid(
                    format!("{section}.ns"),
                    format!("{value:?} is listed by another route"),
                ));
            }
        }
        settings.push(route);
    }
    Ok(settings)
}

/// Whether one prefix (ending in `/`) starts the other.
fn overlaps(a: &str, b: &str) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

fn route_settings(
    v: &Validator,
    section: &str,
    file: RouteFile,
    has_cache: bool,
) -> Result<RouteSettings, ConfigError> {
    let RouteFile {
        name,
        prefix,
        hosts,
        ns,
        nodes,
        balance,
        connect_timeout,
        read_timeout,
        health_check,
        read_only,
        stale_if_error,
    } = file;
    let valid_name = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid_name || name == DEFAULT_ROUTE {
        return Err(v.invalid(
            format!("{section}.name"),
            format!("{name:?} must be [a-z0-9-]+ and not {DEFAULT_ROUTE:?} (the upstream pool's)"),
        ));
    }
    if prefix.is_none() && hosts.is_empty() && ns.is_empty() {
        return Err(v.invalid(
            section,
            "a route needs at least one of prefix, hosts, ns: nothing would reach it",
        ));
    }
    let by_prefix = prefix.is_some();
    let edge_prefix = edge_prefix(v, section, &name, prefix)?;
    let hosts = hosts_of(v, section, &hosts)?;
    if let Some(empty) = ns
        .iter()
        .find(|value| value.is_empty() || value.contains('/'))
    {
        return Err(v.invalid(
            format!("{section}.ns"),
            format!("{empty:?} is not a registry host like docker.io"),
        ));
    }
    let stale_if_error = match stale_if_error {
        None => None,
        Some(_) if !has_cache => {
            return Err(v.invalid(
                format!("{section}.stale_if_error"),
                "remembered tags are answered from the cache's manifests: configure cache",
            ))
        }
        Some(text) => Some(v.nonzero_duration(
            &format!("{section}.stale_if_error"),
            Some(&text),
            Duration::ZERO,
        )?),
    };
    let pool = PoolFile {
        nodes,
        balance,
        connect_timeout,
        read_timeout,
        health_check,
    };
    Ok(RouteSettings {
        pool: pool_settings(v, section, pool)?,
        name,
        edge_prefix,
        by_prefix,
        hosts,
        ns,
        read_only,
        stale_if_error,
    })
}

/// The route's `prefix`, or `name/` without one.
fn edge_prefix(
    v: &Validator,
    section: &str,
    name: &str,
    prefix: Option<String>,
) -> Result<String, ConfigError> {
    let Some(prefix) = prefix else {
        return Ok(format!("{name}/"));
    };
    match valid_prefix(&prefix) {
        true => Ok(prefix),
        false => Err(v.invalid(
            format!("{section}.prefix"),
            format!(
                "{prefix:?} must be the start of a repository name ending in / \
                 (like hub/ or mirror/docker/)"
            ),
        )),
    }
}

/// `hosts`, lowercased; each a host name or address without a port.
fn hosts_of(v: &Validator, section: &str, hosts: &[String]) -> Result<Vec<String>, ConfigError> {
    hosts
        .iter()
        .map(|host| {
            valid_host(host).ok_or_else(|| {
                v.invalid(
                    format!("{section}.hosts"),
                    format!(
                        "{host:?} is not a host name (write it without a port: any port matches)"
                    ),
                )
            })
        })
        .collect()
}

/// A prefix is a repository name's first components followed by `/`.
fn valid_prefix(prefix: &str) -> bool {
    prefix
        .strip_suffix('/')
        .is_some_and(|start| !start.ends_with('/') && is_valid_repository(start))
}

/// The host lowercased, when it is a DNS name or an IP address without a port.
fn valid_host(host: &str) -> Option<String> {
    let host = host.to_ascii_lowercase();
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Some(host);
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    (host.len() <= 253 && host.split('.').all(label_ok)).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(routes: &str, cache: bool) -> Result<Vec<RouteSettings>, String> {
        let cache = match cache {
            true => "cache: { dir: cache, max_size: 1GiB }\n",
            false => "",
        };
        let text = format!(
            "server: {{ https_listen: [] }}\nupstream: {{ nodes: [\"127.0.0.1:5000\"] }}\n\
             {cache}routes:\n{routes}"
        );
        let dir = tempfile::tempdir().unwrap();
        crate::config::parse(&dir.path().join("edge.yaml"), &text)
            .map(|c| c.routes)
            .map_err(|e| format!("{e:#}"))
    }

    const NODES: &str = "nodes: [\"127.0.0.1:5001\"]";

    #[test]
    fn a_route_names_its_edge_prefix() {
        let routes = parse(
            &format!(
                "  - {{ name: hub, prefix: hub/, ns: [docker.io], {NODES}, read_only: true }}\n  \
                 - {{ name: quay, hosts: [Quay.Mirror.Test], {NODES}, stale_if_error: 24h }}\n"
            ),
            true,
        )
        .unwrap();
        assert_eq!(routes[0].edge_prefix, "hub/");
        assert!(routes[0].by_prefix && routes[0].read_only);
        assert_eq!(routes[1].edge_prefix, "quay/");
        assert!(!routes[1].by_prefix);
        assert_eq!(routes[1].hosts, ["quay.mirror.test"]);
        assert_eq!(routes[1].stale_if_error, Some(Duration::from_secs(86400)));
    }

    #[test]
    fn check_refuses_what_the_contract_lists() {
        let cases = [
            ("{ name: Hub, prefix: hub/, NODES }", "[a-z0-9-]+"),
            ("{ name: default, prefix: hub/, NODES }", "not \"default\""),
            ("{ name: hub, NODES }", "at least one of prefix, hosts, ns"),
            ("{ name: hub, prefix: hub, NODES }", "ending in /"),
            ("{ name: hub, prefix: Hub/, NODES }", "ending in /"),
            ("{ name: hub, prefix: hub//, NODES }", "ending in /"),
            (
                "{ name: hub, hosts: [\"m.test:443\"], NODES }",
                "without a port",
            ),
            ("{ name: hub, ns: [\"\"], NODES }", "registry host"),
            (
                "{ name: hub, prefix: hub/, nodes: [] }",
                "at least one registry node",
            ),
            (
                "{ name: hub, prefix: hub/, NODES, stale_if_error: 1h }",
                "configure cache",
            ),
            (
                "{ name: hub, prefix: hub/, NODES }\n  - { name: hub, prefix: q/, NODES }",
                "already the name",
            ),
            (
                "{ name: hub, prefix: hub/, NODES }\n  - { name: lib, prefix: hub/lib/, NODES }",
                "overlap",
            ),
            (
                "{ name: hub, ns: [docker.io], NODES }\n  - { name: h, prefix: hub/, NODES }",
                "overlap",
            ),
            (
                "{ name: a, hosts: [m.test], NODES }\n  - { name: b, hosts: [M.test], NODES }",
                "listed by another route",
            ),
            (
                "{ name: a, ns: [docker.io], NODES }\n  - { name: b, ns: [docker.io], NODES }",
                "listed by another route",
            ),
        ];
        for (route, expected) in cases {
            let route = route.replace("NODES", NODES);
            let error = parse(&format!("  - {route}\n"), false).unwrap_err();
            assert!(error.contains(expected), "{route}: {error}");
        }
    }
}
