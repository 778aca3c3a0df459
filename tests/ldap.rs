//! LDAP against a real OpenLDAP server (`common::ldap::Slapd`, Debian's `slapd`). For
//! now a smoke test of the harness itself, checked with the ldap-utils CLI: binds, the
//! ACL, StartTLS and LDAPS with the harness's CA, user administration, and an outage.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::ldap::Slapd;
use common::Checks;

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
