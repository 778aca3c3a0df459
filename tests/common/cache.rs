//! The cache tests' setup (`tests/cache.rs`, `tests/cache_sharing.rs`): the real registry
//! with token auth, an edge with `cache:` and an admin listener, and what the tests ask of
//! them (tokens, pulls by skopeo, cache metrics, the files `cacache` keeps).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::auth::{auth_yaml, login, registry_auth_block};
use super::{
    admin_metrics, curl, free_port, make_certs, metric, skopeo, upstream_yaml, wait_for, Certs,
    CurlResult, Edge, Registry,
};

pub struct Setup {
    pub dir: tempfile::TempDir,
    pub certs: Certs,
    pub registry: Registry,
    pub edge: Edge,
    pub admin: u16,
}

impl Setup {
    pub fn start(cache_extra: &str) -> Setup {
        Self::start_with_size("1GiB", cache_extra)
    }

    /// Like [`Setup::start`] with another `cache.max_size`.
    pub fn start_with_size(max_size: &str, cache_extra: &str) -> Setup {
        let cache_extra = format!("  max_size: {max_size}\n{cache_extra}");
        let cache_extra = cache_extra.as_str();
        let dir = tempfile::tempdir().unwrap();
        let certs = make_certs(dir.path());
        let registry = Registry::start_with(dir.path(), "node", &registry_auth_block(dir.path()));
        let admin = free_port();
        let edge = Self::edge(dir.path(), &certs, &registry, admin, cache_extra);
        Setup {
            dir,
            certs,
            registry,
            edge,
            admin,
        }
    }

    pub fn edge(
        dir: &Path,
        certs: &Certs,
        registry: &Registry,
        admin: u16,
        cache_extra: &str,
    ) -> Edge {
        let extra = format!(
            "{}admin:\n  listen: \"127.0.0.1:{admin}\"\ncache:\n  dir: {}\n{cache_extra}",
            auth_yaml(dir, ""),
            dir.join("cache").display()
        );
        Edge::start(
            dir,
            certs,
            &upstream_yaml(&[registry.addr()], "repository_hash"),
            &extra,
        )
    }

    pub fn restart_edge(&mut self) {
        self.edge.proc.kill();
        let extra = "  max_size: 1GiB\n";
        self.edge = Self::edge(
            self.dir.path(),
            &self.certs,
            &self.registry,
            self.admin,
            extra,
        );
    }

    pub fn ca(&self) -> String {
        self.certs.ca_dir.join("ca.crt").display().to_string()
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.edge.https_port)
    }

    /// A bearer token for `user` with `scope`.
    pub fn token(&self, user: &str, scope: &str) -> String {
        let answer = login(&self.edge, &self.ca(), user, &format!("pw-{user}"), scope);
        answer.json()["token"].as_str().unwrap().to_string()
    }

    /// GET (or `method`) of `path` with alice's pull token for `repository`.
    pub fn get(&self, repository: &str, path: &str, extra: &[&str]) -> CurlResult {
        let token = self.token("alice", &format!("repository:{repository}:pull"));
        let bearer = format!("Authorization: Bearer {token}");
        let ca = self.ca();
        let mut args = vec!["--cacert", &ca, "-H", &bearer];
        args.extend_from_slice(extra);
        let url = self.edge.url(path);
        args.push(&url);
        curl(&args)
    }

    /// Starts the registry again and waits until the edge's health check sees it.
    pub fn restart_registry(&mut self) {
        self.registry.restart();
        // A request with a token goes to the registry (without one the edge answers 401).
        let token = self.token("alice", "");
        let bearer = format!("Authorization: Bearer {token}");
        let (url, ca) = (self.edge.url("/v2/"), self.ca());
        wait_for(
            "the node to be healthy again",
            Duration::from_secs(10),
            || (curl(&["--cacert", &ca, "-H", &bearer, &url]).status == 200).then_some(()),
        );
    }

    /// The first layer's digest and size, and the config's digest, in the manifest `digest`
    /// of alice/app.
    pub fn layer_of(&self, digest: &str) -> (String, u64, String) {
        let raw = super::skopeo_raw_manifest(
            self.certs.ca_dir.to_str().unwrap(),
            "alice:pw-alice",
            &format!("docker://{}/alice/app@{digest}", self.host()),
        );
        let manifest: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        let layer = &manifest["layers"][0];
        (
            layer["digest"].as_str().unwrap().to_string(),
            layer["size"].as_u64().unwrap(),
            manifest["config"]["digest"].as_str().unwrap().to_string(),
        )
    }

    pub fn metric(&self, event: &str) -> f64 {
        let text = admin_metrics(self.admin);
        metric(
            &text,
            &format!("registry_edge_cache_events_total{{event=\"{event}\"}}"),
        )
        .unwrap_or(0.0)
    }

    /// skopeo pull of `reference` (after the host) into a fresh OCI layout; the layout's
    /// blob names (digests) on success.
    pub fn pull(&self, reference: &str, into: &str) -> Result<Vec<String>, String> {
        let target = self.dir.path().join(into);
        let out = skopeo(&[
            "copy",
            "--src-cert-dir",
            self.certs.ca_dir.to_str().unwrap(),
            "--src-creds",
            "alice:pw-alice",
            &format!("docker://{}/{reference}", self.host()),
            &format!("oci:{}:x", target.display()),
        ]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(blob_names(&target))
    }
}

pub fn blob_names(layout: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The file `cacache` keeps `digest`'s content in (its `content-v2` layout).
pub fn content_file(cache: &Path, digest: &str) -> PathBuf {
    let hex = &digest["sha256:".len()..];
    cache
        .join("content-v2/sha256")
        .join(&hex[..2])
        .join(&hex[2..4])
        .join(&hex[4..])
}

/// Pushes `bytes` as a blob of alice/`repo` and returns its digest.
pub fn push_blob(s: &Setup, repo: &str, bytes: &[u8]) -> String {
    let token = s.token("alice", &format!("repository:alice/{repo}:pull,push"));
    let bearer = format!("Authorization: Bearer {token}");
    let base = format!("https://127.0.0.1:{}", s.edge.https_port);
    super::push_blob(
        &base,
        &s.certs.ca_dir.join("ca.crt"),
        &format!("alice/{repo}"),
        bytes,
        &["-H", &bearer],
    )
}

pub fn noise(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
        .collect()
}
