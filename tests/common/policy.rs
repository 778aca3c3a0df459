//! The policy tests' setup (`tests/policy.rs`, `tests/policy_immutable.rs`): the real
//! registry with token auth, an edge with `auth`, an admin listener and `policy:`, and
//! what the tests ask of them (skopeo pushes, manifests, deletes, `usage show`).

use std::path::Path;
use std::process::Command;

use super::auth::{auth_yaml, login, registry_auth_block};
use super::images::noise_image;
use super::{curl, make_certs, skopeo_push, upstream_yaml, Certs, Edge, Registry};

pub struct Setup {
    pub dir: tempfile::TempDir,
    pub certs: Certs,
    pub registry: Registry,
    pub edge: Edge,
    pub admin: u16,
}

impl Setup {
    /// The registry, and an edge with `auth` and `policy:` (`policy` holds the keys after
    /// `state_dir`, indented by two spaces).
    pub fn start(policy: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let certs = make_certs(dir.path());
        let registry = Registry::start_with(dir.path(), "node", &registry_auth_block(dir.path()));
        let admin = super::free_port();
        let edge = Self::edge(dir.path(), &certs, &registry, admin, policy);
        Setup {
            dir,
            certs,
            registry,
            edge,
            admin,
        }
    }

    pub fn edge(dir: &Path, certs: &Certs, registry: &Registry, admin: u16, policy: &str) -> Edge {
        let extra = format!(
            "{}admin:\n  listen: \"127.0.0.1:{admin}\"\npolicy:\n  state_dir: {}\n{policy}",
            auth_yaml(dir, ""),
            dir.join("policy").display()
        );
        Edge::start(
            dir,
            certs,
            &upstream_yaml(&[registry.addr()], "repository_hash"),
            &extra,
        )
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.edge.https_port)
    }

    pub fn ca(&self) -> String {
        self.certs.ca_dir.join("ca.crt").display().to_string()
    }

    /// skopeo copy of a noise image (`layer` bytes, `seed`) to `target` (after the host) as
    /// `user`; `Err(stderr)` when refused.
    pub fn push(&self, user: &str, layer: u64, seed: u64, target: &str) -> Result<(), String> {
        let layout = self.dir.path().join(format!("image-{layer}-{seed}"));
        let source = match layout.exists() {
            true => format!("oci:{}:x", layout.display()),
            false => noise_image(&layout, "x", layer, seed),
        };
        let out = skopeo_push(
            self.certs.ca_dir.to_str().unwrap(),
            &format!("{user}:pw-{user}"),
            &source,
            &format!("docker://{}/{target}", self.host()),
        );
        match out.status.success() {
            true => Ok(()),
            false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        }
    }

    /// The manifest `reference` of `repository`: its digest and the (digest, size) of
    /// every blob it references.
    pub fn manifest(&self, repository: &str, reference: &str) -> (String, Vec<(String, u64)>) {
        let raw = super::skopeo_raw_manifest(
            self.certs.ca_dir.to_str().unwrap(),
            "admin:pw-admin",
            &format!("docker://{}/{repository}:{reference}", self.host()),
        );
        let manifest: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        let blob = |d: &serde_json::Value| {
            (
                d["digest"].as_str().unwrap().to_string(),
                d["size"].as_u64().unwrap(),
            )
        };
        let mut blobs = vec![blob(&manifest["config"])];
        blobs.extend(manifest["layers"].as_array().unwrap().iter().map(blob));
        (super::digest(&raw), blobs)
    }

    /// DELETE of manifest `digest` in `repository` as `user`: the status and body.
    pub fn delete(&self, user: &str, repository: &str, digest: &str) -> super::CurlResult {
        let scope = format!("repository:{repository}:delete");
        let answer = login(&self.edge, &self.ca(), user, &format!("pw-{user}"), &scope);
        let token = answer.json()["token"].as_str().unwrap().to_string();
        curl(&[
            "--cacert",
            &self.ca(),
            "-X",
            "DELETE",
            "-H",
            &format!("Authorization: Bearer {token}"),
            &self
                .edge
                .url(&format!("/v2/{repository}/manifests/{digest}")),
        ])
    }

    /// A bearer header for alice with `actions` on `repository`.
    pub fn bearer(&self, repository: &str, actions: &str) -> String {
        let scope = format!("repository:{repository}:{actions}");
        let answer = login(&self.edge, &self.ca(), "alice", "pw-alice", &scope);
        format!(
            "Authorization: Bearer {}",
            answer.json()["token"].as_str().unwrap()
        )
    }

    /// `PUT` of manifest `body` to `repository:tag` as alice, with `extra` curl arguments.
    pub fn put_manifest(
        &self,
        repository: &str,
        tag: &str,
        body: &[u8],
        extra: &[&str],
    ) -> super::CurlResult {
        let file = self
            .dir
            .path()
            .join(format!("manifest-{}", super::digest(body)));
        std::fs::write(&file, body).unwrap();
        let (bearer, ca) = (self.bearer(repository, "pull,push"), self.ca());
        let data = format!("@{}", file.display());
        let url = self.edge.url(&format!("/v2/{repository}/manifests/{tag}"));
        let mut args = vec!["--cacert", &ca, "-X", "PUT", "-H", &bearer];
        args.extend([
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
        ]);
        args.extend(["--data-binary", &data]);
        args.extend_from_slice(extra);
        args.push(&url);
        curl(&args)
    }

    /// `POST /v2/<repository>/blobs/uploads/` as alice: an upload start, or with `body` a
    /// monolithic upload of that file.
    pub fn post_upload(&self, repository: &str, body: Option<&Path>) -> super::CurlResult {
        let scope = format!("repository:{repository}:pull,push");
        let answer = login(&self.edge, &self.ca(), "alice", "pw-alice", &scope);
        let token = answer.json()["token"].as_str().unwrap().to_string();
        let bearer = format!("Authorization: Bearer {token}");
        let mut url = self.edge.url(&format!("/v2/{repository}/blobs/uploads/"));
        let data = body.map(|path| format!("@{}", path.display()));
        let ca = self.ca();
        let mut args = vec!["--cacert", ca.as_str(), "-X", "POST", "-H", bearer.as_str()];
        if let (Some(data), Some(path)) = (&data, body) {
            url.push_str(&format!(
                "?digest={}",
                super::digest(&std::fs::read(path).unwrap())
            ));
            args.extend([
                "-H",
                "Content-Type: application/octet-stream",
                "--data-binary",
                data,
            ]);
        }
        args.push(&url);
        curl(&args)
    }

    /// Stops the edge and starts a new one with `policy`, on the same state folder.
    pub fn restart_edge(&mut self, policy: &str) {
        self.edge.proc.kill();
        self.edge = Self::edge(
            self.dir.path(),
            &self.certs,
            &self.registry,
            self.admin,
            policy,
        );
    }

    /// `registry-edge usage show --namespace` for `namespace`: its usage in bytes.
    pub fn usage(&self, namespace: &str) -> u64 {
        usage_of(&self.edge.config, namespace)
    }
}

pub fn usage_of(config: &Path, namespace: &str) -> u64 {
    let out = Command::new(super::EDGE_BIN)
        .args(["usage", "show", "--namespace", namespace, "--config"])
        .arg(config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(namespace))
        .unwrap_or_else(|| panic!("no line for {namespace}:\n{text}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The sum of the distinct blobs' sizes.
pub fn distinct_sum(blobs: &[&[(String, u64)]]) -> u64 {
    let mut seen = std::collections::BTreeMap::new();
    for list in blobs {
        for (digest, size) in *list {
            seen.insert(digest.clone(), *size);
        }
    }
    seen.values().sum()
}
