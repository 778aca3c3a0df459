//! Assembles the Pingora server from what [`crate::load`] read: [`build`] turns it into
//! services.

use std::net::SocketAddr;
use std::sync::Arc;

use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::Acceptor;
use pingora::protocols::http::v2::server::default_h2_options;
use pingora::proxy::http_proxy;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;

use arc_swap::ArcSwap;
use pingora::services::background::background_service;

use crate::acme::challenges::{Challenges, ACME_TLS_ALPN};
use crate::acme::AcmeService;
use crate::admin::AdminApp;
use crate::cache::Cache;
use crate::config::{AcmeChallenge, Config, ConfigError};
use crate::drain::Drain;
use crate::listen::{bind, EdgeListener};
use crate::load::Loaded;
use crate::policy::{Policy, UsageGauges};
use crate::proxy::EdgeProxy;
use crate::redirect::RedirectApp;
use crate::reload::Reloader;
use crate::routes::Routes;
use crate::settings::{LimiterPurge, RouteHealth, Settings, SharedSettings};
use crate::shared_state::{SharedState, SharedStateProbe};
use crate::tls::CertResolver;
use crate::upstream::{NodeList, NodePool, PoolService, RegistryClient};

/// How long the final step of a graceful shutdown may take after the grace period.
const FINAL_SHUTDOWN_SECONDS: u64 = 5;

/// HTTP/2 flow-control windows for request bodies. The h2 default (64 KiB) makes an
/// upload wait for a WINDOW_UPDATE every 64 KiB. These bound what one connection can
/// have buffered at the edge (the connection window caps all its streams together).
const H2_STREAM_WINDOW: u32 = 1 << 20;
const H2_CONNECTION_WINDOW: u32 = 4 << 20;
/// Largest HTTP/2 header block accepted off the wire; the proxy refuses anything over
/// `MAX_HEADER_BYTES` with 431.
const H2_MAX_HEADER_LIST: u32 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `cache.dir` could not be created or read.
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    /// `policy.state_dir` could not be created (a broken store file is moved aside).
    #[error("policy.state_dir")]
    Policy(#[from] crate::policy::PolicyError),
    #[error("upstream pool")]
    Upstream(#[source] std::io::Error),
    /// The client for the features' requests to the nodes (the system's TLS roots).
    #[error(transparent)]
    RegistryClient(#[from] crate::upstream::RegistryClientError),
    #[error("shared_state.redis")]
    SharedState(#[source] redis::RedisError),
    #[error("tls.acme")]
    Acme(#[from] crate::acme::AcmeError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Builds the Pingora server: HTTPS proxy, redirect listeners, health checks. Run it with
/// the returned [`Drain`]'s [`SignalWatch`](crate::drain::SignalWatch) so SIGTERM stops as
/// soon as requests finish.
pub fn build(loaded: Loaded) -> Result<(Server, Arc<Drain>), StartError> {
    let Loaded {
        config,
        certificates,
        auth,
        trusted,
    } = loaded;
    let mut server = pingora_server(&config);
    let drain = Drain::new(config.server.shutdown_grace);
    let shared = shared_state(&mut server, &config)?;
    let routes = Routes::new(&config.routes, None).map_err(StartError::Upstream)?;
    let settings: SharedSettings = Arc::new(ArcSwap::from_pointee(Settings::new(
        &config,
        auth,
        trusted,
        None,
        shared.as_ref(),
        routes,
    )));
    // One client for the features' own requests to the nodes, made only when one is on.
    let registry = match config.cache.is_some() || config.policy.is_some() {
        true => Some(RegistryClient::new()?),
        false => None,
    };
    let cache = match (&config.cache, &registry) {
        (Some(settings), Some(registry)) => {
            Some(Arc::new(Cache::open(settings, registry.clone())?))
        }
        _ => None,
    };
    let policy = open_policy(&mut server, &config, &shared, &settings, registry)?;
    let nodes = NodeList::new(&config.upstream.nodes);
    let pool = node_pool(&mut server, &config, &nodes)?;
    let challenges = Arc::new(Challenges::default());
    let resolver = (certificates.is_some() || config.acme.is_some())
        .then(|| Arc::new(CertResolver::new(certificates, challenges.clone())));
    let parts = Parts {
        settings,
        pool,
        drain,
        challenges,
    };
    if let Some(resolver) = &resolver {
        if let Some(acme) = &config.acme {
            let service =
                AcmeService::new(acme.clone(), resolver.clone(), parts.challenges.clone())?;
            server.add_service(background_service("acme", service));
        }
        let proxy = EdgeProxy::new(
            parts.pool.clone(),
            parts.settings.clone(),
            resolver.clone(),
            parts.drain.clone(),
            cache,
            policy,
        );
        add_https(&mut server, &config, &parts, proxy, resolver)?;
    }
    add_redirect(&mut server, &config, &parts)?;
    add_admin(&mut server, &config, &parts)?;
    let Parts {
        settings, drain, ..
    } = parts;
    let purge = LimiterPurge {
        settings: settings.clone(),
    };
    server.add_service(background_service("rate limit purge", purge));
    let route_health = RouteHealth {
        settings: settings.clone(),
    };
    server.add_service(background_service("route health checks", route_health));
    server.add_service(background_service(
        "config reload",
        Reloader::new(&config, settings, resolver, nodes, shared),
    ));
    Ok((server, drain))
}

/// What several services share: the reloadable settings, the node pool, the drain, and the
/// ACME challenge answers (the TLS resolver and the redirect listeners both answer them).
struct Parts {
    settings: SharedSettings,
    pool: Arc<NodePool>,
    drain: Arc<Drain>,
    challenges: Arc<Challenges>,
}

/// Pingora's server with the configured threads; its own grace period is off, because the
/// drain (`crate::drain`) waits for requests in flight and Pingora's would then sleep its
/// whole length.
fn pingora_server(config: &Config) -> Server {
    let conf = ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(FINAL_SHUTDOWN_SECONDS),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    server
}

/// The Redis connection of `shared_state.redis`, with its probe service; `None` without.
fn shared_state(
    server: &mut Server,
    config: &Config,
) -> Result<Option<Arc<SharedState>>, StartError> {
    let Some(redis) = &config.shared_state else {
        return Ok(None);
    };
    let shared = SharedState::new(redis.clone()).map_err(StartError::SharedState)?;
    server.add_service(background_service(
        "shared state probe",
        SharedStateProbe(shared.clone()),
    ));
    Ok(Some(shared))
}

/// The usage store of `policy`, with the service that exports its usage as metrics.
fn open_policy(
    server: &mut Server,
    config: &Config,
    shared: &Option<Arc<SharedState>>,
    settings: &SharedSettings,
    registry: Option<RegistryClient>,
) -> Result<Option<Arc<Policy>>, StartError> {
    let (Some(rules), Some(registry)) = (&config.policy, registry) else {
        return Ok(None);
    };
    let policy = Arc::new(Policy::open(rules, shared.clone(), registry)?);
    server.add_service(background_service(
        "policy usage metrics",
        UsageGauges {
            policy: policy.clone(),
            settings: settings.clone(),
        },
    ));
    Ok(Some(policy))
}

/// The registry node pool, with its health check service.
fn node_pool(
    server: &mut Server,
    config: &Config,
    nodes: &NodeList,
) -> Result<Arc<NodePool>, StartError> {
    let (pool, health) = NodePool::build(&config.upstream, nodes).map_err(StartError::Upstream)?;
    match health {
        PoolService::Hash(service) => server.add_service(service),
        PoolService::RoundRobin(service) => server.add_service(service),
    };
    Ok(Arc::new(pool))
}

/// Binds every address now, so a taken port fails the start with its address.
fn bind_all(addrs: &[SocketAddr]) -> Result<Vec<std::net::TcpListener>, StartError> {
    addrs
        .iter()
        .map(|&addr| bind(addr).map_err(|source| StartError::Bind { addr, source }))
        .collect()
}

/// The TLS listeners: the proxy on `server.https_listen`, HTTP/2 tuned for uploads.
fn add_https(
    server: &mut Server,
    config: &Config,
    parts: &Parts,
    proxy: EdgeProxy,
    resolver: &Arc<CertResolver>,
) -> Result<(), StartError> {
    let mut proxy = http_proxy(&server.configuration, proxy);
    let mut h2 = default_h2_options();
    h2.initial_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        // Room for an oversized block to arrive whole, so the proxy can answer 431
        // (the h2 crate resets the connection for blocks over this).
        .max_header_list_size(H2_MAX_HEADER_LIST);
    proxy.h2_options = Some(h2);
    let mut options = HttpServerOptions::default();
    options.h2_idle_timeout = Some(config.server.client_timeouts.idle);
    proxy.server_options = Some(options);
    let tls_alpn01 = config
        .acme
        .as_ref()
        .is_some_and(|a| a.challenge == AcmeChallenge::TlsAlpn01);
    server.add_service(
        EdgeListener::new(
            "registry-edge https",
            bind_all(&config.server.https_listen)?,
            Some(tls_acceptor(resolver.clone(), tls_alpn01)),
            proxy,
            parts.settings.clone(),
        )
        .with_proxy_protocol(config.server.proxy_protocol)
        .with_json_refusals()
        .with_drain(parts.drain.clone(), true),
    );
    Ok(())
}

/// The plain-HTTP listeners: redirects to https, and ACME http-01 answers.
fn add_redirect(server: &mut Server, config: &Config, parts: &Parts) -> Result<(), StartError> {
    if config.server.http_listen.is_empty() {
        return Ok(());
    }
    let https_port = config.server.https_listen.first().map_or(443, |a| a.port());
    let mut app = RedirectApp::new(https_port, parts.settings.clone());
    if config
        .acme
        .as_ref()
        .is_some_and(|a| a.challenge == AcmeChallenge::Http01)
    {
        app = app.with_acme_challenges(parts.challenges.clone());
    }
    server.add_service(
        EdgeListener::new(
            "registry-edge http redirect",
            bind_all(&config.server.http_listen)?,
            None,
            app,
            parts.settings.clone(),
        )
        .with_proxy_protocol(config.server.proxy_protocol)
        .with_drain(parts.drain.clone(), false),
    );
    Ok(())
}

/// The admin listener (`admin.listen`), when configured.
fn add_admin(server: &mut Server, config: &Config, parts: &Parts) -> Result<(), StartError> {
    let Some(addr) = config.admin.map(|a| a.listen) else {
        return Ok(());
    };
    server.add_service(EdgeListener::new(
        "registry-edge admin",
        bind_all(&[addr])?,
        None,
        AdminApp::new(
            parts.pool.clone(),
            parts.settings.clone(),
            parts.drain.clone(),
        ),
        parts.settings.clone(),
    ));
    Ok(())
}

/// TLS 1.2 and 1.3 with rustls's defaults (Mozilla intermediate), certificates by SNI,
/// HTTP/2 preferred; `acme-tls/1` is offered only while tls-alpn-01 is configured.
fn tls_acceptor(resolver: Arc<CertResolver>, tls_alpn01: bool) -> Acceptor {
    let mut config = rustls::ServerConfig::builder_with_protocol_versions(&[
        &rustls::version::TLS12,
        &rustls::version::TLS13,
    ])
    .with_no_client_auth()
    .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if tls_alpn01 {
        config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
    }
    Acceptor::from_server_config(Arc::new(config))
}
