//! The reloadable part of the configuration, as requests see it.
//!
//! Each request takes one snapshot when it starts and keeps it to the end, so a reload
//! never changes the rules under a request already admitted (an upload streaming when
//! read-only mode is switched on completes). A reload builds a new snapshot and swaps it.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::auth::access_tokens::AccessTokens;
use crate::auth::token::TrustedIssuers;
use crate::auth::Auth;
use crate::config::{
    CacheSettings, ClientTimeouts, Config, ExternalUrl, ForwardedSettings, Limits,
};
use crate::limits::{LoginThrottle, PullLimiter, PushLimiter, UploadThrottle};
use crate::routes::Routes;
use crate::shared_state::SharedState;

/// What one request is checked and proxied with.
pub(crate) struct Settings {
    pub forwarded: ForwardedSettings,
    pub external: Option<ExternalUrl>,
    pub limits: Limits,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// Push-class requests are refused while set (garbage collection without downtime).
    pub read_only: bool,
    pub auth: Option<Arc<Auth>>,
    /// `auth.trusted_issuers`: token services whose tokens pass the token check too.
    pub trusted: Arc<TrustedIssuers>,
    pub push_limiter: Option<Arc<PushLimiter>>,
    /// `rate_limits.pull`, kept across reloads that leave it unchanged.
    pub pull_limiter: Option<Arc<PullLimiter>>,
    pub upload_throttle: Option<Arc<UploadThrottle>>,
    /// Applied to connections accepted from now on.
    pub client_timeouts: ClientTimeouts,
    /// `server.strict_host`: refuse requests for names the edge does not serve.
    pub strict_host: bool,
    /// `cache`: its budgets as of this snapshot (the cache itself lives as long as the
    /// process); `None` = no cache.
    pub cache: Option<CacheSettings>,
    /// `policy`: quotas and immutable-tag rules as of this snapshot (the usage store lives
    /// as long as the process); `None` = off.
    pub policy: Option<crate::config::PolicySettings>,
    /// `routes`: the other pools and which requests they take.
    pub routes: Routes,
}

impl Settings {
    /// Whether the edge checks bearer tokens itself: its own realm, or trusted issuers'.
    /// Without either it only proxies, and the registry decides who may do what.
    pub(crate) fn checks_tokens(&self) -> bool {
        self.auth.is_some() || !self.trusted.is_empty()
    }

    /// `previous`: the settings being replaced; an unchanged limiter keeps its counters.
    /// `shared`: Redis for limits shared with other instances (`shared_state.redis`).
    /// `routes`: built from `config.routes` (keeping `previous`'s unchanged pools).
    pub(crate) fn new(
        config: &Config,
        auth: Option<Auth>,
        trusted: TrustedIssuers,
        previous: Option<&Settings>,
        shared: Option<&Arc<SharedState>>,
        routes: Routes,
    ) -> Settings {
        // Counters survive a reload whose own limit did not change.
        let push_limiter = kept_or_new(
            previous.and_then(|p| p.push_limiter.as_ref()),
            config.push_limit.as_ref(),
            PushLimiter::config,
            |limit| PushLimiter::new(limit, shared.cloned()),
        );
        let upload_throttle = kept_or_new(
            previous.and_then(|p| p.upload_throttle.as_ref()),
            config.upload_limit.as_ref(),
            UploadThrottle::config,
            |limit| UploadThrottle::new(limit, shared.cloned()),
        );
        let pull_limiter = kept_or_new(
            previous.and_then(|p| p.pull_limiter.as_ref()),
            config.pull_limit.as_ref(),
            PullLimiter::config,
            |limit| PullLimiter::new(limit, shared.cloned()),
        );
        let previous_logins = previous
            .and_then(|p| p.auth.as_ref())
            .map(|auth| auth.throttle.clone());
        Settings {
            forwarded: config.forwarded.clone(),
            external: config.server.external_url.clone(),
            limits: config.limits,
            connect_timeout: config.upstream.connect_timeout,
            read_timeout: config.upstream.read_timeout,
            read_only: config.maintenance.read_only,
            auth: auth.map(|mut auth| {
                let limits = auth.throttle.limits();
                auth.throttle = previous_logins
                    .filter(|kept| kept.limits() == limits)
                    .unwrap_or_else(|| {
                        Arc::new(LoginThrottle::new(limits.0, limits.1, shared.cloned()))
                    });
                if let (Some(_), Some(shared)) = (&auth.access_tokens, shared) {
                    auth.access_tokens = Some(Arc::new(AccessTokens::shared(shared.clone())));
                }
                Arc::new(auth)
            }),
            trusted: Arc::new(trusted),
            push_limiter,
            pull_limiter,
            upload_throttle,
            client_timeouts: config.server.client_timeouts,
            strict_host: config.server.strict_host,
            cache: config.cache.clone(),
            policy: config.policy.clone(),
            routes,
        }
    }
}

/// The settings in force, shared by the proxy and the reloader.
pub(crate) type SharedSettings = Arc<ArcSwap<Settings>>;

/// Every 250 ms, starts the health checks of the route pools in force that are due
/// (`routes::check_if_due`).
pub(crate) struct RouteHealth {
    pub settings: SharedSettings,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for RouteHealth {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let mut every = tokio::time::interval(Duration::from_millis(250));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {
                    for route in self.settings.load().routes.iter() {
                        crate::routes::check_if_due(route);
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// The limiter in force before a reload when its settings are still `wanted` (its counters
/// go on), else a new one `make` builds from them; `None` when the limit is gone.
fn kept_or_new<L, C: PartialEq + Clone>(
    before: Option<&Arc<L>>,
    wanted: Option<&C>,
    settings_of: fn(&L) -> &C,
    make: impl FnOnce(C) -> L,
) -> Option<Arc<L>> {
    let wanted = wanted?;
    match before {
        Some(limiter) if settings_of(limiter) == wanted => Some(limiter.clone()),
        _ => Some(Arc::new(make(wanted.clone()))),
    }
}

/// Every minute, drops rate-limiter keys that have been idle for their whole window.
pub(crate) struct LimiterPurge {
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
                    if let Some(limiter) = &settings.pull_limiter {
                        limiter.purge();
                    }
                    if let Some(throttle) = &settings.upload_throttle {
                        throttle.purge();
                    }
                    if let Some(auth) = &settings.auth {
                        auth.throttle.purge();
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    /// A config with every limiter, its `auth` files in `dir`; `push` and `logins` are the
    /// per-minute figures of `rate_limits.push` and `auth.failed_logins.per_client_ip`.
    fn config(dir: &std::path::Path, push: u32, logins: u32) -> (Config, Auth) {
        crate::certgen::generate(&dir.join("certs"), &["edge.test".into()]).unwrap();
        let line = crate::registry_config::htpasswd_line("alice", "pw", 4).unwrap();
        std::fs::write(dir.join("htpasswd"), line + "\n").unwrap();
        let text = format!(
            "server: {{ https_listen: [] }}\n\
             upstream: {{ nodes: [\"127.0.0.1:5000\"] }}\n\
             rate_limits:\n  push: {{ per_minute: {push} }}\n  \
             upload_bytes: {{ per_second: 1048576 }}\n\
             auth:\n  token:\n    service: s\n    issuer: i\n    \
             signing_key: certs/registry-auth.key\n    certificate: certs/registry-auth.crt\n  \
             users: {{ htpasswd: htpasswd }}\n  \
             failed_logins: {{ per_client_ip: {logins} }}\n"
        );
        let config = crate::config::parse(&dir.join("edge.yaml"), &text).unwrap();
        let auth = Auth::load(config.auth.as_ref().unwrap()).unwrap();
        (config, auth)
    }

    #[tokio::test]
    async fn limiters_survive_a_reload_that_keeps_their_settings() {
        let dir = tempfile::tempdir().unwrap();
        let (first, auth) = config(dir.path(), 1, 1);
        let before = Settings::new(
            &first,
            Some(auth),
            TrustedIssuers::default(),
            None,
            None,
            Routes::default(),
        );
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let throttle = &before.auth.as_ref().unwrap().throttle;
        throttle.record_failure(ip, "alice").await;
        throttle.record_failure(ip, "alice").await;
        assert!(throttle.blocked_for(ip, "alice").await.is_some());

        // Same limits (another key changed elsewhere would not matter): counters are kept.
        let (same, auth) = config(dir.path(), 1, 1);
        let kept = Settings::new(
            &same,
            Some(auth),
            TrustedIssuers::default(),
            Some(&before),
            None,
            Routes::default(),
        );
        let (push, upload) = (kept.push_limiter.unwrap(), kept.upload_throttle.unwrap());
        assert!(Arc::ptr_eq(&push, before.push_limiter.as_ref().unwrap()));
        assert!(Arc::ptr_eq(
            &upload,
            before.upload_throttle.as_ref().unwrap()
        ));
        let logins = &kept.auth.as_ref().unwrap().throttle;
        assert!(
            logins.blocked_for(ip, "alice").await.is_some(),
            "block kept"
        );

        // Changed limits start from fresh counters.
        let (changed, auth) = config(dir.path(), 2, 2);
        let fresh = Settings::new(
            &changed,
            Some(auth),
            TrustedIssuers::default(),
            Some(&before),
            None,
            Routes::default(),
        );
        let push = fresh.push_limiter.unwrap();
        assert!(!Arc::ptr_eq(&push, before.push_limiter.as_ref().unwrap()));
        let logins = &fresh.auth.as_ref().unwrap().throttle;
        assert_eq!(logins.blocked_for(ip, "alice").await, None, "new budget");
    }
}
