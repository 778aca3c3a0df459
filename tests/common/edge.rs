//! The real `registry-edge` binary with a generated config: [`Edge`] (start, wait until it
//! answers TLS, read its log), [`edge_with_node`] (certificates, one registry node and an
//! edge in front), [`upstream_yaml`] and [`reload`].

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{curl, free_port, make_certs, Certs, Proc, Registry};

pub const EDGE_BIN: &str = env!("CARGO_BIN_EXE_registry-edge");

/// The real registry-edge binary with a generated config.
pub struct Edge {
    pub https_port: u16,
    pub http_port: u16,
    pub config: PathBuf,
    pub log: PathBuf,
    pub proc: Proc,
}

impl Edge {
    /// `extra` is appended to a config with listeners, the dev certificate and `nodes`.
    /// It may override `upstream` wholesale by passing `upstream_yaml`.
    pub fn start(dir: &Path, certs: &Certs, upstream_yaml: &str, extra: &str) -> Edge {
        Self::start_with(dir, certs, "  shutdown_grace: 1s\n", upstream_yaml, extra)
    }

    /// Like [`Edge::start`], with extra lines inside `server:` (indented by the caller;
    /// [`Edge::start`] passes `shutdown_grace: 1s`).
    pub fn start_with(
        dir: &Path,
        certs: &Certs,
        server_extra: &str,
        upstream_yaml: &str,
        extra: &str,
    ) -> Edge {
        let mut edge = Self::start_unchecked(dir, certs, server_extra, upstream_yaml, extra);
        let url = edge.url("/v2/");
        let ca = certs.ca_dir.join("ca.crt");
        let ready = || curl(&["--cacert", ca.to_str().unwrap(), url.as_str()]).status != 0;
        if let Err(why) = edge.proc.wait_started(Duration::from_secs(30), ready) {
            panic!(
                "the edge did not accept TLS: {why}; its log:\n{}",
                edge.log_text()
            );
        }
        edge
    }

    /// Like [`Edge::start_with`] without waiting for it to answer a plain TLS request
    /// (for listeners that expect something else first).
    pub fn start_unchecked(
        dir: &Path,
        certs: &Certs,
        server_extra: &str,
        upstream_yaml: &str,
        extra: &str,
    ) -> Edge {
        let https_port = free_port();
        let http_port = free_port();
        let yaml = format!(
            "server:\n  https_listen: [\"127.0.0.1:{https_port}\"]\n  http_listen: [\"127.0.0.1:{http_port}\"]\n  threads: 2\n{server_extra}\
             tls:\n  certificates:\n    - cert: {}\n      key: {}\n\
             {upstream_yaml}\n{extra}\n",
            certs.tls_crt.display(),
            certs.tls_key.display()
        );
        Self::start_config(dir, https_port, http_port, &yaml)
    }

    /// Starts the edge with a whole config of the caller's (whose listeners are on these
    /// ports). Log lines are written at once (`REGISTRY_EDGE_LOG_FLUSH=0s`), so tests can
    /// read a request's access line as soon as its answer arrived.
    pub fn start_config(dir: &Path, https_port: u16, http_port: u16, yaml: &str) -> Edge {
        Self::start_config_env(dir, https_port, http_port, yaml, &[])
    }

    /// Like [`Edge::start_config`], with extra environment variables (set after the
    /// defaults, so they override them).
    pub fn start_config_env(
        dir: &Path,
        https_port: u16,
        http_port: u16,
        yaml: &str,
        env: &[(&str, &str)],
    ) -> Edge {
        let config = dir.join(format!("edge-{https_port}.yaml"));
        std::fs::write(&config, yaml).unwrap();
        let log = dir.join(format!("edge-{https_port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let proc = Proc::spawn(
            Command::new(EDGE_BIN)
                .args(["run", "--config"])
                .arg(&config)
                .env("REGISTRY_EDGE_LOG", "info")
                .env("REGISTRY_EDGE_LOG_FLUSH", "0s")
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out),
        );
        Edge {
            https_port,
            http_port,
            config,
            log,
            proc,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.https_port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Dev certificates, one real registry node and an edge in front of it; `extra` is
/// appended to the edge's config.
pub fn edge_with_node(dir: &Path, extra: &str) -> (Certs, Registry, Edge) {
    let certs = make_certs(dir);
    let registry = Registry::start(dir, "node");
    let edge = Edge::start(
        dir,
        &certs,
        &upstream_yaml(&[registry.addr()], "repository_hash"),
        extra,
    );
    (certs, registry, edge)
}

/// `registry-edge reload --pid-file`, asserting it succeeded.
pub fn reload(pid_file: &Path) {
    let out = Command::new(EDGE_BIN)
        .args(["reload", "--pid-file"])
        .arg(pid_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "reload: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `upstream:` YAML for the given nodes with a fast health check.
pub fn upstream_yaml(nodes: &[String], balance: &str) -> String {
    let list = nodes
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "upstream:\n  nodes: [{list}]\n  balance: {balance}\n  connect_timeout: 1s\n  read_timeout: 60s\n  \
         health_check: {{ path: /v2/, interval: 300ms }}\n"
    )
}
