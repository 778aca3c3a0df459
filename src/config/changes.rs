//! What differs between two configurations, key by key: the walk over the sections a
//! reload uses to say what it applied and what waits for a restart.
//!
//! Each section classifies its own keys beside its converter (`keys.rs` has the
//! vocabulary); this file only hands each section its old and new values, in the order the
//! reload's log line lists them.

use super::auth::{auth_changes, TRUSTED_ISSUERS};
use super::cache::cache_changes;
use super::keys::Changes;
use super::limits::{limits_changes, PULL, PUSH, UPLOAD_BYTES};
use super::model::{Config, Maintenance, LOG_FORMAT, MAINTENANCE};
use super::policy::policy_changes;
use super::routes::routes_changes;
use super::server::{admin_changes, server_changes};
use super::shared_state::SHARED_STATE;
use super::tls::{ACME, CERTIFICATES};
use super::upstream::{forwarded_changes, upstream_changes};

impl Changes {
    /// Every key that differs between `old` and `new`, classified. Exhaustive
    /// destructuring: a new section does not compile until it is walked here.
    pub(crate) fn between(old: &Config, new: &Config) -> Changes {
        let Config {
            source: _,
            server,
            certificates,
            acme,
            upstream,
            routes,
            forwarded,
            limits,
            auth,
            trusted_issuers,
            maintenance,
            push_limit,
            upload_limit,
            pull_limit,
            admin,
            log_format,
            shared_state,
            cache,
            policy,
        } = old;
        let Maintenance { read_only } = maintenance;
        let mut c = Changes::default();
        server_changes(server, &new.server, &mut c);
        c.note(CERTIFICATES, certificates, &new.certificates);
        c.note(ACME, acme, &new.acme);
        upstream_changes(upstream, &new.upstream, &mut c);
        routes_changes(routes, &new.routes, &mut c);
        forwarded_changes(forwarded, &new.forwarded, &mut c);
        limits_changes(limits, &new.limits, &mut c);
        auth_changes(auth, &new.auth, &mut c);
        c.note(TRUSTED_ISSUERS, trusted_issuers, &new.trusted_issuers);
        c.note(MAINTENANCE, read_only, &new.maintenance.read_only);
        c.note(PUSH, push_limit, &new.push_limit);
        c.note(UPLOAD_BYTES, upload_limit, &new.upload_limit);
        c.note(PULL, pull_limit, &new.pull_limit);
        admin_changes(admin, &new.admin, &mut c);
        c.note(LOG_FORMAT, log_format, &new.log_format);
        c.note(SHARED_STATE, shared_state, &new.shared_state);
        cache_changes(cache, &new.cache, &mut c);
        policy_changes(policy, &new.policy, &mut c);
        c
    }
}

/// Every key a reload knows, section by section: the tests and the reference read them.
pub(crate) fn all_keys() -> impl Iterator<Item = super::keys::Key> {
    use super::{auth, cache, limits, model, policy, routes, server, shared_state, tls, upstream};
    [
        server::KEYS,
        tls::KEYS,
        upstream::KEYS,
        routes::KEYS,
        limits::KEYS,
        auth::KEYS,
        model::KEYS,
        shared_state::KEYS,
        cache::KEYS,
        policy::KEYS,
    ]
    .into_iter()
    .flatten()
    .copied()
}
