//! What the policy tests (`tests/policy.rs`, `tests/policy_immutable.rs`) ask of the shared
//! set-up ([`Setup`] with `policy:`): pushes of noise images, manifests, deletes, uploads,
//! `usage show`.

use std::path::Path;
use std::process::Command;

use super::auth::login;
use super::curl;
use super::images::noise_image;

use super::setup::Feature;
pub use super::setup::Setup;

impl Setup {
    /// The registry and an edge with `policy:` (`policy` holds the keys after
    /// `state_dir`, indented by two spaces).
    pub fn policy(policy: &str) -> Setup {
        Setup::start(Feature::Policy, policy)
    }

    /// skopeo copy of a noise image (`layer` bytes, `seed`) to `target` (after the host) as
    /// `user`; `Err(stderr)` when refused.
    pub fn push(&self, user: &str, layer: u64, seed: u64, target: &str) -> Result<(), String> {
        let layout = self.dir.path().join(format!("image-{layer}-{seed}"));
        let source = match layout.exists() {
            true => format!("oci:{}:x", layout.display()),
            false => noise_image(&layout, "x", layer, seed),
        };
        self.push_image(user, &source, target, &[])
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
