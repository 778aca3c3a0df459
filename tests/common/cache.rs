//! What the cache tests (`tests/cache.rs`, `tests/cache_sharing.rs`) ask of the shared
//! set-up ([`Setup`] with `cache:`): pulls by skopeo, cache metrics, the files `cacache`
//! keeps.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{admin_metrics, curl, metric, skopeo, wait_for, CurlResult};

use super::setup::Feature;
pub use super::setup::Setup;

impl Setup {
    /// The registry and an edge with `cache:` (1 GiB) and `cache_extra` keys.
    pub fn cache(cache_extra: &str) -> Setup {
        Self::cache_with_size("1GiB", cache_extra)
    }

    /// Like [`Setup::cache`] with another `cache.max_size`.
    pub fn cache_with_size(max_size: &str, cache_extra: &str) -> Setup {
        Setup::start(Feature::Cache, &cache_size(max_size, cache_extra))
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

/// `cache:`'s `max_size` line and the other keys.
pub fn cache_size(max_size: &str, cache_extra: &str) -> String {
    format!("  max_size: {max_size}\n{cache_extra}")
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
