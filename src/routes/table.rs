//! The routes in force (a reload builds a new [`Routes`], keeping each unchanged route's
//! pool and its node states) and which one a request belongs to.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::RouteSettings;
use crate::upstream::{NodeList, NodePool};

/// One route and its pool.
pub(crate) struct RoutePool {
    pub settings: RouteSettings,
    /// Shared with the route of the previous configuration when its shape is unchanged.
    pub pool: Arc<NodePool>,
    nodes: NodeList,
    pub(super) schedule: Arc<CheckSchedule>,
}

/// When a pool's next round of health checks is due; one round at a time.
pub(crate) struct CheckSchedule {
    pub(super) next: Mutex<Instant>,
    pub(super) running: AtomicBool,
}

impl RoutePool {
    fn new(settings: &RouteSettings) -> std::io::Result<RoutePool> {
        let nodes = NodeList::new(&settings.pool.nodes);
        Ok(RoutePool {
            pool: Arc::new(NodePool::unscheduled(&settings.pool, &nodes)?),
            nodes,
            settings: settings.clone(),
            schedule: Arc::new(CheckSchedule {
                next: Mutex::new(Instant::now()),
                running: AtomicBool::new(false),
            }),
        })
    }

    /// Whether `self`'s pool can serve `next` as is: everything but the node list is the
    /// same (the health checks' timeouts come from the connect and read timeouts).
    fn same_pool(&self, next: &RouteSettings) -> bool {
        let (old, new) = (&self.settings.pool, &next.pool);
        old.balance == new.balance
            && old.health_path == new.health_path
            && old.health_interval == new.health_interval
            && old.connect_timeout == new.connect_timeout
            && old.read_timeout == new.read_timeout
    }

    /// Whether `self` is claimed by this Host (lowercase, without port) or `ns`.
    fn claims(&self, host: Option<&str>, ns: Option<&str>) -> bool {
        let settings = &self.settings;
        host.is_some_and(|h| settings.hosts.iter().any(|x| x == h))
            || ns.is_some_and(|n| settings.ns.iter().any(|x| x == n))
    }
}

/// A request a route takes.
#[derive(Clone)]
pub(crate) struct Routed {
    pub route: Arc<RoutePool>,
    /// The repository as the pool names it.
    pub pool_repository: String,
    /// The repository's name at the edge (`edge_prefix` + the pool's name).
    pub edge_repository: String,
    /// The request's path (decoded) as the pool routes it; set by the proxy.
    pub pool_path: String,
    /// The client named the repository with the prefix, so the pool's names in answers get
    /// it back; `false` for `hosts`/`ns` matches, where the client uses the pool's names.
    pub by_prefix: bool,
}

/// The routes in force, in order.
#[derive(Default)]
pub(crate) struct Routes {
    list: Vec<Arc<RoutePool>>,
}

impl Routes {
    /// `settings` in order; a route of `previous` with the same name and pool shape keeps
    /// its pool (node states, health) and takes the new node list.
    pub(crate) fn new(
        settings: &[RouteSettings],
        previous: Option<&Routes>,
    ) -> std::io::Result<Routes> {
        let mut list = Vec::with_capacity(settings.len());
        for route in settings {
            let kept = previous
                .and_then(|p| p.by_name(&route.name))
                .filter(|old| old.same_pool(route));
            let pool = match kept {
                Some(old) if old.settings == *route => old.clone(),
                Some(old) => {
                    old.nodes.replace(&route.pool.nodes);
                    // Taken at once, not at the pool's next round of checks.
                    old.pool.take_node_list();
                    Arc::new(RoutePool {
                        pool: old.pool.clone(),
                        nodes: old.nodes.clone(),
                        settings: route.clone(),
                        schedule: old.schedule.clone(),
                    })
                }
                None => Arc::new(RoutePool::new(route)?),
            };
            list.push(pool);
        }
        Ok(Routes { list })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<RoutePool>> {
        self.list.iter()
    }

    pub(crate) fn by_name(&self, name: &str) -> Option<&Arc<RoutePool>> {
        self.list.iter().find(|r| r.settings.name == name)
    }

    /// The route that claims requests on `host` (lowercase, without port) or with `ns`.
    pub(crate) fn claimed_by(
        &self,
        host: Option<&str>,
        ns: Option<&str>,
    ) -> Option<&Arc<RoutePool>> {
        self.list.iter().find(|r| r.claims(host, ns))
    }

    /// The route for a request naming `repository` on `host` (lowercase, without port) with
    /// containerd's `ns`: the first route that claims the host or the `ns` (the name is then
    /// the pool's), else the first whose prefix (or `name/`) starts the name.
    pub(crate) fn route_for(
        &self,
        host: Option<&str>,
        ns: Option<&str>,
        repository: &str,
    ) -> Option<Routed> {
        if let Some(route) = self.claimed_by(host, ns) {
            return Some(Routed {
                edge_repository: format!("{}{repository}", route.settings.edge_prefix),
                pool_repository: repository.to_string(),
                route: route.clone(),
                by_prefix: false,
                pool_path: String::new(),
            });
        }
        // A route without `prefix` is reached by its `name/` too: a name at the edge
        // belongs to one route, never also to the default pool.
        let route = self.list.iter().find(|r| {
            repository.starts_with(&r.settings.edge_prefix)
                && repository.len() > r.settings.edge_prefix.len()
        })?;
        Some(Routed {
            pool_repository: repository[route.settings.edge_prefix.len()..].to_string(),
            edge_repository: repository.to_string(),
            route: route.clone(),
            by_prefix: true,
            pool_path: String::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> Routes {
        let text = "server: { https_listen: [] }\nupstream: { nodes: [\"127.0.0.1:5000\"] }\n\
                    routes:\n  - { name: hub, prefix: hub/, ns: [docker.io], hosts: [mirror.test], \
                    nodes: [\"127.0.0.1:5001\"] }\n  \
                    - { name: quay, ns: [quay.io], nodes: [\"127.0.0.1:5002\"] }\n";
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::parse(&dir.path().join("e.yaml"), text).unwrap();
        Routes::new(&config.routes, None).unwrap()
    }

    #[test]
    fn prefix_host_and_ns_give_one_edge_name() {
        let routes = routes();
        let by_prefix = routes
            .route_for(Some("edge.test"), None, "hub/library/app")
            .unwrap();
        let by_host = routes
            .route_for(Some("mirror.test"), None, "library/app")
            .unwrap();
        let by_ns = routes
            .route_for(None, Some("docker.io"), "library/app")
            .unwrap();
        for routed in [&by_prefix, &by_host, &by_ns] {
            assert_eq!(routed.route.settings.name, "hub");
            assert_eq!(routed.edge_repository, "hub/library/app");
            assert_eq!(routed.pool_repository, "library/app");
        }
        assert!(by_prefix.by_prefix && !by_host.by_prefix && !by_ns.by_prefix);
        let quay = routes
            .route_for(None, Some("quay.io"), "coreos/etcd")
            .unwrap();
        assert_eq!(quay.edge_repository, "quay/coreos/etcd");
        // A route without a prefix is reached by its name too: one owner per edge name.
        let by_name = routes.route_for(None, None, "quay/coreos/etcd").unwrap();
        assert_eq!(by_name.route.settings.name, "quay");
        assert_eq!(by_name.pool_repository, "coreos/etcd");
        assert!(routes.route_for(None, None, "hub").is_none());
        assert!(routes
            .route_for(None, Some("ghcr.io"), "team/app")
            .is_none());
    }

    #[test]
    fn a_reload_keeps_an_unchanged_route_pool() {
        let first = routes();
        let again = Routes::new(
            &first.iter().map(|r| r.settings.clone()).collect::<Vec<_>>(),
            Some(&first),
        )
        .unwrap();
        assert!(Arc::ptr_eq(
            first.by_name("hub").unwrap(),
            again.by_name("hub").unwrap()
        ));
    }
}
