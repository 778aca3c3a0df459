//! Let's Encrypt's RFC 8555 test CA (Debian's `pebble`) with its mock DNS server
//! (`pebble-challtestsrv`, answering every name with 127.0.0.1), on loopback ports.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};

use super::{curl, free_port, Proc};

pub struct Pebble {
    /// The ACME directory URL.
    pub directory: String,
    /// The CA that signed pebble's own HTTPS certificate: `tls.acme.ca_roots`.
    pub ca_roots: PathBuf,
    management: String,
    dns: String,
    config: PathBuf,
    log: PathBuf,
    procs: Vec<Proc>,
}

pub struct PebbleOptions {
    /// Where the CA's validation connects: the edge's plain-HTTP port (http-01)…
    pub http_port: u16,
    /// …and its TLS port (tls-alpn-01).
    pub tls_port: u16,
    /// Lifetime of issued certificates; pebble's default is five years.
    pub validity_seconds: Option<u64>,
}

impl Pebble {
    /// Starts pebble on fresh ports; if one of them was taken meanwhile (ports from
    /// `free_port` can be handed to a parallel test), tries again on others.
    pub fn start(dir: &Path, options: &PebbleOptions) -> Pebble {
        let mut last = String::new();
        for _ in 0..3 {
            let mut pebble = Self::prepare(dir, options);
            match pebble.try_run() {
                Ok(()) => return pebble,
                Err(log) => last = log,
            }
        }
        panic!("pebble did not start three times; last log:\n{last}");
    }

    /// Writes the configuration and picks the ports without starting anything, so an
    /// edge can be pointed at a CA that is not there yet.
    pub fn prepare(dir: &Path, options: &PebbleOptions) -> Pebble {
        let dir = dir.join(format!("pebble-{}", free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca_roots, cert, key) = https_certificate(&dir);
        let listen = format!("127.0.0.1:{}", free_port());
        let management = format!("127.0.0.1:{}", free_port());
        let dns = format!("127.0.0.1:{}", free_port());
        let mut config = serde_json::json!({
            "listenAddress": listen,
            "managementListenAddress": management,
            "certificate": cert,
            "privateKey": key,
            "httpPort": options.http_port,
            "tlsPort": options.tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        });
        if let Some(seconds) = options.validity_seconds {
            config["certificateValidityPeriod"] = seconds.into();
        }
        let config_path = dir.join("pebble.json");
        std::fs::write(
            &config_path,
            serde_json::json!({ "pebble": config }).to_string(),
        )
        .unwrap();
        Pebble {
            directory: format!("https://{listen}/dir"),
            ca_roots,
            management,
            dns,
            config: config_path,
            log: dir.join("pebble.log"),
            procs: Vec::new(),
        }
    }

    /// Starts the mock DNS server and pebble, and waits for the directory to answer.
    pub fn run(&mut self) {
        if let Err(log) = self.try_run() {
            panic!("pebble did not start:\n{log}");
        }
    }

    /// Starts both servers; `Err(pebble's log)` when the directory never answers.
    fn try_run(&mut self) -> Result<(), String> {
        let dns = self.dns.clone();
        let dns_proc = Proc::spawn(
            Command::new("pebble-challtestsrv")
                .args([
                    "-dns01",
                    &dns,
                    "-http01",
                    "",
                    "-https01",
                    "",
                    "-tlsalpn01",
                    "",
                ])
                .args(["-management", &format!("127.0.0.1:{}", free_port())])
                .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let out = std::fs::File::create(&self.log).unwrap();
        let pebble = Proc::spawn(
            Command::new("pebble")
                .arg("-config")
                .arg(&self.config)
                .args(["-dnsserver", &dns])
                .env("PEBBLE_VA_NOSLEEP", "1")
                // Pebble refuses 5 % of good nonces by default to test clients' retries;
                // the edge's retries are instant-acme's business, not these tests'.
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out),
        );
        self.procs = vec![pebble, dns_proc];
        let ca = self.ca_roots.to_str().unwrap().to_string();
        let ready = || curl(&["--cacert", &ca, &self.directory]).status == 200;
        if let Err(why) = self.procs[0].wait_started(Duration::from_secs(30), ready) {
            self.procs.clear();
            return Err(format!("{why}\n{}", self.log_text()));
        }
        Ok(())
    }

    /// Stops pebble and its DNS server.
    pub fn stop(&mut self) {
        self.procs.clear();
    }

    /// Writes the root that signs issued certificates (new each time pebble starts).
    pub fn issuer_root(&self, path: &Path) -> PathBuf {
        let ca = self.ca_roots.to_str().unwrap();
        let url = format!("https://{}/roots/0", self.management);
        let got = curl(&["--cacert", ca, &url]);
        assert_eq!(got.status, 200, "pebble root");
        std::fs::write(path, &got.body).unwrap();
        path.to_path_buf()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Orders pebble has created.
    pub fn orders(&self) -> usize {
        self.log_text().matches("Added order").count()
    }

    /// Certificates pebble has issued.
    pub fn issued(&self) -> usize {
        self.log_text().matches("Issued certificate serial").count()
    }
}

/// A CA and a certificate for 127.0.0.1 / localhost signed by it: (ca, cert, key) paths.
fn https_certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "pebble test listener CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);

    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = leaf.signed_by(&key, &issuer).unwrap();

    let paths = (
        dir.join("listener-ca.pem"),
        dir.join("listener.pem"),
        dir.join("listener.key"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}
