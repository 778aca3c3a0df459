//! What `registry-edge check` accepts and refuses, one table row per rule, run in-process.
//!
//! A row is a config file's name, its text and what `check` must say: valid, or refused with
//! a message naming the file and the offending key. Rows go through the library calls the
//! `check` command makes ([`check`]); every row runs, and a table fails once, listing every
//! row that did not hold. `tests/cli.rs` keeps a few runs of the binary itself: exit codes,
//! what reaches stdout and stderr, and that the Redis password is never printed.

mod common;

use common::config_cases::{assert_cases, base, fixtures, good, refused, valid, REDIS_PASSWORD};
use registry_edge::load::load_all;

#[test]
fn file_shape_yaml_syntax_and_unknown_keys() {
    let dir = fixtures();
    assert_cases(
        dir.path(),
        vec![
            refused("yaml.yaml", "server: [", &[]),
            refused(
                "unknown.yaml",
                good().replace("  read_timeout", "  raed_timeout"),
                &["unknown field `raed_timeout`"],
            ),
            refused(
                "unknown-section.yaml",
                format!("{}nginx: true\n", good()),
                &["unknown field `nginx`"],
            ),
        ],
    );
}

#[test]
fn a_config_file_that_cannot_be_read_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let message = load_all(&dir.path().join("absent.yaml"))
        .map(drop)
        .expect_err("a missing file is refused")
        .to_string();
    assert!(
        message.contains("absent.yaml") && message.contains("cannot read"),
        "{message}"
    );
}

#[test]
fn tls_certificates_must_exist_match_and_be_keys() {
    let dir = fixtures();
    assert_cases(
        dir.path(),
        vec![
            // Relative paths resolve against the config file's folder.
            valid("ok.yaml", good()),
            refused(
                "missing-cert.yaml",
                base("certs/nope.crt", "certs/tls.key"),
                &["tls.certificates[0].cert", "nope.crt"],
            ),
            refused(
                "mismatch.yaml",
                base("certs/tls.crt", "other/tls.key"),
                &["tls.certificates[0].key", "does not match"],
            ),
            refused(
                "key-is-cert.yaml",
                base("certs/tls.crt", "certs/tls.crt"),
                &["tls.certificates[0].key", "private key"],
            ),
        ],
    );
}

#[test]
fn server_listeners_and_timeouts() {
    let dir = fixtures();
    assert_cases(
        dir.path(),
        vec![
            refused(
                "address.yaml",
                good().replace("127.0.0.1:8080", "localhost"),
                &["server.http_listen[0]", "IP:port"],
            ),
            refused(
                "header-timeout.yaml",
                good().replace("  http_listen", "  header_timeout: 0s\n  http_listen"),
                &["server.header_timeout", "at least 1s"],
            ),
            refused(
                "idle-timeout.yaml",
                good().replace("  http_listen", "  idle_timeout: soon\n  http_listen"),
                &["server.idle_timeout", "invalid duration"],
            ),
            refused(
                "admin.yaml",
                format!("{}admin:\n  listen: \"127.0.0.1:8443\"\n", good()),
                &["admin.listen", "shares its port"],
            ),
            refused(
                "admin-not-loopback.yaml",
                format!("{}admin:\n  listen: \"0.0.0.0:9091\"\n", good()),
                &[
                    "admin.listen",
                    "not a loopback address",
                    "admin.public: true",
                ],
            ),
            valid(
                "admin-public.yaml",
                format!(
                    "{}admin:\n  listen: \"0.0.0.0:9091\"\n  public: true\n",
                    good()
                ),
            ),
            valid(
                "admin-loopback-v6.yaml",
                format!("{}admin:\n  listen: \"[::1]:9091\"\n", good()),
            ),
        ],
    );
}

#[test]
fn upstream_nodes_balance_and_timeouts() {
    let dir = fixtures();
    assert_cases(
        dir.path(),
        vec![
            refused(
                "duration.yaml",
                good().replace("900s", "nine hundred"),
                &["upstream.read_timeout", "invalid duration"],
            ),
            refused(
                "node.yaml",
                good().replace("127.0.0.1:5000", "nodeport"),
                &["upstream.nodes[0]", "port"],
            ),
            refused(
                "no-nodes.yaml",
                good().replace("[\"127.0.0.1:5000\"]", "[]"),
                &["upstream.nodes", "at least one"],
            ),
            refused(
                "balance.yaml",
                format!("{}  balance: random\n", good()),
                &["upstream.balance", "random"],
            ),
        ],
    );
}

fn acme(http_listen: &str, acme_extra: &str) -> String {
    format!(
        "server:\n  https_listen: [\"127.0.0.1:8443\"]\n  http_listen: [{http_listen}]\n\
         tls:\n  acme:\n    directory: https://acme.test/dir\n    contact: [\"mailto:ops@example.com\"]\n    domains: [Registry.Example.com]\n    state_dir: acme\n{acme_extra}\
         upstream:\n  nodes: [\"127.0.0.1:5000\"]\n"
    )
}

/// ACME alone is enough for the TLS listener; `check` does not contact the CA.
#[test]
fn tls_acme() {
    let dir = fixtures();
    let with_http = |extra: &str| acme("\"127.0.0.1:8080\"", extra);
    assert_cases(
        dir.path(),
        vec![
            valid("acme-only.yaml", with_http("")),
            valid(
                "acme-alpn.yaml",
                acme("", "    challenge: tls-alpn-01\n    renew_before: 20d\n"),
            ),
            valid(
                "acme-roots.yaml",
                with_http("    ca_roots: certs/tls.crt\n"),
            ),
            refused(
                "acme-http01-no-listener.yaml",
                acme("", ""),
                &["tls.acme.challenge", "http_listen"],
            ),
            refused(
                "acme-wildcard.yaml",
                with_http("").replace("[Registry.Example.com]", "[\"*.example.com\"]"),
                &["tls.acme.domains[0]", "dns-01"],
            ),
            refused(
                "acme-plain-http.yaml",
                with_http("").replace("https://acme.test", "http://acme.test"),
                &["tls.acme.directory", "https://"],
            ),
            refused(
                "acme-contact.yaml",
                with_http("").replace("mailto:ops@example.com", "ops@example.com"),
                &["tls.acme.contact[0]", "mailto:"],
            ),
            refused(
                "acme-challenge.yaml",
                with_http("    challenge: dns-01\n"),
                &["tls.acme.challenge", "dns-01"],
            ),
            refused(
                "acme-renew.yaml",
                with_http("    renew_before: a month\n"),
                &["tls.acme.renew_before", "invalid duration"],
            ),
            refused(
                "acme-roots-missing.yaml",
                with_http("    ca_roots: certs/none.pem\n"),
                &["tls.acme.ca_roots", "none.pem"],
            ),
            refused(
                "acme-no-domains.yaml",
                with_http("").replace("[Registry.Example.com]", "[]"),
                &["tls.acme.domains", "at least one"],
            ),
        ],
    );
}

/// A `shared_state.redis` block after [`good`]; the URLs carry [`REDIS_PASSWORD`].
/// Closed sets (`log.format`, `rate_limits.*.key`, `upstream.balance`, …) are enums in the
/// file shapes: a value outside the set names the key, the value and every choice.
#[test]
fn closed_sets_name_the_key_the_value_and_the_choices() {
    let dir = fixtures();
    assert_cases(
        dir.path(),
        vec![
            valid(
                "sets-ok.yaml",
                format!(
                    "{}log: {{ format: json }}\nrate_limits:\n  push: {{ per_minute: 5, key: client_ip }}\n  \
                     upload_bytes: {{ per_second: 1024, key: account }}\n",
                    good()
                ),
            ),
            valid(
                "pull-ok.yaml",
                format!(
                    "{}rate_limits:\n  pull:\n    anonymous: {{ per_hour: 100, burst: 100 }}\n    \
                     authenticated: {{ per_hour: 1000 }}\n    exempt_accounts: [ci-deploy]\n",
                    good()
                ),
            ),
            refused(
                "pull-zero.yaml",
                format!("{}rate_limits:\n  pull:\n    anonymous: {{ per_hour: 0 }}\n", good()),
                &["rate_limits.pull.anonymous.per_hour", "at least 1"],
            ),
            refused(
                "pull-burst.yaml",
                format!("{}rate_limits:\n  pull:\n    authenticated: {{ per_hour: 5, burst: 0 }}\n", good()),
                &["rate_limits.pull.authenticated.burst", "at least 1"],
            ),
            refused(
                "pull-year.yaml",
                format!("{}rate_limits:\n  pull:\n    anonymous: {{ per_hour: 1, burst: 9000 }}\n", good()),
                &["rate_limits.pull.anonymous.burst", "year"],
            ),
            refused(
                "pull-unknown.yaml",
                format!("{}rate_limits:\n  pull:\n    anonymous: {{ per_minute: 5 }}\n", good()),
                &["rate_limits.pull.anonymous", "per_minute"],
            ),
            refused(
                "log-format.yaml",
                format!("{}log: {{ format: xml }}\n", good()),
                &["log.format", "xml", "text", "json"],
            ),
            refused(
                "push-key.yaml",
                format!("{}rate_limits:\n  push: {{ per_minute: 5, key: user }}\n", good()),
                &["rate_limits.push.key", "user", "account", "client_ip"],
            ),
            refused(
                "upload-key.yaml",
                format!(
                    "{}rate_limits:\n  upload_bytes: {{ per_second: 5, key: host }}\n",
                    good()
                ),
                &["rate_limits.upload_bytes.key", "host", "account", "client_ip"],
            ),
            refused(
                "balance-choices.yaml",
                format!("{}  balance: random\n", good()),
                &["upstream.balance", "repository_hash", "round_robin"],
            ),
        ],
    );
}

fn redis(url: &str, extra: &str) -> String {
    format!(
        "{}shared_state:\n  redis:\n    url: \"{url}\"\n{extra}",
        good()
    )
}

#[test]
fn shared_state_redis() {
    let dir = fixtures();
    let url = format!("redis://:{REDIS_PASSWORD}@127.0.0.1:6379/0");
    assert_cases(
        dir.path(),
        vec![
            valid(
                "shared-ok.yaml",
                redis(&url, "    timeout: 20ms\n    on_unavailable: deny\n"),
            ),
            refused(
                "shared-url.yaml",
                redis(&format!("http://:{REDIS_PASSWORD}@127.0.0.1:6379"), ""),
                &["shared_state.redis.url"],
            ),
            refused(
                "shared-mode.yaml",
                redis(&url, "    on_unavailable: maybe\n"),
                &["shared_state.redis.on_unavailable"],
            ),
            refused(
                "shared-timeout.yaml",
                redis(&url, "    timeout: 0s\n"),
                &["shared_state.redis.timeout"],
            ),
        ],
    );
}

/// An `auth:` block after [`good`] signing with `signing_key`, users from `htpasswd`.
fn auth(signing_key: &str, htpasswd: &str) -> String {
    format!(
        "{}auth:\n  token:\n    service: container_registry\n    issuer: edge\n    \
         signing_key: {signing_key}\n    certificate: certs/registry-auth.crt\n  \
         users:\n    htpasswd: {htpasswd}\n  acl: []\n",
        good()
    )
}

#[test]
fn auth_signing_key_must_match_its_certificate() {
    let dir = fixtures();
    std::fs::write(dir.path().join("htpasswd"), "").unwrap();
    assert_cases(
        dir.path(),
        vec![
            valid("auth.yaml", auth("certs/registry-auth.key", "htpasswd")),
            refused(
                "auth-bad.yaml",
                auth("certs/tls.key", "htpasswd"),
                &["auth.token.signing_key", "does not match"],
            ),
            // A key that cannot be read is named as the key, not as the certificate.
            refused(
                "auth-no-key.yaml",
                auth("certs/absent.key", "htpasswd"),
                &["auth.token.signing_key", "absent.key"],
            ),
        ],
    );
}

/// An htpasswd entry whose bcrypt cost is out of range or not a number is refused, naming
/// the file and line, and never panics.
#[test]
fn auth_htpasswd_entries_bcrypt_cannot_verify() {
    let dir = fixtures();
    let hash = bcrypt::hash("pw", 4).unwrap();
    // One htpasswd file per row: line 3 holds the entry with the cost replaced.
    for cost in ["03", "32", "4x"] {
        let entry = format!("{}{cost}{}", &hash[..4], &hash[6..]);
        std::fs::write(
            dir.path().join(format!("htpasswd-{cost}")),
            format!("# users\nok:{hash}\nbad:{entry}\n"),
        )
        .unwrap();
    }
    assert_cases(
        dir.path(),
        vec![
            refused(
                "cost-03.yaml",
                auth("certs/registry-auth.key", "htpasswd-03"),
                &["htpasswd-03:3", "cost 3"],
            ),
            refused(
                "cost-32.yaml",
                auth("certs/registry-auth.key", "htpasswd-32"),
                &["htpasswd-32:3", "cost 32"],
            ),
            refused(
                "cost-4x.yaml",
                auth("certs/registry-auth.key", "htpasswd-4x"),
                &["htpasswd-4x:3", "not a valid bcrypt hash"],
            ),
        ],
    );
}

/// An `auth:` block after [`good`] with only `trusted_issuers` (verify-only mode); `entry`
/// is one list item's fields, `extra` more of the `auth:` block.
fn verify_only(entry: &str, extra: &str) -> String {
    format!(
        "{}auth:\n  trusted_issuers:\n    - {{ {entry} }}\n{extra}",
        good()
    )
}

const GITLAB: &str = "issuer: gitlab-issuer, service: container_registry, \
                      certificates: certs/registry-auth.crt, realm: \"https://gitlab.test/jwt/auth\"";

#[test]
fn trusted_issuers_and_verify_only_mode() {
    let dir = fixtures();
    std::fs::write(dir.path().join("htpasswd"), "").unwrap();
    std::fs::write(dir.path().join("not-a-cert.pem"), "hello\n").unwrap();
    // A self-signed certificate for an RSA key ring cannot verify with.
    common::openssl_cert(dir.path(), "rsa-1024", &["genrsa", "1024"]);
    let with_token = |trusted: &str| {
        auth("certs/registry-auth.key", "htpasswd").replace("issuer: edge", "issuer: gitlab-issuer")
            + &format!("  trusted_issuers:\n    - {{ {trusted} }}\n")
    };
    assert_cases(
        dir.path(),
        vec![
            valid("verify-only.yaml", verify_only(GITLAB, "")),
            valid("both.yaml", with_token(GITLAB)),
            refused(
                "nothing.yaml",
                format!("{}auth:\n  acl: []\n", good()),
                &["auth.token", "trusted_issuers"],
            ),
            refused(
                "users-without-token.yaml",
                verify_only(GITLAB, "  users: { htpasswd: htpasswd }\n"),
                &["auth.users", "needs auth.token"],
            ),
            refused(
                "acl-without-token.yaml",
                verify_only(
                    GITLAB,
                    "  acl:\n    - { account: \"*\", name: \"**\", actions: [pull] }\n",
                ),
                &["auth.acl", "needs auth.token"],
            ),
            refused(
                "realm.yaml",
                verify_only(
                    &GITLAB.replace("https://gitlab.test/jwt/auth", "/jwt/auth"),
                    "",
                ),
                &["auth.trusted_issuers[0].realm", "absolute"],
            ),
            refused(
                "issuer-differs.yaml",
                with_token(&GITLAB.replace("gitlab-issuer", "someone")),
                &[
                    "auth.trusted_issuers[0].issuer",
                    "someone",
                    "gitlab-issuer",
                    "registry",
                ],
            ),
            refused(
                "service-differs.yaml",
                verify_only(
                    GITLAB,
                    &format!(
                        "    - {{ {} }}\n",
                        GITLAB.replace("container_registry", "other")
                    ),
                ),
                &["auth.trusted_issuers[1].service", "other"],
            ),
            refused(
                "bundle-missing.yaml",
                verify_only(&GITLAB.replace("certs/registry-auth.crt", "absent.crt"), ""),
                &["auth.trusted_issuers[0].certificates", "absent.crt"],
            ),
            refused(
                "realm-crlf.yaml",
                verify_only(
                    &GITLAB.replace("/jwt/auth\"", "/jwt/auth\\r\\nX-Injected: 1\""),
                    "",
                ),
                &["auth.trusted_issuers[0].realm"],
            ),
            refused(
                "issuer-newline.yaml",
                verify_only(&GITLAB.replace("gitlab-issuer", "\"gitlab\\nissuer\""), ""),
                &["auth.trusted_issuers[0].issuer", "control characters"],
            ),
            refused(
                "bundle-rsa-1024.yaml",
                verify_only(
                    &GITLAB.replace("certs/registry-auth.crt", "rsa-1024.crt"),
                    "",
                ),
                &["auth.trusted_issuers[0].certificates", "1024 bits"],
            ),
            refused(
                "bundle-garbage.yaml",
                verify_only(
                    &GITLAB.replace("certs/registry-auth.crt", "not-a-cert.pem"),
                    "",
                ),
                &["auth.trusted_issuers[0].certificates", "no CERTIFICATE"],
            ),
        ],
    );
}
