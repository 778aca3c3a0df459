//! `upstream` and `forwarded`: the registry nodes and whose forwarding headers to believe.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use ipnet::IpNet;

use super::choices::Balance;
use super::error::ConfigError;
use super::file;
use super::keys::{key_table, Changes};
use super::validate::{Names, Validator};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    pub nodes: Vec<SocketAddr>,
    pub balance: Balance,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub health_path: String,
    pub health_interval: Duration,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardedSettings {
    pub trusted_proxies: Vec<IpNet>,
}

impl ForwardedSettings {
    pub(crate) fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

key_table! {
    // The pool swaps its node list on reload; health checks then judge new nodes.
    NODES = Live("upstream.nodes");
    // The load balancer is built at start.
    BALANCE = AtRestart("upstream.balance");
    // Read per request.
    CONNECT_TIMEOUT = Live("upstream.connect_timeout");
    READ_TIMEOUT = Live("upstream.read_timeout");
    // The health check service is set up at start.
    HEALTH_PATH = AtRestart("upstream.health_check.path");
    HEALTH_INTERVAL = AtRestart("upstream.health_check.interval");
    // Read per request.
    FORWARDED = Live("forwarded");
}

/// Notes which `upstream` keys differ between `old` and `new`.
pub(super) fn upstream_changes(
    old: &UpstreamSettings,
    new: &UpstreamSettings,
    changes: &mut Changes,
) {
    let UpstreamSettings {
        nodes,
        balance,
        connect_timeout,
        read_timeout,
        health_path,
        health_interval,
    } = old;
    changes.note(NODES, nodes, &new.nodes);
    changes.note(BALANCE, balance, &new.balance);
    changes.note(CONNECT_TIMEOUT, connect_timeout, &new.connect_timeout);
    changes.note(READ_TIMEOUT, read_timeout, &new.read_timeout);
    changes.note(HEALTH_PATH, health_path, &new.health_path);
    changes.note(HEALTH_INTERVAL, health_interval, &new.health_interval);
}

/// Notes whether `forwarded` differs.
pub(super) fn forwarded_changes(
    old: &ForwardedSettings,
    new: &ForwardedSettings,
    changes: &mut Changes,
) {
    let ForwardedSettings { trusted_proxies } = old;
    changes.note(FORWARDED, trusted_proxies, &new.trusted_proxies);
}

pub(super) fn upstream_settings(
    v: &Validator,
    upstream: file::UpstreamFile,
) -> Result<UpstreamSettings, ConfigError> {
    let file::UpstreamFile {
        nodes,
        balance,
        connect_timeout,
        read_timeout,
        health_check,
    } = upstream;
    let pool = PoolFile {
        nodes,
        balance,
        connect_timeout,
        read_timeout,
        health_check,
    };
    pool_settings(v, "upstream", pool)
}

/// A pool's keys as written, under `upstream` or a route.
pub(super) struct PoolFile {
    pub nodes: Vec<String>,
    pub balance: Option<Balance>,
    pub connect_timeout: Option<String>,
    pub read_timeout: Option<String>,
    pub health_check: Option<file::HealthCheckFile>,
}

/// A pool's settings; `section` names its keys in errors (`upstream`, `routes[1]`).
pub(super) fn pool_settings(
    v: &Validator,
    section: &str,
    pool: PoolFile,
) -> Result<UpstreamSettings, ConfigError> {
    let PoolFile {
        nodes,
        balance,
        connect_timeout,
        read_timeout,
        health_check,
    } = pool;
    let nodes = node_addresses(v, section, &nodes)?;
    let balance = balance.unwrap_or_default();
    let (health_path, health_interval) = match health_check {
        None => (None, None),
        Some(file::HealthCheckFile { path, interval }) => (path, interval),
    };
    let health_path = health_path.unwrap_or_else(|| "/v2/".to_string());
    if !health_path.starts_with('/') {
        return Err(v.invalid(
            format!("{section}.health_check.path"),
            format!("{health_path:?} must start with /"),
        ));
    }
    let health_interval = v.nonzero_duration(
        &format!("{section}.health_check.interval"),
        health_interval.as_deref(),
        Duration::from_secs(5),
    )?;
    Ok(UpstreamSettings {
        nodes,
        balance,
        connect_timeout: v.duration(
            &format!("{section}.connect_timeout"),
            connect_timeout.as_deref(),
            Duration::from_secs(5),
        )?,
        read_timeout: v.duration(
            &format!("{section}.read_timeout"),
            read_timeout.as_deref(),
            Duration::from_secs(900),
        )?,
        health_path,
        health_interval,
    })
}

/// Why a registry node's address is not usable.
#[derive(Debug, thiserror::Error)]
enum NodeError {
    #[error("{0:?} needs a port (host:port)")]
    NoPort(String),
    #[error("cannot resolve {text:?}: {source}")]
    Unresolved {
        text: String,
        source: std::io::Error,
    },
    #[error("{0:?} resolves to no address")]
    NoAddress(String),
}

/// `<section>.nodes`: at least one; names are looked up unless the load checks shapes only
/// (then nodes given by name are left out).
fn node_addresses(
    v: &Validator,
    section: &str,
    nodes: &[String],
) -> Result<Vec<SocketAddr>, ConfigError> {
    if nodes.is_empty() {
        return Err(v.invalid(
            format!("{section}.nodes"),
            "at least one registry node is needed",
        ));
    }
    let mut resolved = Vec::with_capacity(nodes.len());
    for (i, text) in nodes.iter().enumerate() {
        let invalid = |e: NodeError| v.invalid(format!("{section}.nodes[{i}]"), e.to_string());
        match v.names {
            Names::Resolve => resolved.push(resolve_node(text).map_err(invalid)?),
            Names::ShapeOnly => {
                if let Some(addr) = node_shape(text).map_err(invalid)? {
                    resolved.push(addr);
                }
            }
        }
    }
    Ok(resolved)
}

fn resolve_node(text: &str) -> Result<SocketAddr, NodeError> {
    if let Some(addr) = node_shape(text)? {
        return Ok(addr);
    }
    text.to_socket_addrs()
        .map_err(|source| NodeError::Unresolved {
            text: text.to_string(),
            source,
        })?
        .next()
        .ok_or_else(|| NodeError::NoAddress(text.to_string()))
}

/// A node's address when it is an IP literal, `None` for a `host:port` name (not looked
/// up); an error when it is neither.
fn node_shape(text: &str) -> Result<Option<SocketAddr>, NodeError> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(Some(addr));
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(None),
        _ => Err(NodeError::NoPort(text.to_string())),
    }
}

pub(super) fn forwarded_settings(
    v: &Validator,
    forwarded: file::ForwardedFile,
) -> Result<ForwardedSettings, ConfigError> {
    let file::ForwardedFile { trusted_proxies } = forwarded;
    let trusted_proxies = trusted_proxies
        .iter()
        .enumerate()
        .map(|(i, text)| {
            text.parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    v.invalid(
                        format!("forwarded.trusted_proxies[{i}]"),
                        format!("{text:?} is not a CIDR or IP address"),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ForwardedSettings { trusted_proxies })
}
