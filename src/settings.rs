//! The reloadable part of the configuration, as requests see it.
//!
//! Each request takes one snapshot when it starts and keeps it to the end, so a reload
//! never changes the rules under a request already admitted (an upload streaming when
//! read-only mode is switched on completes). A reload builds a new snapshot and swaps it.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::auth::Auth;
use crate::config::{ClientTimeouts, Config, ExternalUrl, ForwardedSettings, Limits};
use crate::ratelimit::{PushLimiter, UploadThrottle};
use crate::shared_state::SharedState;

/// What one request is checked and proxied with.
pub struct Settings {
    pub forwarded: ForwardedSettings,
    pub external: Option<ExternalUrl>,
    pub limits: Limits,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// Push-class requests are refused while set (garbage collection without downtime).
    pub read_only: bool,
    pub auth: Option<Arc<Auth>>,
    pub push_limiter: Option<Arc<PushLimiter>>,
    pub upload_throttle: Option<Arc<UploadThrottle>>,
    /// Applied to connections accepted from now on.
    pub client_timeouts: ClientTimeouts,
    /// `server.strict_host`: refuse requests for names the edge does not serve.
    pub strict_host: bool,
}

impl Settings {
    /// `previous`: the settings being replaced; an unchanged limiter keeps its counters.
    /// `shared`: Redis for limits shared with other instances (`shared_state.redis`).
    pub fn new(
        config: &Config,
        auth: Option<Auth>,
        previous: Option<&Settings>,
        shared: Option<&Arc<SharedState>>,
    ) -> Settings {
        let kept = previous
            .and_then(|p| p.push_limiter.clone())
            .filter(|limiter| Some(limiter.config()) == config.push_limit.as_ref());
        let kept_throttle = previous
            .and_then(|p| p.upload_throttle.clone())
            .filter(|throttle| Some(throttle.config()) == config.upload_limit.as_ref());
        let upload_throttle = kept_throttle.or_else(|| {
            config
                .upload_limit
                .clone()
                .map(|limit| Arc::new(UploadThrottle::new(limit).shared(shared.cloned())))
        });
        let push_limiter = kept.or_else(|| {
            config
                .push_limit
                .clone()
                .map(|limit| Arc::new(PushLimiter::new(limit).shared(shared.cloned())))
        });
        Settings {
            forwarded: config.forwarded.clone(),
            external: config.server.external_url.clone(),
            limits: config.limits,
            connect_timeout: config.upstream.connect_timeout,
            read_timeout: config.upstream.read_timeout,
            read_only: config.maintenance.read_only,
            auth: auth.map(|mut auth| {
                auth.throttle.set_shared(shared.cloned());
                Arc::new(auth)
            }),
            push_limiter,
            upload_throttle,
            client_timeouts: config.server.client_timeouts,
            strict_host: config.server.strict_host,
        }
    }
}

/// The settings in force, shared by the proxy and the reloader.
pub type SharedSettings = Arc<ArcSwap<Settings>>;

/// Every minute, drops rate-limiter keys that have been idle for their whole window.
pub struct LimiterPurge {
    pub settings: SharedSettings,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for LimiterPurge {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = every.tick() => {
                    let settings = self.settings.load();
                    if let Some(limiter) = &settings.push_limiter {
                        limiter.purge();
                    }
                    if let Some(throttle) = &settings.upload_throttle {
                        throttle.purge();
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
