//! Live reload on SIGHUP: re-read the configuration, validate all of it (YAML, keys,
//! certificates, users), and only then swap it in. An invalid file is logged with the
//! problem and the running configuration stays in force.
//!
//! Applied live: read-only mode, limits, forwarding trust, `external_url`, timeouts, users,
//! ACL, token settings, TLS certificates and the upstream node list (picked up by the pool
//! within a second; health checks then judge new nodes). Every other key needs a restart
//! and a changed value is named in the log as not applied. Each config section classifies
//! its own keys beside its converter (`config/keys.rs`), by exhaustive destructuring, so a
//! new key cannot be forgotten; [`Changes::between`] walks the sections.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::{Changes, Config, ConfigError};
use crate::load::load_all;
use crate::routes::Routes;
use crate::settings::{Settings, SharedSettings};
use crate::shared_state::SharedState;
use crate::tls::CertResolver;
use crate::upstream::NodeList;

pub(crate) struct Reloader {
    path: PathBuf,
    settings: SharedSettings,
    certificates: Option<Arc<CertResolver>>,
    nodes: NodeList,
    /// The configuration the process started with: what listeners, threads and the other
    /// restart-only keys still run on.
    started: Config,
    shared: Option<Arc<SharedState>>,
}

impl Reloader {
    pub(crate) fn new(
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
            started: config.clone(),
            shared,
        }
    }

    /// Loads and validates the file, then swaps the new settings and certificates in.
    /// Returns what differs from the configuration the process started with.
    pub(crate) fn reload(&self) -> Result<Changes, ConfigError> {
        let loaded = load_all(&self.path)?;
        // The PROXY listeners keep running until a restart, and their trust list is the one
        // reloaded: an empty one would refuse every connection.
        if self.started.server.proxy_protocol && loaded.config.forwarded.trusted_proxies.is_empty()
        {
            return Err(ConfigError::Invalid {
                path: self.path.clone(),
                key: "forwarded.trusted_proxies".into(),
                problem:
                    "empty, but the running listeners expect PROXY headers (server.proxy_protocol \
                          takes effect at a restart): keep the balancers listed until then"
                        .into(),
            });
        }
        let changes = Changes::between(&self.started, &loaded.config);
        if let (Some(resolver), Some(certificates)) = (&self.certificates, loaded.certificates) {
            resolver.replace(certificates);
        }
        let previous = self.settings.load_full();
        let routes = Routes::new(&loaded.config.routes, Some(&previous.routes)).map_err(|e| {
            ConfigError::Invalid {
                path: self.path.clone(),
                key: "routes".into(),
                problem: format!("a route's pool could not be built: {e}"),
            }
        })?;
        // Nothing is applied before everything was built.
        self.nodes.replace(&loaded.config.upstream.nodes);
        let next = Settings::new(
            &loaded.config,
            loaded.auth,
            loaded.trusted,
            Some(&previous),
            self.shared.as_ref(),
            routes,
        );
        self.settings.store(Arc::new(next));
        Ok(changes)
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
                    Ok(Changes { need_restart, .. }) if need_restart.is_empty() => {
                        tracing::info!(path = %self.path.display(), "configuration reloaded");
                    }
                    Ok(Changes { need_restart, .. }) => tracing::warn!(
                        path = %self.path.display(),
                        "configuration reloaded; changes to {} need a restart and were not applied",
                        need_restart.join(", ")
                    ),
                    Err(e) => tracing::error!(
                        "reload rejected, the running configuration stays in force: {}",
                        crate::report::chain(&e)
                    ),
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Applied, Key};
    use std::path::Path;

    /// Every key of the configuration, with a base value and another one.
    const BASE: &str = r#"
server:
  https_listen: ["0.0.0.0:443"]
  http_listen: ["0.0.0.0:80"]
  external_url: https://registry.example.com
  threads: 4
  shutdown_grace: 60s
  pid_file: /run/registry-edge.pid
  header_timeout: 60s
  body_timeout: 60s
  idle_timeout: 75s
  strict_host: false
  proxy_protocol: false
tls:
  certificates:
    - { cert: tls.crt, key: tls.key, server_names: [registry.example.com] }
upstream:
  nodes: ["127.0.0.1:5000"]
  balance: repository_hash
  connect_timeout: 5s
  read_timeout: 900s
  health_check: { path: /v2/, interval: 5s }
forwarded:
  trusted_proxies: ["10.0.0.0/8"]
limits:
  max_body_size: 0
auth:
  token:
    service: container_registry
    issuer: issuer
    signing_key: registry-auth.key
    certificate: registry-auth.crt
    expiration: 5m
  users:
    htpasswd: htpasswd
  acl:
    - { account: "*", name: "${account}/**", actions: [pull, push] }
rate_limits:
  push: { key: account, per_minute: 600, burst: 100 }
  upload_bytes: { key: account, per_second: 104857600, burst: 1073741824 }
maintenance:
  read_only: false
admin:
  listen: "127.0.0.1:9090"
log:
  format: text
cache:
  dir: /tmp/registry-edge-reload-cache
  max_size: 1GiB
  memory: 64MiB
  max_object: 512MiB
policy:
  state_dir: /tmp/registry-edge-reload-policy
  namespace_depth: 1
  quotas:
    default: 1GiB
  immutable_tags: []
"#;

    /// (key as reported, path in the YAML, another value, applied live).
    const EDITS: &[(&str, &[&str], &str, bool)] = &[
        ("server.https_listen", &["server", "https_listen"], r#"["0.0.0.0:8443"]"#, false),
        ("server.http_listen", &["server", "http_listen"], r#"["0.0.0.0:8080"]"#, false),
        ("server.external_url", &["server", "external_url"], "https://other.example", true),
        ("server.threads", &["server", "threads"], "2", false),
        ("server.shutdown_grace", &["server", "shutdown_grace"], "5s", false),
        ("server.pid_file", &["server", "pid_file"], "/run/other.pid", false),
        ("server.header_timeout", &["server", "header_timeout"], "10s", true),
        ("server.body_timeout", &["server", "body_timeout"], "10s", true),
        ("server.idle_timeout", &["server", "idle_timeout"], "10s", true),
        ("server.strict_host", &["server", "strict_host"], "true", true),
        ("server.proxy_protocol", &["server", "proxy_protocol"], "true", false),
        ("tls.certificates", &["tls", "certificates"], "[{ cert: b.crt, key: b.key }]", true),
        (
            "tls.acme",
            &["tls", "acme"],
            "{ directory: https://ca.example/dir, domains: [registry.example.com], state_dir: /var/lib/acme }",
            false,
        ),
        ("upstream.nodes", &["upstream", "nodes"], r#"["127.0.0.1:5001"]"#, true),
        ("upstream.balance", &["upstream", "balance"], "round_robin", false),
        ("upstream.connect_timeout", &["upstream", "connect_timeout"], "1s", true),
        ("upstream.read_timeout", &["upstream", "read_timeout"], "30s", true),
        ("upstream.health_check.path", &["upstream", "health_check", "path"], "/health", false),
        ("upstream.health_check.interval", &["upstream", "health_check", "interval"], "1s", false),
        (
            "routes",
            &["routes"],
            r#"[{ name: hub, prefix: hub/, nodes: ["127.0.0.1:5002"], read_only: true }]"#,
            true,
        ),
        ("forwarded", &["forwarded", "trusted_proxies"], r#"["192.168.0.0/16"]"#, true),
        ("limits", &["limits", "max_body_size"], "1000", true),
        ("auth", &["auth", "token", "expiration"], "10m", true),
        (
            "auth.trusted_issuers",
            &["auth", "trusted_issuers"],
            "[{ issuer: issuer, service: container_registry, certificates: gitlab.crt, realm: \"https://gitlab.example.com/jwt/auth\" }]",
            true,
        ),
        ("maintenance", &["maintenance", "read_only"], "true", true),
        ("rate_limits.push", &["rate_limits", "push", "per_minute"], "60", true),
        ("rate_limits.upload_bytes", &["rate_limits", "upload_bytes", "per_second"], "1000", true),
        ("rate_limits.pull", &["rate_limits", "pull"], "{ anonymous: { per_hour: 100 } }", true),
        ("admin.listen", &["admin", "listen"], "127.0.0.1:9191", false),
        ("admin.public", &["admin", "public"], "true", false),
        ("log.format", &["log", "format"], "json", false),
        ("shared_state", &["shared_state"], "{ redis: { url: \"redis://127.0.0.1:6379\" } }", false),
        ("cache.dir", &["cache", "dir"], "/tmp/registry-edge-other-cache", false),
        ("cache.max_size", &["cache", "max_size"], "2GiB", true),
        ("cache.memory", &["cache", "memory"], "32MiB", true),
        ("cache.max_object", &["cache", "max_object"], "256MiB", true),
        ("policy.state_dir", &["policy", "state_dir"], "/tmp/registry-edge-other-policy", false),
        ("policy.namespace_depth", &["policy", "namespace_depth"], "2", false),
        ("policy.quotas", &["policy", "quotas", "default"], "2GiB", true),
        ("policy.immutable_tags", &["policy", "immutable_tags"], "[ { name: a, tags: [b] } ]", true),
    ];

    fn edited(edits: &[&(&str, &[&str], &str, bool)]) -> Config {
        let mut yaml: serde_yaml::Value = serde_yaml::from_str(BASE).unwrap();
        for (_, path, value, _) in edits {
            let (last, parents) = path.split_last().unwrap();
            let mut node = &mut yaml;
            for key in parents {
                node = node.get_mut(*key).unwrap();
            }
            node[*last] = serde_yaml::from_str(value).unwrap();
        }
        let text = serde_yaml::to_string(&yaml).unwrap();
        crate::config::parse(Path::new("/etc/registry-edge/edge.yaml"), &text)
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn every_key_is_applied_live_or_named_as_needing_a_restart() {
        let base = edited(&[]);
        assert_eq!(Changes::between(&base, &base), Changes::default());
        for edit in EDITS {
            let (key, _, _, live) = edit;
            let changes = Changes::between(&base, &edited(&[edit]));
            assert_eq!(changes, only(key, *live), "{key}");
        }
    }

    /// (key, section): keys whose change applies at once when the section is removed.
    const REMOVALS: &[(&str, &str)] = &[("cache.dir", "cache"), ("policy", "policy")];

    fn without(section: &str) -> Config {
        edited(&[&("", &[section], "~", true)])
    }

    /// `Changes` with `key` alone, applied or waiting for a restart.
    fn only(key: &'static str, live: bool) -> Changes {
        match live {
            true => Changes {
                applied: vec![key],
                need_restart: vec![],
            },
            false => Changes {
                applied: vec![],
                need_restart: vec![key],
            },
        }
    }

    /// The sections' key tables are the one list of keys: each has a test edit here, and
    /// a reload classifies a change of it as its section declares (and as `EDITS` expects).
    #[test]
    fn every_declared_key_is_tested_and_reloaded_as_declared() {
        let base = edited(&[]);
        let keys: Vec<Key> = crate::config::all_keys().collect();
        for key in &keys {
            let name = key.name;
            let edit = EDITS.iter().find(|(edited, ..)| *edited == name);
            let removal = REMOVALS.iter().find(|(removed, _)| *removed == name);
            let live = key.applied == Applied::Live;
            match (key.applied, edit) {
                (Applied::AtRestartUnlessRemoved, _) => {
                    let (_, section) = removal.unwrap_or_else(|| panic!("{name}: add to REMOVALS"));
                    let removed = without(section);
                    assert_eq!(
                        Changes::between(&base, &removed),
                        only(name, true),
                        "{name}"
                    );
                    assert_eq!(
                        Changes::between(&removed, &base),
                        only(name, false),
                        "{name}"
                    );
                }
                (_, None) => panic!("{name}: add an edit to EDITS"),
                (_, Some(_)) => assert!(removal.is_none(), "{name} is not removable"),
            }
            if let Some(edit @ (_, _, _, expected_live)) = edit {
                assert_eq!(
                    live, *expected_live,
                    "{name}: EDITS and the section disagree"
                );
                let changes = Changes::between(&base, &edited(&[edit]));
                assert_eq!(changes, only(name, live), "{name}");
            }
        }
        for name in EDITS
            .iter()
            .map(|e| e.0)
            .chain(REMOVALS.iter().map(|r| r.0))
        {
            assert!(
                keys.iter().any(|k| k.name == name),
                "{name} is in no section"
            );
        }
    }

    #[test]
    fn all_keys_changed_at_once_are_all_reported() {
        let all: Vec<_> = EDITS.iter().collect();
        let changes = Changes::between(&edited(&[]), &edited(&all));
        let mut reported = changes.applied.clone();
        reported.extend(&changes.need_restart);
        let mut expected: Vec<&str> = EDITS.iter().map(|(key, ..)| *key).collect();
        reported.sort_unstable();
        expected.sort_unstable();
        assert_eq!(reported, expected);
    }
}
