//! The real CNCF registry (Debian's `docker-registry`) on a loopback port with its own
//! storage: started, stopped, restarted on the same port, and inspected on disk.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{curl, free_port, Proc};

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// The real CNCF registry (Debian's docker-registry) on a loopback port with its own storage.
pub struct Registry {
    pub port: u16,
    pub root: PathBuf,
    config: PathBuf,
    log: PathBuf,
    proc: Proc,
}

impl Registry {
    pub fn start(dir: &Path, name: &str) -> Registry {
        Self::start_with(dir, name, "")
    }

    /// Like [`Registry::start`] with extra top-level YAML (for example an `auth:` block).
    pub fn start_with(dir: &Path, name: &str, extra: &str) -> Registry {
        let port = free_port();
        let root = dir.join(format!("{name}-data"));
        let config = dir.join(format!("{name}.yml"));
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{ level: warn, accesslog: {{ disabled: false }} }}\n\
                 storage:\n  filesystem: {{ rootdirectory: {} }}\n  delete: {{ enabled: true }}\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: shared-test-secret\n{extra}",
                root.display()
            ),
        )
        .unwrap();
        let log = dir.join(format!("{name}.log"));
        let proc = Self::spawn(&config, &log);
        let mut registry = Registry {
            port,
            root,
            config,
            log,
            proc,
        };
        registry.wait_ready();
        registry
    }

    fn spawn(config: &Path, log: &Path) -> Proc {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        Proc::spawn(
            Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(config)
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out),
        )
    }

    /// The registry's log: warnings and its access log (one line per request, in the
    /// combined log format: `"GET /v2/… HTTP/1.1" 200 …`).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Requests with `method` for `path` in the access log.
    pub fn requests(&self, method: &str, path: &str) -> usize {
        let asked = format!("\"{method} {path} HTTP/");
        self.log_text()
            .lines()
            .filter(|l| l.contains(&asked))
            .count()
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn wait_ready(&mut self) {
        let url = format!("http://{}/v2/", self.addr());
        // 401 is ready too: the registry asks for a token when auth is on.
        let ready = || matches!(curl(&[url.as_str()]).status, 200 | 401);
        if let Err(why) = self.proc.wait_started(Duration::from_secs(30), ready) {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            panic!("the registry did not answer /v2/: {why}; its log:\n{log}");
        }
    }

    pub fn stop(&mut self) {
        self.proc.kill();
    }

    /// Starts again on the same port and storage.
    pub fn restart(&mut self) {
        self.proc = Self::spawn(&self.config, &self.log);
        self.wait_ready();
    }

    /// Bytes this node has received for in-progress uploads of `repo`.
    pub fn upload_bytes_stored(&self, repo: &str) -> u64 {
        let uploads = self
            .root
            .join("docker/registry/v2/repositories")
            .join(repo)
            .join("_uploads");
        let Ok(entries) = std::fs::read_dir(uploads) else {
            return 0;
        };
        entries
            .flatten()
            .filter_map(|e| std::fs::metadata(e.path().join("data")).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Whether this node stores a blob (asked directly, not through the edge).
    pub fn has_blob(&self, repo: &str, digest: &str) -> bool {
        let url = format!("http://{}/v2/{repo}/blobs/{digest}", self.addr());
        curl(&["-I", url.as_str()]).status == 200
    }
}
