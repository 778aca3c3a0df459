//! The reloadable part of the configuration, as requests see it.
//!
//! Each request takes one snapshot when it starts and keeps it to the end, so a reload
//! never changes the rules under a request already admitted (an upload streaming when
//! read-only mode is switched on completes). A reload builds a new snapshot and swaps it.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::auth::Auth;
use crate::config::{Config, ExternalUrl, ForwardedSettings, Limits};

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
}

impl Settings {
    pub fn new(config: &Config, auth: Option<Auth>) -> Settings {
        Settings {
            forwarded: config.forwarded.clone(),
            external: config.server.external_url.clone(),
            limits: config.limits,
            connect_timeout: config.upstream.connect_timeout,
            read_timeout: config.upstream.read_timeout,
            read_only: config.maintenance.read_only,
            auth: auth.map(Arc::new),
        }
    }
}

/// The settings in force, shared by the proxy and the reloader.
pub type SharedSettings = Arc<ArcSwap<Settings>>;
