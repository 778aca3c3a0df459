//! Registry nodes behind the edge, chosen per request and health-checked in the background.
//!
//! `repository_hash` uses Ketama consistent hashing on the repository name so that an
//! upload's POST, PATCHes and PUT, and later pulls, reach one node (needed when nodes
//! keep storage locally). When that node is unhealthy or refused the connection, the
//! ring's next node is used. Requests without a repository rotate over healthy nodes.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use futures::FutureExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pingora::http::ResponseHeader;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::health_check::HttpHealthCheck;
use pingora::lb::selection::consistent::KetamaHashing;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::prelude::background_service;
use pingora::services::background::GenBackgroundService;
use pingora::ErrorType;

use super::answers::RecentAnswers;
use crate::config::{Balance, UpstreamSettings};

/// How far along the ring/rotation to look for an acceptable node.
/// Shortest time a health check waits for the node's answer.
const MIN_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// Failed checks in a row before a node is taken out of the pool.
const FAILURES_TO_MARK_DOWN: usize = 3;
const MAX_CANDIDATES: usize = 256;

enum Selector {
    Hash(Arc<LoadBalancer<KetamaHashing>>),
    RoundRobin(Arc<LoadBalancer<RoundRobin>>),
}

/// The background health-check service that must be added to the server.
pub(crate) enum PoolService {
    Hash(GenBackgroundService<LoadBalancer<KetamaHashing>>),
    RoundRobin(GenBackgroundService<LoadBalancer<RoundRobin>>),
}

/// The node list, replaceable by a reload; the pool re-reads it every [`DISCOVERY_INTERVAL`].
#[derive(Clone)]
pub(crate) struct NodeList(Arc<ArcSwap<Vec<SocketAddr>>>);

impl NodeList {
    pub(crate) fn new(nodes: &[SocketAddr]) -> NodeList {
        NodeList(Arc::new(ArcSwap::from_pointee(nodes.to_vec())))
    }

    pub(crate) fn replace(&self, nodes: &[SocketAddr]) {
        self.0.store(Arc::new(nodes.to_vec()));
    }
}

#[async_trait]
impl ServiceDiscovery for NodeList {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let backends = self
            .0
            .load()
            .iter()
            .map(|addr| Backend::new(&addr.to_string()))
            .collect::<pingora::Result<BTreeSet<_>>>()?;
        Ok((backends, HashMap::new()))
    }
}

/// How often the pool picks up a changed node list.
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(1);

/// Chooses registry nodes for requests.
pub(crate) struct NodePool {
    selector: Selector,
    /// Rotates keys for requests that have no repository.
    rotation: AtomicUsize,
    /// Nodes that answered lately stay usable whatever their checks say.
    answers: RecentAnswers,
}

impl NodePool {
    /// Builds the pool and the health-check service that keeps its node states current.
    pub(crate) fn build(
        settings: &UpstreamSettings,
        nodes: &NodeList,
    ) -> std::io::Result<(NodePool, PoolService)> {
        let (selector, service) = match settings.balance {
            Balance::RepositoryHash => {
                let service = background_service(
                    "upstream health check",
                    load_balancer::<KetamaHashing>(settings, nodes)?,
                );
                (Selector::Hash(service.task()), PoolService::Hash(service))
            }
            Balance::RoundRobin => {
                let service = background_service(
                    "upstream health check",
                    load_balancer::<RoundRobin>(settings, nodes)?,
                );
                (
                    Selector::RoundRobin(service.task()),
                    PoolService::RoundRobin(service),
                )
            }
        };
        Ok((NodePool::with_selector(selector, settings), service))
    }

    fn with_selector(selector: Selector, settings: &UpstreamSettings) -> NodePool {
        NodePool {
            selector,
            rotation: AtomicUsize::new(0),
            answers: RecentAnswers::new(
                settings.health_interval.max(MIN_HEALTH_TIMEOUT) * FAILURES_TO_MARK_DOWN as u32,
            ),
        }
    }

    /// A route's pool, whose health checks the caller runs ([`NodePool::check`]) rather
    /// than a Pingora background service: routes come and go with reloads.
    pub(crate) fn unscheduled(
        settings: &UpstreamSettings,
        nodes: &NodeList,
    ) -> std::io::Result<NodePool> {
        let selector = match settings.balance {
            Balance::RepositoryHash => {
                Selector::Hash(Arc::new(load_balancer::<KetamaHashing>(settings, nodes)?))
            }
            Balance::RoundRobin => {
                Selector::RoundRobin(Arc::new(load_balancer::<RoundRobin>(settings, nodes)?))
            }
        };
        Ok(NodePool::with_selector(selector, settings))
    }

    /// Picks up the node list and runs one round of health checks (all nodes at once), as
    /// Pingora's service does for the default pool.
    pub(crate) async fn check(&self) {
        self.take_node_list();
        self.backends().run_health_check(true).await;
    }

    /// Picks up a replaced node list now (the list is in memory: discovery completes at
    /// once); new nodes count as healthy until their first check. Discovery errors leave
    /// the list as it was.
    pub(crate) fn take_node_list(&self) {
        let update = match &self.selector {
            Selector::Hash(lb) => lb.update().now_or_never(),
            Selector::RoundRobin(lb) => lb.update().now_or_never(),
        };
        if let Some(Err(e)) = update {
            tracing::warn!("route pool: node list not updated: {e}");
        }
    }

    /// Records that `node` answered a proxied request (a status below 500).
    pub(crate) fn record_answer(&self, node: SocketAddr) {
        self.answers.record(node);
    }

    /// Whether a node may take requests: it passes its checks or answered lately.
    fn usable(&self, addr: &SocketAddr, healthy: bool) -> bool {
        healthy || self.answers.answered_recently(*addr)
    }

    /// The node for a request: usable (see [`RecentAnswers`]) and not in `exclude` (nodes
    /// that already failed it).
    pub(crate) fn select(
        &self,
        repository: Option<&str>,
        exclude: &[SocketAddr],
    ) -> Option<SocketAddr> {
        let rotating;
        let key: &[u8] = match (repository, &self.selector) {
            (Some(name), Selector::Hash(_)) => name.as_bytes(),
            _ => {
                rotating = self.rotation.fetch_add(1, Ordering::Relaxed).to_le_bytes();
                &rotating
            }
        };
        let accept = |backend: &Backend, healthy: bool| {
            backend
                .addr
                .as_inet()
                .is_some_and(|addr| !exclude.contains(addr) && self.usable(addr, healthy))
        };
        let backend = match &self.selector {
            Selector::Hash(lb) => lb.select_with(key, MAX_CANDIDATES, accept),
            Selector::RoundRobin(lb) => lb.select_with(key, MAX_CANDIDATES, accept),
        }?;
        backend.addr.as_inet().copied()
    }

    fn backends(&self) -> &Backends {
        match &self.selector {
            Selector::Hash(lb) => lb.backends(),
            Selector::RoundRobin(lb) => lb.backends(),
        }
    }

    /// Every listed node and whether it is usable: passes its checks or answered lately.
    pub(crate) fn health(&self) -> Vec<(SocketAddr, bool)> {
        let backends = self.backends();
        let current = backends.get_backend();
        current
            .iter()
            .filter_map(|b| {
                let addr = *b.addr.as_inet()?;
                Some((addr, self.usable(&addr, backends.ready(b))))
            })
            .collect()
    }

    /// Whether a node an upload session is pinned to may take the session's next request:
    /// a listed node only while healthy; a node no longer listed is tried (it may be
    /// draining after a reload) and, if it refuses, the request falls back to hashing.
    pub(crate) fn can_use_pinned(&self, node: SocketAddr) -> bool {
        let backends = self.backends();
        let current = backends.get_backend();
        match current.iter().find(|b| b.addr.as_inet() == Some(&node)) {
            Some(backend) => self.usable(&node, backends.ready(backend)),
            None => true,
        }
    }
}

fn load_balancer<S>(
    settings: &UpstreamSettings,
    nodes: &NodeList,
) -> std::io::Result<LoadBalancer<S>>
where
    S: pingora::lb::selection::BackendSelection + 'static,
    S::Iter: pingora::lb::selection::BackendIter,
{
    let mut lb = LoadBalancer::<S>::from_backends(Backends::new(Box::new(nodes.clone())));
    // The list is in memory: the first discovery completes at once, so the pool starts full.
    lb.update()
        .now_or_never()
        .transpose()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    lb.update_frequency = Some(DISCOVERY_INTERVAL);
    let mut check = HttpHealthCheck::new("registry-edge-health", false);
    let mut req = pingora::http::RequestHeader::build("GET", settings.health_path.as_bytes(), None)
        .and_then(|mut req| req.insert_header("Host", "localhost").map(|_| req))
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    // Go's HTTP server answers 400 to an HTTP/1.1 request without Host.
    req.insert_header(
        "User-Agent",
        concat!("registry-edge/", env!("CARGO_PKG_VERSION")),
    )
    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    check.req = req;
    check.peer_template.options.connection_timeout = Some(settings.connect_timeout);
    // A node busy with many transfers can answer one check late: take it out only after
    // several failures in a row (a refused connection fails at once, so a stopped node is
    // still out within a few intervals). Checks run in parallel and a round lasts as long
    // as its slowest check, so the timeout also bounds how soon a returning node is seen.
    check.peer_template.options.read_timeout = Some(
        settings
            .health_interval
            .max(MIN_HEALTH_TIMEOUT)
            .min(settings.read_timeout),
    );
    check.consecutive_failure = FAILURES_TO_MARK_DOWN;
    check.consecutive_success = 1;
    // The registry answers /v2/ with 401 when token auth is on: that node is alive.
    check.validator = Some(Box::new(|resp: &ResponseHeader| {
        match resp.status.as_u16() {
            200 | 401 => Ok(()),
            status => pingora::Error::e_explain(
                ErrorType::InternalError,
                format!("health check answered {status}"),
            ),
        }
    }));
    lb.set_health_check(Box::new(check));
    lb.health_check_frequency = Some(settings.health_interval);
    lb.parallel_health_check = true;
    Ok(lb)
}
