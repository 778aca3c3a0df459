//! `routes:`: several registries behind one edge, with three real `distribution`
//! instances: R, the "public" registry (no auth, content pushed with skopeo), M, a
//! distribution in proxy mode whose `proxy.remoteurl` is R (token auth trusting the edge:
//! it sees only tokens the edge signs for its own names), and O, the operator's registry
//! (the default pool). Route `hub` (prefix `hub/`, host `mirror.test`, ns `docker.io`,
//! read-only, stale_if_error) goes to M; route `ext` (prefix `ext/`, writable) goes to R.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::auth::{auth_yaml_with, error_code, granted, registry_auth_block, SERVICE};
use common::containerd::Containerd;
use common::docker::{output_text, Dockerd};
use common::{
    admin_metrics, curl, free_port, make_certs, metric, skopeo, tiny_oci_layout, wait_for, Certs,
    Checks, CurlResult, Edge, Registry,
};

const OCI_MANIFEST: &str = "Accept: application/vnd.oci.image.manifest.v1+json";

struct Scene {
    dir: tempfile::TempDir,
    certs: Certs,
    public: Registry,
    mirror: Registry,
    own: Registry,
    /// A registry whose auth (htpasswd) does not trust the edge's tokens: route `locked`.
    locked: Registry,
    edge: Edge,
    admin: u16,
}

impl Scene {
    fn start() -> Scene {
        let dir = tempfile::tempdir().unwrap();
        let certs = make_certs(dir.path());
        let public = Registry::start(dir.path(), "public");
        let mirror_yaml = format!(
            "proxy:\n  remoteurl: http://{}\n{}",
            public.addr(),
            registry_auth_block(dir.path())
        );
        let mirror = Registry::start_with(dir.path(), "mirror", &mirror_yaml);
        let own = Registry::start_with(dir.path(), "own", &registry_auth_block(dir.path()));
        let locked_auth = common::auth::registry_htpasswd_block(dir.path());
        let locked = Registry::start_with(dir.path(), "locked", &locked_auth);
        let admin = free_port();
        let pid_file = dir.path().join("edge.pid");
        let edge = Edge::start_with(
            dir.path(),
            &certs,
            &format!("  shutdown_grace: 1s\n  pid_file: {}\n", pid_file.display()),
            &common::upstream_yaml(&[own.addr()], "repository_hash"),
            &edge_yaml(dir.path(), &mirror, &public, admin, &locked),
        );
        Scene {
            dir,
            certs,
            public,
            mirror,
            own,
            locked,
            edge,
            admin,
        }
    }

    fn ca(&self) -> String {
        self.certs.ca_dir.join("ca.crt").display().to_string()
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.edge.https_port)
    }

    /// A token from the edge's realm (`query` after `?`: service, scope, route).
    fn token(&self, user: &str, query: &str) -> String {
        let url = format!("{}?{query}", self.edge.url("/jwt/auth"));
        let creds = format!("{user}:pw-{user}");
        let answer = curl(&["--cacert", &self.ca(), "-u", &creds, &url]);
        assert_eq!(answer.status, 200, "{}", answer.text());
        answer.json()["token"].as_str().unwrap().to_string()
    }

    fn get(&self, path: &str, token: &str, extra: &[&str]) -> CurlResult {
        let bearer = format!("Authorization: Bearer {token}");
        let ca = self.ca();
        let url = self.edge.url(path);
        let mut args = vec!["--cacert", ca.as_str(), "-H", bearer.as_str()];
        args.extend_from_slice(extra);
        args.push(&url);
        curl(&args)
    }

    /// skopeo copy of `reference` (after the edge's host) as `user` into a fresh layout.
    fn pull(&self, user: &str, reference: &str) -> Result<(), String> {
        let target = self.dir.path().join(format!("pulled-{}", rand_suffix()));
        let creds = format!("{user}:pw-{user}");
        let out = skopeo(&[
            "copy",
            "--src-cert-dir",
            self.certs.ca_dir.to_str().unwrap(),
            "--src-creds",
            &creds,
            &format!("docker://{}/{reference}", self.host()),
            &format!("oci:{}:x", target.display()),
        ]);
        match out.status.success() {
            true => Ok(()),
            false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        }
    }

    fn metrics(&self) -> String {
        admin_metrics(self.admin)
    }

    /// Stops the edge and starts it again on the same ports and config.
    fn restart_edge(&mut self) {
        self.edge.proc.kill();
        let yaml = std::fs::read_to_string(&self.edge.config).unwrap();
        let (https, http) = (self.edge.https_port, self.edge.http_port);
        self.edge = Edge::start_config(self.dir.path(), https, http, &yaml);
        let (ca, url) = (self.ca(), self.edge.url("/v2/"));
        wait_for("the edge to answer again", Duration::from_secs(30), || {
            (curl(&["--cacert", &ca, &url]).status == 401).then_some(())
        });
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed).to_string()
}

fn edge_yaml(
    dir: &Path,
    mirror: &Registry,
    public: &Registry,
    admin: u16,
    locked: &Registry,
) -> String {
    let users = format!("    htpasswd: {}\n", common::auth::htpasswd(dir).display());
    let acl = [
        r#"{ account: admin, name: "**", actions: ["*"] }"#,
        r#"{ account: "*", name: "${account}/**", actions: [pull, push, delete] }"#,
        r#"{ account: alice, name: "hub/**", actions: [pull] }"#,
        r#"{ account: "", name: "hub/library/**", actions: [pull] }"#,
        r#"{ account: alice, name: "ext/alice/**", actions: [pull, push] }"#,
    ];
    format!(
        "{auth}admin:\n  listen: \"127.0.0.1:{admin}\"\n\
         cache:\n  dir: {cache}\n  max_size: 1GiB\n\
         policy:\n  state_dir: {policy}\n  quotas: {{ namespaces: {{ ext: 1MiB }} }}\n  \
         immutable_tags: [{{ name: \"ext/alice/**\", tags: [\"1\"] }}]\n\
         routes:\n  \
         - name: hub\n    prefix: hub/\n    hosts: [mirror.test, localhost]\n    \
           ns: [docker.io, \"{public}\"]\n    \
           nodes: [\"{mirror}\"]\n    read_only: true\n    stale_if_error: 1h\n    \
           connect_timeout: 1s\n    health_check: {{ interval: 300ms }}\n  \
         - name: ext\n    prefix: ext/\n    nodes: [\"{public}\"]\n  \
         - {{ name: locked, prefix: locked/, nodes: [\"{locked}\"], read_only: true }}\n",
        auth = auth_yaml_with(dir, &users, &acl),
        cache = dir.join("cache").display(),
        policy = dir.join("policy").display(),
        mirror = mirror.addr(),
        public = public.addr(),
        locked = locked.addr(),
    )
}

/// Pushes an OCI layout to the plain-HTTP registry `to` as `name`.
fn push_plain(source: &str, to: &Registry, name: &str) {
    let out = skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        source,
        &format!("docker://{}/{name}", to.addr()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The digest R holds for `name:tag` (asked directly).
fn digest_in(registry: &Registry, name: &str, tag: &str) -> String {
    let url = format!("http://{}/v2/{name}/manifests/{tag}", registry.addr());
    let answer = curl(&["-I", "-H", OCI_MANIFEST, &url]);
    answer.header("docker-content-digest").unwrap().to_string()
}

/// The `key="value"` parameters of a `WWW-Authenticate: Bearer …` challenge.
fn challenge(answer: &CurlResult) -> Vec<(String, String)> {
    let value = answer.header("www-authenticate").unwrap_or_default();
    let params = value.strip_prefix("Bearer ").unwrap_or_default();
    params
        .split("\",")
        .filter_map(|p| p.split_once("=\""))
        .map(|(k, v)| (k.to_string(), v.trim_end_matches('"').to_string()))
        .collect()
}

#[test]
fn routes_send_mirrors_and_own_registry_each_their_names() {
    let mut s = Scene::start();
    let layout = PathBuf::from(s.dir.path()).join("tiny");
    std::fs::create_dir_all(&layout).unwrap();
    let tiny = tiny_oci_layout(&layout);
    push_plain(&tiny, &s.public, "library/app:1");
    push_plain(&tiny, &s.public, "library/never:1");
    let big = common::images::noise_image(&s.dir.path().join("big"), "1", 3 << 20, 7);
    push_plain(&big, &s.public, "library/big:1");
    let mut c = Checks::new();

    c.run("a prefixed route pulls from R through M", || {
        s.pull("alice", "hub/library/app:1").unwrap();
        assert!(s.mirror.requests("GET", "/v2/library/app/manifests/1") >= 1);
        assert_eq!(s.own.requests("GET", "/v2/hub/library/app/manifests/1"), 0);
    });
    c.run("the ACL decides who pulls hub/**", || {
        let refused = s.pull("bob", "hub/library/app:1").unwrap_err();
        assert!(
            refused.contains("denied") || refused.contains("unauthorized"),
            "{refused}"
        );
    });
    c.run("a read-only route refuses pushes with 405 JSON", || {
        let token = s.token(
            "admin",
            &format!("service={SERVICE}&scope=repository:hub/library/new:pull,push"),
        );
        let answer = s.get(
            "/v2/hub/library/new/blobs/uploads/",
            &token,
            &["-X", "POST"],
        );
        assert_eq!(answer.status, 405, "{}", answer.text());
        assert_eq!(error_code(&answer), "UNSUPPORTED");
        assert_eq!(
            s.mirror.requests("POST", "/v2/library/new/blobs/uploads/"),
            0
        );
        // Without push rights the ACL answers first, as everywhere.
        let pull_only = s.token(
            "alice",
            &format!("service={SERVICE}&scope=repository:hub/library/new:pull,push"),
        );
        let answer = s.get(
            "/v2/hub/library/new/blobs/uploads/",
            &pull_only,
            &["-X", "POST"],
        );
        assert_eq!(answer.status, 401, "{}", answer.text());
    });
    c.run(
        "the default pool is the operator's registry as before",
        || {
            let out = common::skopeo_push(
                s.certs.ca_dir.to_str().unwrap(),
                Some("alice:pw-alice"),
                &tiny,
                &format!("docker://{}/alice/app:1", s.host()),
                &[],
            );
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(s.own.requests("PUT", "/v2/alice/app/manifests/1") >= 1);
            s.pull("alice", "alice/app:1").unwrap();
        },
    );
    for (name, extra) in [("ns", "?ns=docker.io"), ("host", "")] {
        c.run(
            &format!("the {name} route names the repository hub/…"),
            || {
                let host = "Host: mirror.test";
                let mut args = vec!["-H", OCI_MANIFEST];
                if name == "host" {
                    args.extend(["-H", host]);
                }
                let path = format!("/v2/library/app/manifests/1{extra}");
                let asked = s.get(&path, "none", &args);
                assert_eq!(asked.status, 401, "{}", asked.text());
                let params = challenge(&asked);
                let param = |k: &str| params.iter().find(|(key, _)| key == k).unwrap().1.clone();
                assert!(
                    param("realm").ends_with("/jwt/auth?route=hub"),
                    "{params:?}"
                );
                assert_eq!(param("scope"), "repository:library/app:pull");
                // The client asks for the name it knows, at the realm it was given.
                let answer = curl(&[
                    "--cacert",
                    &s.ca(),
                    "-u",
                    "alice:pw-alice",
                    &format!(
                        "{}?route=hub&service={SERVICE}&scope=repository:library/app:pull",
                        s.edge.url("/jwt/auth")
                    ),
                ]);
                assert_eq!(
                    granted(&answer),
                    [(
                        "repository:hub/library/app".to_string(),
                        vec!["pull".to_string()]
                    )]
                );
                let token = answer.json()["token"].as_str().unwrap().to_string();
                let pulled = s.get(&path, &token, &args);
                assert_eq!(pulled.status, 200, "{}", pulled.text());
                assert_eq!(
                    pulled.header("docker-content-digest"),
                    Some(digest_in(&s.public, "library/app", "1").as_str())
                );
                // bob's token for the same name grants nothing.
                let bob = s.token(
                    "bob",
                    &format!("route=hub&service={SERVICE}&scope=repository:library/app:pull"),
                );
                assert_eq!(s.get(&path, &bob, &args).status, 401);
            },
        );
    }
    c.run(
        "upload Locations and tag lists name the edge's names",
        || {
            let token = s.token(
                "alice",
                &format!("service={SERVICE}&scope=repository:ext/alice/up:pull,push"),
            );
            let started = s.get("/v2/ext/alice/up/blobs/uploads/", &token, &["-X", "POST"]);
            assert_eq!(started.status, 202, "{}", started.text());
            let location = started.header("location").unwrap().to_string();
            assert!(
                location.contains("/v2/ext/alice/up/blobs/uploads/"),
                "{location}"
            );
            let body = b"routed blob";
            let digest = common::digest(body);
            let body_file = s.dir.path().join("routed-blob");
            std::fs::write(&body_file, body).unwrap();
            let path = location
                .split_once("127.0.0.1")
                .map_or(location.as_str(), |(_, rest)| {
                    rest.split_once('/').map_or(rest, |(_, p)| p)
                });
            let put_path = format!("/{path}&digest={digest}");
            let upload = format!("@{}", body_file.display());
            let done = s.get(
                &put_path,
                &token,
                &[
                    "-X",
                    "PUT",
                    "-H",
                    "Content-Type: application/octet-stream",
                    "--data-binary",
                    &upload,
                ],
            );
            assert_eq!(done.status, 201, "{}", done.text());
            let blob = done.header("location").unwrap();
            assert!(
                blob.contains(&format!("/v2/ext/alice/up/blobs/{digest}")),
                "{blob}"
            );
            assert!(s.public.has_blob("alice/up", &digest));

            let out = common::skopeo_push(
                s.certs.ca_dir.to_str().unwrap(),
                Some("alice:pw-alice"),
                &tiny,
                &format!("docker://{}/ext/alice/up:1", s.host()),
                &[],
            );
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            for http in ["--http1.1", "--http2"] {
                let tags = s.get("/v2/ext/alice/up/tags/list", &token, &[http]);
                assert_eq!(tags.status, 200, "{http}: {}", tags.text());
                assert_eq!(tags.json()["name"], "ext/alice/up", "{http}");
                assert_eq!(tags.json()["tags"], serde_json::json!(["1"]), "{http}");
            }
        },
    );
    c.run(
        "a long tag list (sent chunked by the pool) names the edge's name",
        || {
            // 40 more tags of 100 characters: over the 2 KiB Go sends with a Content-Length.
            let base = format!("http://{}/v2/alice/up/manifests", s.public.addr());
            let manifest = curl(&["-H", OCI_MANIFEST, &format!("{base}/1")]);
            let file = s.dir.path().join("up-manifest.json");
            std::fs::write(&file, &manifest.body).unwrap();
            let body = format!("@{}", file.display());
            let content_type =
                format!("Content-Type: {}", manifest.header("content-type").unwrap());
            for i in 0..40 {
                let tag = format!("{i:03}-{}", "t".repeat(96));
                let url = format!("{base}/{tag}");
                let put = curl(&[
                    "-X",
                    "PUT",
                    "-H",
                    &content_type,
                    "--data-binary",
                    &body,
                    &url,
                ]);
                assert_eq!(put.status, 201, "{}", put.text());
            }
            let token = s.token(
                "alice",
                &format!("service={SERVICE}&scope=repository:ext/alice/up:pull"),
            );
            for http in ["--http1.1", "--http2"] {
                let tags = s.get("/v2/ext/alice/up/tags/list", &token, &[http]);
                assert_eq!(tags.status, 200, "{http}: {}", tags.text());
                assert_eq!(tags.json()["name"], "ext/alice/up", "{http}");
                assert_eq!(tags.json()["tags"].as_array().unwrap().len(), 41, "{http}");
            }
        },
    );
    c.run(
        "the pool gets the path as sent, and no mount across names",
        || {
            let token = s.token(
                "alice",
                &format!(
                    "service={SERVICE}&scope=repository:ext/alice/up2:pull,push\
                 &scope=repository:ext/alice/up:pull"
                ),
            );
            // An encoded `?` stays encoded: the pool sees an upload session id, not a query.
            let odd = s.get(
                "/v2/ext/alice/up2/blobs/uploads/%3Fmount=x",
                &token,
                &["-X", "PATCH", "--data-binary", "x"],
            );
            assert!(odd.status >= 400, "{}", odd.text());
            assert!(
                s.public
                    .log_text()
                    .contains("/v2/alice/up2/blobs/uploads/%3Fmount=x"),
                "{}",
                s.public.log_text()
            );
            // A mount from another name becomes a plain upload at the pool.
            let digest = common::digest(b"routed blob");
            let mount =
                format!("/v2/ext/alice/up2/blobs/uploads/?mount={digest}&from=ext/alice/up");
            let started = s.get(&mount, &token, &["-X", "POST"]);
            assert_eq!(started.status, 202, "{}", started.text());
            assert!(s.public.requests("POST", "/v2/alice/up2/blobs/uploads/") >= 1);
        },
    );
    c.run("8 cold pulls at once: one fetch per blob reaches M", || {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| s.pull("alice", "hub/library/big:1")))
                .collect();
            for handle in handles {
                handle.join().unwrap().unwrap();
            }
        });
        let manifest = common::skopeo_raw_manifest(
            s.certs.ca_dir.to_str().unwrap(),
            "alice:pw-alice",
            &format!("docker://{}/hub/library/big:1", s.host()),
        );
        let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        let layer = manifest["layers"][0]["digest"].as_str().unwrap();
        let config = manifest["config"]["digest"].as_str().unwrap();
        for digest in [layer, config] {
            let path = format!("/v2/library/big/blobs/{digest}");
            assert_eq!(s.mirror.requests("GET", &path), 1, "{path}");
        }
    });
    c.run("quotas and immutable tags see the edge's names", || {
        // ext/alice/up:1 exists at R as alice/up:1: the policy asks R by R's name.
        let other = common::images::noise_image(&s.dir.path().join("other"), "1", 2000, 3);
        let pushed = |source: &str, target: &str| {
            common::skopeo_push(
                s.certs.ca_dir.to_str().unwrap(),
                Some("alice:pw-alice"),
                source,
                &format!("docker://{}/{target}", s.host()),
                &[],
            )
        };
        let refused = pushed(&other, "ext/alice/up:1");
        let text = String::from_utf8_lossy(&refused.stderr);
        assert!(
            !refused.status.success() && text.contains("immutable"),
            "{text}"
        );
        // Namespace `ext` (1 MiB): the 3 MiB image does not fit.
        let big = common::images::noise_image(&s.dir.path().join("big-ext"), "1", 3 << 20, 5);
        let refused = pushed(&big, "ext/alice/big:1");
        let text = String::from_utf8_lossy(&refused.stderr);
        assert!(
            !refused.status.success() && text.contains("quota"),
            "{text}"
        );
        // usage scan walks the writable route's pool and names its repositories at the edge.
        let scan = std::process::Command::new(common::EDGE_BIN)
            .args(["usage", "scan", "--config"])
            .arg(&s.edge.config)
            .output()
            .unwrap();
        assert!(
            scan.status.success(),
            "{}",
            String::from_utf8_lossy(&scan.stderr)
        );
        assert!(common::policy::usage_of(&s.edge.config, "ext") > 0);
    });
    c.run(
        "a pool that does not trust the edge's tokens: 502 naming the fix",
        || {
            let token = s.token(
                "admin",
                &format!("service={SERVICE}&scope=repository:locked/team/app:pull"),
            );
            let answer = s.get(
                "/v2/locked/team/app/manifests/1",
                &token,
                &["-H", OCI_MANIFEST],
            );
            assert_eq!(answer.status, 502, "{}", answer.text());
            assert_eq!(error_code(&answer), "UNAVAILABLE");
            assert!(
                answer.text().contains("registry-config --route locked"),
                "{}",
                answer.text()
            );
            assert!(answer.header("www-authenticate").is_none());
            assert!(s.locked.requests("GET", "/v2/team/app/manifests/1") >= 1);
        },
    );
    c.run("requests are counted and logged by route", || {
        let text = s.metrics();
        let hub = metric(
            &text,
            "registry_edge_requests_total{class=\"pull\",route=\"hub\",status=\"200\"}",
        );
        assert!(hub.unwrap_or(0.0) >= 1.0, "{text}");
        assert!(s.edge.log_text().contains("route=hub"));
    });

    let first_digest = digest_in(&s.public, "library/app", "1");
    s.public.stop();
    c.run("R stopped: M serves what it holds", || {
        s.pull("alice", "hub/library/app:1").unwrap();
        let token = s.token(
            "alice",
            &format!("service={SERVICE}&scope=repository:hub/library/never:pull"),
        );
        let never = s.get(
            "/v2/hub/library/never/manifests/1",
            &token,
            &["-H", OCI_MANIFEST],
        );
        assert_eq!(never.status, 404, "{}", never.text());
        assert_eq!(error_code(&never), "MANIFEST_UNKNOWN");
        assert!(never.json()["errors"].is_array(), "{}", never.text());
    });

    s.mirror.stop();
    let token = s.token(
        "alice",
        &format!(
            "service={SERVICE}&scope=repository:hub/library/app:pull\
             &scope=repository:hub/library/never:pull"
        ),
    );
    c.run("M stopped: remembered tags are answered stale", || {
        let answer = s.get(
            "/v2/hub/library/app/manifests/1",
            &token,
            &["-H", OCI_MANIFEST],
        );
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(
            answer.header("warning"),
            Some("110 - \"Response is Stale\"")
        );
        assert_eq!(
            answer.header("docker-content-digest"),
            Some(first_digest.as_str())
        );
        s.pull("alice", "hub/library/app:1").unwrap();
        let never = s.get(
            "/v2/hub/library/never/manifests/1",
            &token,
            &["-H", OCI_MANIFEST],
        );
        assert!((500..600).contains(&never.status), "{}", never.text());
        assert!(never.json()["errors"].is_array());
        // A stale answer is no failure: no ERROR line for it.
        let log = s.edge.log_text();
        assert!(
            !log.lines()
                .any(|l| l.contains("Fail to proxy") && l.contains("status: 200")),
            "{log}"
        );
        let ready = curl(&[&format!("http://127.0.0.1:{}/readyz", s.admin)]);
        assert_eq!(ready.status, 200, "{}", ready.text());
        let stale = metric(
            &s.metrics(),
            "registry_edge_route_stale_answers_total{route=\"hub\"}",
        );
        assert!(stale.unwrap_or(0.0) >= 1.0);
    });
    s.restart_edge();
    c.run("remembered tags survive an edge restart", || {
        s.pull("alice", "hub/library/app:1").unwrap();
        let answer = s.get(
            "/v2/hub/library/app/manifests/1",
            &token,
            &["-H", OCI_MANIFEST],
        );
        assert_eq!(
            answer.header("warning"),
            Some("110 - \"Response is Stale\"")
        );
    });

    s.public.restart();
    let moved_layout = s.dir.path().join("moved");
    let moved = common::images::noise_image(&moved_layout, "1", 1000, 11);
    push_plain(&moved, &s.public, "library/app:1");
    let moved_digest = digest_in(&s.public, "library/app", "1");
    s.mirror.restart();
    c.run(
        "M back after the tag moved: the new digest, not stale",
        || {
            let answer = wait_for("the route to answer fresh", Duration::from_secs(20), || {
                let answer = s.get(
                    "/v2/hub/library/app/manifests/1",
                    &token,
                    &["-H", OCI_MANIFEST],
                );
                answer.header("warning").is_none().then_some(answer)
            });
            assert_eq!(answer.status, 200, "{}", answer.text());
            assert_eq!(
                answer.header("docker-content-digest"),
                Some(moved_digest.as_str())
            );
        },
    );

    // A reload moves route hub to a node that answers 429 to every pull (no local registry
    // answers 429: a stand-in) and adds route `late`.
    let (throttling, seen) = too_many_requests_node();
    let config = std::fs::read_to_string(&s.edge.config).unwrap();
    let config = config.replace(&s.mirror.addr(), &throttling).replace(
        "\n  - name: ext\n",
        &format!(
            "\n  - {{ name: late, prefix: late/, nodes: [\"{}\"] }}\n  - name: ext\n",
            s.public.addr()
        ),
    );
    std::fs::write(&s.edge.config, config).unwrap();
    common::reload(&s.dir.path().join("edge.pid"));
    c.run(
        "a pool answering 429: remembered tags answered stale",
        || {
            let answer = wait_for(
                "the reload to move the route",
                Duration::from_secs(10),
                || {
                    let answer = s.get(
                        "/v2/hub/library/app/manifests/1",
                        &token,
                        &["-H", OCI_MANIFEST],
                    );
                    answer.header("warning").is_some().then_some(answer)
                },
            );
            assert_eq!(answer.status, 200, "{}", answer.text());
            assert_eq!(
                answer.header("docker-content-digest"),
                Some(moved_digest.as_str())
            );
            let asked = seen.lock().unwrap().clone();
            assert!(
                asked
                    .iter()
                    .any(|l| l.starts_with("GET /v2/library/app/manifests/1 ")),
                "{asked:?}"
            );
            // What it never remembered gets the pool's answer.
            let never = s.get(
                "/v2/hub/library/never/manifests/1",
                &token,
                &["-H", OCI_MANIFEST],
            );
            assert_eq!(never.status, 429, "{}", never.text());
        },
    );
    c.run("a route added by a reload takes requests", || {
        let admin = s.token(
            "admin",
            &format!("service={SERVICE}&scope=repository:late/library/app:pull"),
        );
        let answer = wait_for("route late", Duration::from_secs(10), || {
            let answer = s.get(
                "/v2/late/library/app/manifests/1",
                &admin,
                &["-H", OCI_MANIFEST],
            );
            (answer.status == 200).then_some(answer)
        });
        assert_eq!(
            answer.header("docker-content-digest"),
            Some(moved_digest.as_str())
        );
    });
    c.finish();
}

/// A stand-in node that answers `GET /v2/` with 200 (healthy) and every other request with
/// `429 TOOMANYREQUESTS`, as Docker Hub does past its pull limit; the request lines it saw.
fn too_many_requests_node() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let addr = common::echo::stand_in(move |head, _| {
        let request_line = head.lines().next().unwrap_or_default();
        if request_line.starts_with("GET /v2/ ") {
            return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".to_string();
        }
        record.lock().unwrap().push(request_line.trim().to_string());
        let body = r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"pull limit"}]}"#;
        format!(
            "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    });
    (addr, seen)
}

/// containerd with a `hosts.toml` mirror entry for R's host pointing at the edge (its
/// requests carry `?ns=<R's host>`: the `ns` route), and the docker engine with
/// `registry-mirrors` at `https://localhost:PORT` (a `hosts` route: docker sends Docker Hub
/// names without a prefix), both pulling anonymously as public mirrors are.
#[test]
fn containerd_and_docker_pull_through_their_mirror_routes() {
    let s = Scene::start();
    let layout = s.dir.path().join("tiny");
    std::fs::create_dir_all(&layout).unwrap();
    push_plain(&tiny_oci_layout(&layout), &s.public, "library/app:1");
    let mut c = Checks::new();
    match (common::tool("containerd"), common::tool("ctr")) {
        (Some(_), Some(_)) => {
            c.run("containerd pulls R's image through the ns route", || {
                let containerd = Containerd::start(&s.dir.path().join("containerd"));
                let hosts = s.dir.path().join("hosts");
                let folder = hosts.join(s.public.addr());
                std::fs::create_dir_all(&folder).unwrap();
                let toml = format!(
                    "server = \"http://{r}\"\n[host.\"https://{edge}\"]\n  ca = \"{ca}\"\n  \
                     capabilities = [\"pull\", \"resolve\"]\n",
                    r = s.public.addr(),
                    edge = s.host(),
                    ca = s.ca()
                );
                std::fs::write(folder.join("hosts.toml"), toml).unwrap();
                let image = format!("{}/library/app:1", s.public.addr());
                let hosts = hosts.display().to_string();
                let out = containerd.ctr(&["images", "pull", "--hosts-dir", &hosts, &image]);
                assert!(out.status.success(), "{}", output_text(&out));
                let asked = format!("/v2/library/app/manifests/1?ns={}", s.public.addr());
                assert!(
                    s.edge.log_text().lines().any(|l| l.contains("route=hub")
                        && l.contains("path=/v2/library/app/manifests/1")),
                    "no routed manifest request for {asked} in the edge's log"
                );
                // containerd resolves with HEAD; the query (`ns`) goes to the pool too.
                let at_mirror = s.mirror.log_text().lines().any(|l| {
                    l.contains(" /v2/library/app/manifests/1?ns=") && l.contains("containerd/")
                });
                assert!(at_mirror, "{}", s.mirror.log_text());
                // containerd never went to R itself (R sees M only).
                assert!(!s.public.log_text().contains("containerd/"));
            });
        }
        _ => common::skip(
            "containerd",
            "containerd is not installed (scripts/install-deps installs it)",
        ),
    }
    c.run(
        "skopeo with a registries.conf mirror carrying the prefix",
        || {
            // What docs/routes.md gives podman, buildah, skopeo and CRI-O: docker.io mirrored
            // at <edge>/hub, so docker.io/library/app reaches the edge as hub/library/app.
            let conf = s.dir.path().join("registries.conf");
            std::fs::write(
                &conf,
                format!(
                    "[[registry]]\nprefix = \"docker.io\"\nlocation = \"docker.io\"\n\
                 [[registry.mirror]]\nlocation = \"{}/hub\"\n",
                    s.host()
                ),
            )
            .unwrap();
            let target = s.dir.path().join("from-mirror-conf");
            let out = std::process::Command::new("skopeo")
                .arg("--registries-conf")
                .arg(&conf)
                .args(["--insecure-policy", "copy", "--src-cert-dir"])
                .arg(&s.certs.ca_dir)
                .args([
                    "--src-creds",
                    "alice:pw-alice",
                    "docker://docker.io/library/app:1",
                ])
                .arg(format!("oci:{}:x", target.display()))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let log = s.edge.log_text();
            assert!(
                log.lines()
                    .any(|l| l.contains("path=/v2/hub/library/app/manifests/1")
                        && l.contains("route=hub")
                        && l.contains("status=200")),
                "{log}"
            );
        },
    );
    let mirror = format!("https://localhost:{}", s.edge.https_port);
    match Dockerd::start_with(
        &s.dir.path().join("docker"),
        &["--registry-mirror", &mirror],
    ) {
        Ok(mut engine) => {
            c.run(
                "docker pulls a Docker Hub name through the hosts route",
                || {
                    engine.trust(
                        &format!("localhost:{}", s.edge.https_port),
                        &s.certs.ca_dir.join("ca.crt"),
                    );
                    let out = engine.docker(&["pull", "library/app:1"]);
                    assert!(
                        out.status.success(),
                        "{}\nthe edge's log:\n{}",
                        output_text(&out),
                        s.edge.log_text()
                    );
                    // docker resolves the tag with HEAD through the edge; M answers it.
                    let resolved = s.mirror.log_text().lines().any(|l| {
                        l.contains(" /v2/library/app/manifests/1 HTTP/") && l.contains("docker/")
                    });
                    assert!(resolved, "{}", s.mirror.log_text());
                    let log = s.edge.log_text();
                    assert!(log
                        .lines()
                        .any(|l| l.contains("route=hub") && l.contains("status=200")));
                },
            );
        }
        Err(why) => common::skip("docker engine", &why),
    }
    c.finish();
}
