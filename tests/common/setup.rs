//! The set-up the cache and policy tests share: the real registry with token auth, and an
//! edge with `auth`, an admin listener and one feature's section (`cache:` or `policy:`),
//! its folder in the test's temporary folder. What each feature's tests ask of it is in
//! `cache.rs` and `policy.rs` (more `impl Setup` blocks).

use std::path::Path;

use super::auth::{auth_yaml, login, registry_auth_block};
use super::{free_port, make_certs, skopeo_push, upstream_yaml, Certs, Edge, Registry};

/// Which feature the edge runs with: its section and the key naming its folder.
#[derive(Clone, Copy)]
pub enum Feature {
    /// `cache:` with `dir`.
    Cache,
    /// `policy:` with `state_dir`.
    Policy,
}

impl Feature {
    /// The section's first lines: its name and its folder under `dir`.
    fn section(self, dir: &Path) -> String {
        let (name, key, folder) = match self {
            Feature::Cache => ("cache", "dir", "cache"),
            Feature::Policy => ("policy", "state_dir", "policy"),
        };
        format!("{name}:\n  {key}: {}\n", dir.join(folder).display())
    }
}

pub struct Setup {
    pub dir: tempfile::TempDir,
    pub certs: Certs,
    pub registry: Registry,
    pub edge: Edge,
    pub admin: u16,
    pub feature: Feature,
}

impl Setup {
    /// The registry and an edge with `feature`'s section, followed by `extra` (the
    /// section's other keys, indented by two spaces).
    pub fn start(feature: Feature, extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, feature, extra)
    }

    /// [`Setup::start`] in a folder the test prepared (a small file system, say).
    pub fn start_in(dir: tempfile::TempDir, feature: Feature, extra: &str) -> Setup {
        let certs = make_certs(dir.path());
        let registry = Registry::start_with(dir.path(), "node", &registry_auth_block(dir.path()));
        let admin = free_port();
        let edge = Self::edge(dir.path(), &certs, &registry, admin, feature, extra);
        Setup {
            dir,
            certs,
            registry,
            edge,
            admin,
            feature,
        }
    }

    fn edge(
        dir: &Path,
        certs: &Certs,
        registry: &Registry,
        admin: u16,
        feature: Feature,
        extra: &str,
    ) -> Edge {
        let extra = format!(
            "{}admin:\n  listen: \"127.0.0.1:{admin}\"\n{}{extra}",
            auth_yaml(dir, ""),
            feature.section(dir)
        );
        Edge::start(
            dir,
            certs,
            &upstream_yaml(&[registry.addr()], "repository_hash"),
            &extra,
        )
    }

    /// Stops the edge and starts a new one with `extra`, on the same folders.
    pub fn restart_edge(&mut self, extra: &str) {
        self.edge.proc.kill();
        self.edge = Self::edge(
            self.dir.path(),
            &self.certs,
            &self.registry,
            self.admin,
            self.feature,
            extra,
        );
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.edge.https_port)
    }

    pub fn ca(&self) -> String {
        self.certs.ca_dir.join("ca.crt").display().to_string()
    }

    /// A bearer token for `user` (password `pw-<user>`) with `scope`.
    pub fn token(&self, user: &str, scope: &str) -> String {
        let answer = login(&self.edge, &self.ca(), user, &format!("pw-{user}"), scope);
        answer.json()["token"].as_str().unwrap().to_string()
    }

    /// A bearer header for alice with `actions` on `repository`.
    pub fn bearer(&self, repository: &str, actions: &str) -> String {
        let token = self.token("alice", &format!("repository:{repository}:{actions}"));
        format!("Authorization: Bearer {token}")
    }

    /// skopeo copy of `source` (`oci:…`) to `target` (after the host) as `user`, with
    /// `extra` skopeo arguments; `Err(stderr)` when refused.
    pub fn push_image(
        &self,
        user: &str,
        source: &str,
        target: &str,
        extra: &[&str],
    ) -> Result<(), String> {
        let out = skopeo_push(
            self.certs.ca_dir.to_str().unwrap(),
            Some(&format!("{user}:pw-{user}")),
            source,
            &format!("docker://{}/{target}", self.host()),
            extra,
        );
        match out.status.success() {
            true => Ok(()),
            false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        }
    }

    /// [`Setup::push_image`] that must succeed; the pushed manifest's digest (skopeo's
    /// `--digestfile`: it compresses layers on the way, so the registry's digests are these).
    pub fn push_image_digest(&self, user: &str, source: &str, target: &str) -> String {
        let digest_file = self.dir.path().join("pushed-digest");
        let digest_arg = ["--digestfile", digest_file.to_str().unwrap()];
        let pushed = self.push_image(user, source, target, &digest_arg);
        assert!(pushed.is_ok(), "{pushed:?}");
        std::fs::read_to_string(&digest_file)
            .unwrap()
            .trim()
            .to_string()
    }
}
