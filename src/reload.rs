//! Live reload on SIGHUP: re-read the configuration, validate all of it (YAML, keys,
//! certificates, users), and only then swap it in. An invalid file is logged with the
//! problem and the running configuration stays in force.
//!
//! Applied live: read-only mode, limits, forwarding trust, timeouts, users, ACL, token
//! settings, TLS certificates and the upstream node list (picked up by the pool within a
//! second; health checks then judge new nodes). Listener addresses, threads, the
//! balance mode, `tls.acme` and `shared_state` need a restart; a changed value is logged as not applied.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::{AcmeSettings, Balance, Config, ConfigError, RedisSettings};
use crate::server;
use crate::settings::{Settings, SharedSettings};
use crate::shared_state::SharedState;
use crate::tls::CertResolver;
use crate::upstream::NodeList;

/// What a restart would still have to apply after a successful reload.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NotApplied(pub Vec<&'static str>);

pub struct Reloader {
    path: PathBuf,
    settings: SharedSettings,
    certificates: Option<Arc<CertResolver>>,
    nodes: NodeList,
    fixed: Fixed,
    shared: Option<Arc<SharedState>>,
}

/// The parts of the configuration a running process cannot change.
#[derive(Debug, PartialEq, Eq)]
struct Fixed {
    https_listen: Vec<SocketAddr>,
    http_listen: Vec<SocketAddr>,
    threads: usize,
    balance: Balance,
    proxy_protocol: bool,
    admin_listen: Option<SocketAddr>,
    acme: Option<AcmeSettings>,
    shared_state: Option<RedisSettings>,
}

impl Fixed {
    fn of(config: &Config) -> Fixed {
        Fixed {
            https_listen: config.server.https_listen.clone(),
            http_listen: config.server.http_listen.clone(),
            threads: config.server.threads,
            balance: config.upstream.balance,
            proxy_protocol: config.server.proxy_protocol,
            admin_listen: config.admin_listen,
            acme: config.acme.clone(),
            shared_state: config.shared_state.clone(),
        }
    }

    fn differences(&self, other: &Fixed) -> NotApplied {
        let mut changed = Vec::new();
        if self.https_listen != other.https_listen
            || self.http_listen != other.http_listen
            || self.admin_listen != other.admin_listen
        {
            changed.push("listener addresses");
        }
        if self.threads != other.threads {
            changed.push("server.threads");
        }
        if self.balance != other.balance {
            changed.push("upstream.balance");
        }
        if self.proxy_protocol != other.proxy_protocol {
            changed.push("server.proxy_protocol");
        }
        if self.acme != other.acme {
            changed.push("tls.acme");
        }
        if self.shared_state != other.shared_state {
            changed.push("shared_state");
        }
        NotApplied(changed)
    }
}

impl Reloader {
    pub fn new(
        config: &Config,
        settings: SharedSettings,
        certificates: Option<Arc<CertResolver>>,
        nodes: NodeList,
        shared: Option<Arc<SharedState>>,
    ) -> Reloader {
        Reloader {
            path: config.source.clone(),
            settings,
            certificates,
            nodes,
            fixed: Fixed::of(config),
            shared,
        }
    }

    /// Loads and validates the file, then swaps the new settings and certificates in.
    pub fn reload(&self) -> Result<NotApplied, ConfigError> {
        let loaded = server::load(&self.path)?;
        let not_applied = self.fixed.differences(&Fixed::of(&loaded.config));
        if let (Some(resolver), Some(certificates)) = (&self.certificates, loaded.certificates) {
            resolver.replace(certificates);
        }
        self.nodes.replace(&loaded.config.upstream.nodes);
        let previous = self.settings.load_full();
        let next = Settings::new(
            &loaded.config,
            loaded.auth,
            Some(&previous),
            self.shared.as_ref(),
        );
        self.settings.store(Arc::new(next));
        Ok(not_applied)
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(stream) => stream,
            Err(e) => {
                tracing::error!("cannot listen for SIGHUP, live reload is off: {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = hangups.recv() => match self.reload() {
                    Ok(NotApplied(pending)) if pending.is_empty() => {
                        tracing::info!(path = %self.path.display(), "configuration reloaded");
                    }
                    Ok(NotApplied(pending)) => tracing::warn!(
                        path = %self.path.display(),
                        "configuration reloaded; changes to {} need a restart and were not applied",
                        pending.join(", ")
                    ),
                    Err(e) => tracing::error!("reload rejected, the running configuration stays in force: {e}"),
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}
