//! LDAP against a real OpenLDAP server (`common::ldap::Slapd`, Debian's `slapd`): the
//! harness itself, checked with the ldap-utils CLI (binds, the directory's ACL, StartTLS
//! and LDAPS with the harness's CA, user administration, an outage); then the edge's
//! `auth.users.ldap` in front of the real registry — logins, groups in the ACL, filter
//! injection, StartTLS and LDAPS verified against the CA, slapd stopped → 503 then
//! recovery, refresh tokens of deleted users, and `check` naming a missing password file.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use std::time::Duration;

use common::auth::{
    auth_yaml_with, error_code, granted, login, refresh, refresh_token_for, registry_auth_block,
};
use common::ldap::Slapd;
use common::{
    make_certs, reload, skopeo_push, upstream_yaml, wait_for, Certs, Checks, Edge, Registry,
};

/// Runs `tool -x -H url args…`; with `ca`, TLS trusts only that CA.
fn ldap(tool: &str, url: &str, args: &[&str], ca: Option<&Path>) -> Output {
    let mut cmd = Command::new(tool);
    cmd.args(["-x", "-H", url]).args(args);
    match ca {
        Some(ca) => cmd
            .env("LDAPTLS_CACERT", ca)
            .env("LDAPTLS_REQCERT", "demand"),
        // Nothing from ldap.conf or ~/.ldaprc.
        None => cmd.env("LDAPNOINIT", "1"),
    };
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"))
}

/// `ldapwhoami` as `dn`: whether the bind succeeded, and what the tool said.
fn whoami(
    url: &str,
    dn: &str,
    password: &str,
    extra: &[&str],
    ca: Option<&Path>,
) -> (bool, String) {
    let mut args = vec!["-D", dn, "-w", password];
    args.extend_from_slice(extra);
    let out = ldap("ldapwhoami", url, &args, ca);
    let said = String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).to_string();
    (out.status.success(), said)
}

/// The `cn`s of the groups the service account finds with `filter` under the group base.
fn group_names(slapd: &Slapd, filter: &str) -> Vec<String> {
    let out = ldap(
        "ldapsearch",
        &slapd.url(),
        &[
            "-LLL",
            "-D",
            slapd.bind_dn(),
            "-w",
            slapd.bind_password(),
            "-b",
            slapd.group_base(),
            filter,
            "cn",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("cn: ").map(str::to_string))
        .collect();
    names.sort();
    names
}

#[test]
fn slapd_harness_serves_binds_and_tls() {
    if !Slapd::available() {
        eprintln!(
            "skipping: slapd or ldap-utils is not installed (apt-get install slapd ldap-utils)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut slapd = Slapd::start(dir.path());
    let url = slapd.url();
    let alice = slapd.user_dn("alice");
    let mut checks = Checks::new();

    checks.run("users bind with their password, not another", || {
        let (ok, said) = whoami(&url, &alice, "alice-pw", &[], None);
        assert!(ok, "alice's bind: {said}");
        assert!(said.contains(&format!("dn:{alice}")), "{said}");
        let (ok, said) = whoami(&url, &alice, "wrong", &[], None);
        assert!(!ok, "a wrong password bound: {said}");
        assert!(said.contains("Invalid credentials"), "{said}");
        let (ok, said) = whoami(&url, slapd.bind_dn(), slapd.bind_password(), &[], None);
        assert!(ok, "the service account's bind: {said}");
    });

    checks.run("the service account finds alice's groups", || {
        let groups = group_names(&slapd, &format!("(member={alice})"));
        assert_eq!(groups, ["developers", "platform"]);
        let bob = slapd.user_dn("bob");
        assert_eq!(
            group_names(&slapd, &format!("(member={bob})")),
            ["developers"]
        );
    });

    checks.run("the service account reads people but no passwords", || {
        let out = ldap(
            "ldapsearch",
            &url,
            &[
                "-LLL",
                "-D",
                slapd.bind_dn(),
                "-w",
                slapd.bind_password(),
                "-b",
                slapd.user_base(),
                "(uid=carol)",
            ],
            None,
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            out.status.success() && text.contains("uid: carol"),
            "{text}"
        );
        assert!(!text.contains("userPassword"), "{text}");
    });

    checks.run("anonymous finds nothing", || {
        let out = ldap(
            "ldapsearch",
            &url,
            &["-LLL", "-b", slapd.user_base(), "(uid=*)"],
            None,
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            !text.contains("dn:"),
            "anonymous search found entries: {text}"
        );
    });

    checks.run("StartTLS and ldaps with the harness's CA", || {
        let (ok, said) = whoami(&url, &alice, "alice-pw", &["-ZZ"], Some(slapd.ca()));
        assert!(ok, "StartTLS: {said}");
        let (ok, said) = whoami(
            &slapd.ldaps_url(),
            &alice,
            "alice-pw",
            &[],
            Some(slapd.ca()),
        );
        assert!(ok, "ldaps: {said}");
        // …and only with it: the system's CAs do not know the server.
        let system = Path::new("/etc/ssl/certs/ca-certificates.crt");
        if system.exists() {
            let (ok, said) = whoami(&slapd.ldaps_url(), &alice, "alice-pw", &[], Some(system));
            assert!(!ok, "ldaps trusted without the test CA: {said}");
        }
    });

    checks.run("add_user, set_password, delete_user", || {
        slapd.add_user("dave", "dave-pw", &["platform"]);
        let dave = slapd.user_dn("dave");
        assert!(whoami(&url, &dave, "dave-pw", &[], None).0);
        assert_eq!(
            group_names(&slapd, &format!("(member={dave})")),
            ["platform"]
        );
        slapd.set_password("dave", "dave-pw-2");
        assert!(!whoami(&url, &dave, "dave-pw", &[], None).0);
        assert!(whoami(&url, &dave, "dave-pw-2", &[], None).0);
        slapd.delete_user("dave");
        assert!(!whoami(&url, &dave, "dave-pw-2", &[], None).0);
        assert!(group_names(&slapd, &format!("(member={dave})")).is_empty());
        assert_eq!(
            group_names(&slapd, &format!("(member={alice})")),
            ["developers", "platform"]
        );
        // Once dave is gone alice is platform's only member: the group outlives her.
        slapd.delete_user("alice");
        assert_eq!(group_names(&slapd, "(cn=platform)"), ["platform"]);
        slapd.add_user("alice", "alice-pw", &["platform", "developers"]);
        assert_eq!(
            group_names(&slapd, &format!("(member={alice})")),
            ["developers", "platform"]
        );
    });

    checks.run("down after stop(), back after start_again()", || {
        slapd.stop();
        let (ok, said) = whoami(&url, &alice, "alice-pw", &[], None);
        assert!(!ok, "bound while stopped: {said}");
        assert!(said.contains("Can't contact LDAP server"), "{said}");
        slapd.start_again();
        let (ok, said) = whoami(&url, &alice, "alice-pw", &[], None);
        assert!(ok, "after the restart: {said}");
        let (ok, said) = whoami(
            &slapd.ldaps_url(),
            &alice,
            "alice-pw",
            &[],
            Some(slapd.ca()),
        );
        assert!(ok, "ldaps after the restart: {said}");
    });

    checks.finish();
}

/// The edge's `users:` body for `slapd` over `url` (StartTLS when `start_tls`), trusting
/// its CA when `ca`, plus an htpasswd file holding `admin` only.
fn ldap_users(dir: &Path, slapd: &Slapd, url: &str, start_tls: bool, ca: bool) -> String {
    let password_file = dir.join("ldap-bind.secret");
    std::fs::write(&password_file, format!("{}\n", slapd.bind_password())).unwrap();
    let htpasswd = dir.join("htpasswd-admin");
    let line = registry_edge::registry_config::htpasswd_line("admin", "pw-admin", 4).unwrap();
    std::fs::write(&htpasswd, line + "\n").unwrap();
    let ca = if ca {
        format!("      ca: {}\n", slapd.ca().display())
    } else {
        String::new()
    };
    format!(
        "    htpasswd: {htpasswd}\n    cache_ttl: 5m\n    ldap:\n      url: {url}\n      start_tls: {start_tls}\n{ca}\
         \x20     bind_dn: {bind_dn}\n      bind_password_file: {password}\n      user_base: {users}\n\
         \x20     user_filter: \"(&(objectClass=inetOrgPerson)(uid={{user}}))\"\n      group_base: {groups}\n\
         \x20     group_filter: \"(&(objectClass=groupOfNames)(member={{dn}}))\"\n      group_attribute: cn\n      timeout: 2s\n",
        htpasswd = htpasswd.display(),
        bind_dn = slapd.bind_dn(),
        password = password_file.display(),
        users = slapd.user_base(),
        groups = slapd.group_base(),
    )
}

const ACL: [&str; 2] = [
    r#"{ group: platform, name: "platform/**", actions: ["*"] }"#,
    r#"{ account: "*", name: "${account}/**", actions: [pull, push] }"#,
];

fn edge_config(dir: &Path, users: &str) -> String {
    auth_yaml_with(dir, users, &ACL)
}

#[test]
fn edge_logs_ldap_users_in_with_their_groups_and_survives_an_outage() {
    if !Slapd::available() {
        eprintln!(
            "skipped: slapd and ldap-utils are not installed (apt-get install slapd ldap-utils)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut slapd = Slapd::start(dir.path());
    let certs = make_certs(dir.path());
    let registry = Registry::start_with(dir.path(), "node", &registry_auth_block(dir.path()));
    let pid_file = dir.path().join("edge.pid");
    let users = ldap_users(dir.path(), &slapd, &slapd.url(), true, true);
    let edge = Edge::start_with(
        dir.path(),
        &certs,
        &format!("  shutdown_grace: 1s\n  pid_file: {}\n", pid_file.display()),
        &upstream_yaml(&[registry.addr()], "repository_hash"),
        &edge_config(dir.path(), &users),
    );
    let ca = certs.ca_dir.join("ca.crt");
    let ca = ca.to_str().unwrap();
    let platform = "repository:platform/app:pull,push";
    let pull_push = || vec!["pull".to_string(), "push".to_string()];

    let mut checks = Checks::new();
    checks.run(
        "an LDAP user in group platform gets platform/** (StartTLS)",
        || {
            let answer = login(&edge, ca, "alice", "alice-pw", platform);
            assert_eq!(answer.status, 200, "{}", answer.text());
            assert_eq!(
                granted(&answer),
                [("repository:platform/app".to_string(), pull_push())]
            );
        },
    );
    checks.run(
        "a user outside the group gets only the account rule",
        || {
            let answer = login(&edge, ca, "bob", "bob-pw", platform);
            assert_eq!(answer.status, 200, "{}", answer.text());
            assert!(granted(&answer).is_empty(), "{:?}", granted(&answer));
            let own = login(&edge, ca, "bob", "bob-pw", "repository:bob/app:pull,push");
            assert_eq!(
                granted(&own),
                [("repository:bob/app".to_string(), pull_push())]
            );
        },
    );
    checks.run(
        "the account is the directory's spelling of the name",
        || {
            let answer = login(
                &edge,
                ca,
                "ALICE",
                "alice-pw",
                "repository:alice/app:pull,push",
            );
            assert_eq!(answer.status, 200, "{}", answer.text());
            assert_eq!(
                granted(&answer),
                [("repository:alice/app".to_string(), pull_push())]
            );
        },
    );
    checks.run("htpasswd users still log in first", || {
        assert_eq!(login(&edge, ca, "admin", "pw-admin", platform).status, 200);
    });
    checks.run(
        "wrong passwords, unknown users, empty passwords and filter injection → 401",
        || {
            for (user, password) in [
                ("alice", "wrong"),
                ("nobody", "alice-pw"),
                ("alice", ""),
                ("*)(uid=*", "alice-pw"),
                ("*", "alice-pw"),
                ("alice)(|(uid=*", "alice-pw"),
            ] {
                let answer = login(&edge, ca, user, password, platform);
                assert_eq!(
                    answer.status,
                    401,
                    "{user:?}/{password:?}: {}",
                    answer.text()
                );
                assert_eq!(error_code(&answer), "UNAUTHORIZED", "{user:?}");
            }
        },
    );
    checks.run(
        "skopeo pushes to the group's repository with LDAP credentials",
        || {
            let layout = common::tiny_oci_layout(&dir.path().join("image"));
            let target = format!("docker://127.0.0.1:{}/platform/app:v1", edge.https_port);
            let certs_dir = certs.ca_dir.to_str().unwrap();
            let out = skopeo_push(certs_dir, Some("alice:alice-pw"), &layout, &target, &[]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let denied = skopeo_push(certs_dir, Some("bob:bob-pw"), &layout, &target, &[]);
            assert!(!denied.status.success(), "bob is not in platform");
        },
    );
    let refresh_token = checks.run("carol gets a refresh token", || {
        let token = refresh_token_for(&edge, ca, "carol", "carol-pw").expect("a refresh token");
        let answer = refresh(&edge, ca, &token, "repository:carol/app:pull");
        assert_eq!(answer.status, 200, "{}", answer.text());
        token
    });
    checks.run(
        "slapd stopped: new logins 503 UNAVAILABLE, never throttled; cached ones work",
        || {
            slapd.add_user("dave", "dave-pw", &[]);
            slapd.stop();
            // More than the default 10 failed logins per client IP: none of these count.
            for attempt in 0..12 {
                let answer = login(&edge, ca, "dave", "dave-pw", platform);
                assert_eq!(answer.status, 503, "attempt {attempt}: {}", answer.text());
                assert_eq!(error_code(&answer), "UNAVAILABLE");
            }
            let cached = login(&edge, ca, "alice", "alice-pw", platform);
            assert_eq!(cached.status, 200, "{}", cached.text());
            assert_eq!(
                granted(&cached),
                [("repository:platform/app".to_string(), pull_push())]
            );
            slapd.start_again();
            wait_for(
                "dave's login after slapd is back",
                Duration::from_secs(20),
                || (login(&edge, ca, "dave", "dave-pw", platform).status == 200).then_some(()),
            );
        },
    );
    if let Some(token) = refresh_token {
        checks.run(
            "a refresh token of a user deleted from LDAP is refused",
            || {
                slapd.delete_user("carol");
                let answer = refresh(&edge, ca, &token, "repository:carol/app:pull");
                assert_eq!(answer.status, 401, "{}", answer.text());
            },
        );
    }
    checks.run(
        "LDAPS: the directory's certificate is verified (reload applies it live)",
        || {
            slapd.add_user("erin", "erin-pw", &["platform"]);
            let without_ca = ldap_users(dir.path(), &slapd, &slapd.ldaps_url(), false, false);
            std::fs::write(
                &edge.config,
                edge_yaml(&edge, &certs, &registry, &pid_file, &without_ca),
            )
            .unwrap();
            reload(&pid_file);
            wait_for(
                "the untrusted LDAPS directory → 503",
                Duration::from_secs(20),
                || (login(&edge, ca, "erin", "erin-pw", platform).status == 503).then_some(()),
            );
            let with_ca = ldap_users(dir.path(), &slapd, &slapd.ldaps_url(), false, true);
            std::fs::write(
                &edge.config,
                edge_yaml(&edge, &certs, &registry, &pid_file, &with_ca),
            )
            .unwrap();
            reload(&pid_file);
            wait_for("erin's login over LDAPS", Duration::from_secs(20), || {
                let answer = login(&edge, ca, "erin", "erin-pw", platform);
                (answer.status == 200).then_some(answer)
            });
        },
    );
    checks.run("the bind password never reaches the log", || {
        assert!(!edge.log_text().contains(slapd.bind_password()));
        assert!(!edge.log_text().contains("alice-pw"));
    });
    checks.finish();
}

/// The whole edge config again, with another `users:` body (for a reload).
fn edge_yaml(
    edge: &Edge,
    certs: &Certs,
    registry: &Registry,
    pid_file: &Path,
    users: &str,
) -> String {
    let dir = edge.config.parent().unwrap();
    format!(
        "server:\n  https_listen: [\"127.0.0.1:{https}\"]\n  http_listen: [\"127.0.0.1:{http}\"]\n  threads: 2\n  shutdown_grace: 1s\n  pid_file: {pid}\n\
         tls:\n  certificates:\n    - cert: {crt}\n      key: {key}\n{upstream}\n{auth}\n",
        https = edge.https_port,
        http = edge.http_port,
        pid = pid_file.display(),
        crt = certs.tls_crt.display(),
        key = certs.tls_key.display(),
        upstream = upstream_yaml(&[registry.addr()], "repository_hash"),
        auth = edge_config(dir, users),
    )
}

#[test]
fn a_personal_access_token_follows_its_users_ldap_groups() {
    if !Slapd::available() {
        return common::skip(
            "a_personal_access_token_follows_its_users_ldap_groups",
            "slapd and ldap-utils are not installed (apt-get install slapd ldap-utils)",
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let slapd = Slapd::start(dir.path());
    let certs = make_certs(dir.path());
    let registry = Registry::start_with(dir.path(), "node", &registry_auth_block(dir.path()));
    let users = ldap_users(dir.path(), &slapd, &slapd.url(), true, true);
    let tokens = format!(
        "  access_tokens:\n    state_dir: {}\n",
        dir.path().join("tokens").display()
    );
    let edge = Edge::start(
        dir.path(),
        &certs,
        &upstream_yaml(&[registry.addr()], "repository_hash"),
        &format!("{}{tokens}", edge_config(dir.path(), &users)),
    );
    let ca = certs.ca_dir.join("ca.crt");
    let ca = ca.to_str().unwrap();
    slapd.add_user("dave", "dave-pw", &["platform", "developers"]);
    let secret = common::tokens::create(
        &edge.config,
        "dave-ci",
        &["--for-account", "dave", "--scope", "platform/**:pull,push"],
    );
    let scope = "repository:platform/app:pull,push";
    let answer = login(&edge, ca, "dave-ci", &secret, scope);
    assert_eq!(answer.status, 200, "{}", answer.text());
    let pull_push = vec!["pull".to_string(), "push".to_string()];
    assert_eq!(
        granted(&answer),
        [("repository:platform/app".to_string(), pull_push)]
    );
    slapd.leave_group("dave", "platform");
    let answer = login(&edge, ca, "dave-ci", &secret, scope);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(
        granted(&answer).is_empty(),
        "dave left platform: {:?}",
        granted(&answer)
    );
    slapd.delete_user("dave");
    assert_eq!(
        login(&edge, ca, "dave-ci", &secret, scope).status,
        401,
        "dave is gone"
    );
}

#[test]
fn check_names_a_missing_bind_password_file() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let users = "    ldap:\n      url: ldaps://ldap.example.com\n      bind_dn: cn=registry,dc=example,dc=com\n      \
                 bind_password_file: missing.secret\n      user_base: dc=example,dc=com\n      user_filter: \"(uid={user})\"\n";
    let config = dir.path().join("edge.yaml");
    let yaml = format!(
        "server:\n  https_listen: [\"127.0.0.1:0\"]\n  http_listen: []\ntls:\n  certificates:\n    - cert: certs/tls.crt\n      key: certs/tls.key\n\
         upstream:\n  nodes: [\"127.0.0.1:5000\"]\n{}",
        auth_yaml_with(dir.path(), users, &ACL)
    );
    std::fs::write(&config, yaml).unwrap();
    let out = Command::new(common::EDGE_BIN)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("auth.users.ldap.bind_password_file"),
        "{stderr}"
    );
    assert!(stderr.contains("missing.secret"), "{stderr}");
}
