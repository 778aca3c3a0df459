//! `tls.acme` against a real ACME CA: Debian's `pebble` (Let's Encrypt's RFC 8555 test
//! server), validating the real edge binary over its http-01 and tls-alpn-01 listeners.
//! Every name resolves to 127.0.0.1 through pebble-challtestsrv.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::pebble::{Pebble, PebbleOptions};
use common::*;

const NAME: &str = "registry.acme.test";

struct Setup {
    https_port: u16,
    http_port: u16,
    state_dir: PathBuf,
}

impl Setup {
    fn new(dir: &Path) -> Setup {
        Setup {
            https_port: free_port(),
            http_port: free_port(),
            state_dir: dir.join("acme-state"),
        }
    }

    fn pebble(&self, dir: &Path, validity_seconds: Option<u64>) -> Pebble {
        Pebble::start(
            dir,
            &PebbleOptions {
                http_port: self.http_port,
                tls_port: self.https_port,
                validity_seconds,
            },
        )
    }

    /// A config with `tls.acme` for [`NAME`] (plus `tls_extra` inside `tls:`).
    fn yaml(
        &self,
        pebble: &Pebble,
        challenge: &str,
        renew_before: &str,
        node: &str,
        tls_extra: &str,
        extra: &str,
    ) -> String {
        format!(
            "server:\n  https_listen: [\"127.0.0.1:{https}\"]\n  http_listen: [\"127.0.0.1:{http}\"]\n  threads: 2\n  shutdown_grace: 1s\n\
             tls:\n{tls_extra}  acme:\n    directory: {directory}\n    contact: [\"mailto:ops@example.com\"]\n    domains: [{NAME}]\n    challenge: {challenge}\n    state_dir: {state}\n    renew_before: {renew_before}\n    ca_roots: {roots}\n\
             {upstream}\n{extra}\n",
            https = self.https_port,
            http = self.http_port,
            state = self.state_dir.display(),
            directory = pebble.directory,
            roots = pebble.ca_roots.display(),
            upstream = upstream_yaml(&[node.to_string()], "repository_hash"),
        )
    }

    fn start(&self, dir: &Path, yaml: &str) -> Edge {
        Edge::start_config(dir, self.https_port, self.http_port, yaml)
    }

    /// `--resolve` so curl sends SNI and Host for [`NAME`] to the edge on loopback.
    fn resolve(&self) -> String {
        format!("{NAME}:{}:127.0.0.1", self.https_port)
    }

    fn url(&self, path: &str) -> String {
        format!("https://{NAME}:{}{path}", self.https_port)
    }
}

/// Serial of the certificate served for `name`, when it verifies against `root`.
fn verified_serial(port: u16, name: &str, root: &Path) -> Option<String> {
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let mut tls = tls_over_named(tcp, root, &[], name);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).ok()?;
    }
    let leaf = tls.conn.peer_certificates()?.first()?.clone();
    let (_, parsed) = x509_parser::parse_x509_certificate(&leaf).ok()?;
    Some(parsed.raw_serial_as_string())
}

/// Subject of whatever certificate is served for `name` (no verification).
fn served_subject(port: u16, name: &str) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} -servername {name} </dev/null 2>/dev/null \
             | openssl x509 -noout -subject"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o777
}

/// Polls until the edge serves a certificate for [`NAME`] that verifies against `root`
/// (and is not `except`); on timeout, fails with both logs.
fn wait_for_issued(
    setup: &Setup,
    root: &Path,
    except: Option<&str>,
    (edge, pebble): (&Edge, &Pebble),
) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let serial = verified_serial(setup.https_port, NAME, root);
        match serial {
            Some(s) if Some(s.as_str()) != except => return s,
            _ if std::time::Instant::now() > deadline => {
                let pebble_log: Vec<_> = pebble
                    .log_text()
                    .lines()
                    .filter(|l| !l.contains("calling handler"))
                    .map(str::to_string)
                    .collect();
                panic!(
                    "no new certificate within 60 s\n--- edge log\n{}\n--- pebble log\n{}",
                    edge.log_text(),
                    pebble_log.join("\n")
                );
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[test]
fn http01_obtains_a_certificate_and_a_restart_reuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(dir.path());
    let pebble = setup.pebble(dir.path(), None);
    let root = pebble.issuer_root(&dir.path().join("pebble-root.pem"));
    let node = Registry::start(dir.path(), "node");
    let yaml = setup.yaml(&pebble, "http-01", "30d", &node.addr(), "", "");
    let mut edge = setup.start(dir.path(), &yaml);
    let serial = wait_for_issued(&setup, &root, None, (&edge, &pebble));

    // A client trusting only pebble's root reaches the real registry through the edge.
    let root_arg = root.to_str().unwrap();
    let resolve = setup.resolve();
    let v2 = curl(&[
        "--cacert",
        root_arg,
        "--resolve",
        &resolve,
        &setup.url("/v2/"),
    ]);
    assert_eq!(v2.status, 200, "GET /v2/ with the ACME certificate");
    let blob = b"pushed over an ACME certificate".to_vec();
    let base = format!("https://{NAME}:{}", setup.https_port);
    let digest = push_blob(&base, &root, "acme/app", &blob, &["--resolve", &resolve]);
    let pulled = curl(&[
        "--cacert",
        root_arg,
        "--resolve",
        &resolve,
        &setup.url(&format!("/v2/acme/app/blobs/{digest}")),
    ]);
    assert_eq!((pulled.status, pulled.body), (200, blob));

    // The challenge was answered by the plain-HTTP listener, which still redirects the rest.
    let log = edge.log_text();
    assert!(log.contains("/.well-known/acme-challenge/"), "{log}");
    assert!(log.contains("serving a self-signed placeholder"), "{log}");
    let http = format!("http://127.0.0.1:{}", setup.http_port);
    assert_eq!(curl(&[&format!("{http}/v2/")]).status, 301);
    let unknown = curl(&[&format!("{http}/.well-known/acme-challenge/not-a-token")]);
    assert_eq!(unknown.status, 404);

    // Secrets are private; the account and the certificate are kept.
    let account = setup.state_dir.join("account.json");
    let key = setup.state_dir.join("certificate.key");
    assert_eq!(mode(&account), 0o600);
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&setup.state_dir), 0o700);
    let account_before = std::fs::read(&account).unwrap();
    assert_eq!((pebble.orders(), pebble.issued()), (1, 1));

    // Restart: the stored certificate serves at once, with no new order.
    edge.proc.kill();
    let edge = setup.start(dir.path(), &yaml);
    let again = wait_for_issued(&setup, &root, None, (&edge, &pebble));
    assert_eq!(
        again, serial,
        "the stored certificate is served after a restart"
    );
    let log = edge.log_text();
    assert!(log.contains("stored certificate in force"), "{log}");
    assert!(!log.contains("placeholder"), "{log}");
    assert_eq!(pebble.orders(), 1, "a restart placed no new order");
    assert_eq!(std::fs::read(&account).unwrap(), account_before);
}

#[test]
fn tls_alpn01_obtains_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(dir.path());
    let pebble = setup.pebble(dir.path(), None);
    let root = pebble.issuer_root(&dir.path().join("pebble-root.pem"));
    let node = Registry::start(dir.path(), "node");
    // No plain-HTTP challenge route exists in this mode: http-01 cannot be what passes.
    let yaml = setup.yaml(&pebble, "tls-alpn-01", "30d", &node.addr(), "", "");
    let edge = setup.start(dir.path(), &yaml);
    wait_for_issued(&setup, &root, None, (&edge, &pebble));
    let log = edge.log_text();
    assert!(
        log.contains("answered an ACME tls-alpn-01 validation"),
        "{log}"
    );
    assert!(!log.contains("/.well-known/acme-challenge/"), "{log}");
    let v2 = curl(&[
        "--cacert",
        root.to_str().unwrap(),
        "--resolve",
        &setup.resolve(),
        &setup.url("/v2/"),
    ]);
    assert_eq!(v2.status, 200);
    let http = format!("http://127.0.0.1:{}", setup.http_port);
    let token = curl(&[&format!("{http}/.well-known/acme-challenge/x")]);
    assert_eq!(
        token.status, 301,
        "http-01 answers are off in tls-alpn-01 mode"
    );
    assert_eq!(pebble.issued(), 1);
}

#[test]
fn renewal_in_the_background_under_concurrent_pulls() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(dir.path());
    // 60 s certificates renewed 50 s before expiry: a renewal every ~10 s.
    let mut pebble = setup.pebble(dir.path(), Some(60));
    let root = pebble.issuer_root(&dir.path().join("pebble-root.pem"));
    let node = Registry::start(dir.path(), "node");
    let admin_port = free_port();
    let yaml = setup.yaml(
        &pebble,
        "http-01",
        "50s",
        &node.addr(),
        "",
        &format!("admin:\n  listen: 127.0.0.1:{admin_port}\n"),
    );
    let edge = setup.start(dir.path(), &yaml);
    let first = wait_for_issued(&setup, &root, None, (&edge, &pebble));
    let account = std::fs::read(setup.state_dir.join("account.json")).unwrap();

    let resolve = setup.resolve();
    let base = format!("https://{NAME}:{}", setup.https_port);
    let blob = vec![7u8; 256 * 1024];
    let digest = push_blob(&base, &root, "acme/pull", &blob, &["--resolve", &resolve]);
    let blob_url = setup.url(&format!("/v2/acme/pull/blobs/{digest}"));

    let stop = Arc::new(AtomicBool::new(false));
    let renewed = Arc::new(AtomicBool::new(false));
    let after_renewal = Arc::new(AtomicUsize::new(0));
    let pullers: Vec<_> = (0..20)
        .map(|_| {
            let (stop, renewed, after_renewal) =
                (stop.clone(), renewed.clone(), after_renewal.clone());
            let (root, resolve, url, want) = (
                root.to_str().unwrap().to_string(),
                resolve.clone(),
                blob_url.clone(),
                digest.clone(),
            );
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                let mut pulls = 0;
                while !stop.load(Ordering::Relaxed) {
                    let got = curl(&["--cacert", &root, "--resolve", &resolve, &url]);
                    pulls += 1;
                    if got.status != 200 || common::digest(&got.body) != want {
                        failures.push(format!("status {} ({} bytes)", got.status, got.body.len()));
                    } else if renewed.load(Ordering::Relaxed) {
                        after_renewal.fetch_add(1, Ordering::Relaxed);
                    }
                }
                (pulls, failures)
            })
        })
        .collect();

    wait_for_issued(&setup, &root, Some(&first), (&edge, &pebble));
    renewed.store(true, Ordering::Relaxed);
    // Every puller gets to go on under the new certificate for a while.
    wait_for("pulls after the renewal", Duration::from_secs(60), || {
        (after_renewal.load(Ordering::Relaxed) >= 100).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for puller in pullers {
        let (pulls, failures) = puller.join().unwrap();
        assert!(failures.is_empty(), "failed pulls: {failures:?}");
        total += pulls;
    }
    assert!(total >= 120, "only {total} pulls ran");
    eprintln!(
        "renewal under load: {total} pulls by 20 clients, 0 failed; {} certificates issued",
        pebble.issued()
    );
    assert!(pebble.issued() >= 2);
    assert_eq!(
        std::fs::read(setup.state_dir.join("account.json")).unwrap(),
        account,
        "renewals reuse the account"
    );
    assert_eq!(
        pebble
            .log_text()
            .matches("There are now 2 accounts")
            .count(),
        0,
        "one account for every order"
    );
    let m = admin_metrics(admin_port);
    let ok_orders = metric(&m, "registry_edge_acme_orders_total{result=\"ok\"}").unwrap_or(0.0);
    assert!(ok_orders >= 2.0, "{m}");
    assert!(
        m.contains(&format!(
            "registry_edge_acme_certificate_expiry_timestamp_seconds{{name=\"{NAME}\"}}"
        )),
        "{m}"
    );

    // The CA goes away: the next renewal fails and the certificate in force keeps serving.
    pebble.stop();
    wait_for("a failed renewal", Duration::from_secs(60), || {
        edge.log_text()
            .contains("order failed (the current certificate stays in force)")
            .then_some(())
    });
    assert!(verified_serial(setup.https_port, NAME, &root).is_some());
    let got = curl(&[
        "--cacert",
        root.to_str().unwrap(),
        "--resolve",
        &resolve,
        &blob_url,
    ]);
    assert_eq!(got.status, 200);
}

#[test]
fn unreachable_ca_serves_placeholder_and_static_certificates_then_retries() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(dir.path());
    let certs = make_certs(dir.path());
    let node = Registry::start(dir.path(), "node");
    let admin_port = free_port();
    // The CA's address and roots are known, but nothing listens there yet.
    let mut pebble = Pebble::prepare(
        dir.path(),
        &PebbleOptions {
            http_port: setup.http_port,
            tls_port: setup.https_port,
            validity_seconds: None,
        },
    );
    let static_cert = format!(
        "  certificates:\n    - cert: {}\n      key: {}\n",
        certs.tls_crt.display(),
        certs.tls_key.display()
    );
    let yaml = setup.yaml(
        &pebble,
        "http-01",
        "30d",
        &node.addr(),
        &static_cert,
        &format!("admin:\n  listen: 127.0.0.1:{admin_port}\n"),
    );
    let edge = setup.start(dir.path(), &yaml);

    // It started: the static certificate serves its names…
    let ca = certs.ca_dir.join("ca.crt");
    let local = format!("https://localhost:{}/v2/", setup.https_port);
    wait_for("the static certificate", Duration::from_secs(30), || {
        (curl(&["--cacert", ca.to_str().unwrap(), &local]).status == 200).then_some(())
    });
    // …the ACME name gets the placeholder, and the failed order is logged and counted.
    let subject = served_subject(setup.https_port, NAME);
    assert!(
        subject.contains("registry-edge ACME placeholder"),
        "{subject}"
    );
    wait_for("a failed order", Duration::from_secs(30), || {
        edge.log_text().contains("order failed").then_some(())
    });
    let m = admin_metrics(admin_port);
    assert!(
        m.contains("registry_edge_acme_orders_total{result=\"failed\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("registry_edge_acme_consecutive_failures 1"),
        "{m}"
    );

    // The CA comes up: the same process's retry gets the certificate.
    pebble.run();
    let root = pebble.issuer_root(&dir.path().join("pebble-root.pem"));
    wait_for_issued(&setup, &root, None, (&edge, &pebble));
    // The certificate is put in force before the order is counted: poll the counters.
    wait_for("the order counted as ok", Duration::from_secs(10), || {
        let m = admin_metrics(admin_port);
        (m.contains("registry_edge_acme_orders_total{result=\"ok\"} 1")
            && m.contains("registry_edge_acme_consecutive_failures 0"))
        .then_some(())
    });
    // The static certificate still serves its own names.
    assert_eq!(
        curl(&["--cacert", ca.to_str().unwrap(), &local]).status,
        200
    );
}
