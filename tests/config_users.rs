//! What `check` says about `auth.users` backends (htpasswd, ldap, oidc, http) and ACL
//! selectors (`account`, `group`, `claims`), one table row per rule, in-process, without
//! contacting any server (`common::config_cases`).

mod common;

use common::config_cases::{assert_cases, fixtures, good, refused, valid};

/// An `auth:` block after [`good`] with a `users:` body (indented four spaces) and rules.
fn users(body: &str, acl: &str) -> String {
    format!(
        "{}auth:\n  token:\n    service: container_registry\n    issuer: edge\n    \
         signing_key: certs/registry-auth.key\n    certificate: certs/registry-auth.crt\n  \
         users:\n{body}  acl:\n{acl}",
        good()
    )
}

const LDAP: &str = "    ldap:\n      url: ldap://ldap.test\n      start_tls: true\n      ca: certs/tls.crt\n      \
                    bind_dn: cn=registry,dc=test\n      bind_password_file: bind.secret\n      \
                    user_base: ou=people,dc=test\n      user_filter: \"(&(objectClass=inetOrgPerson)(uid={user}))\"\n      \
                    group_base: ou=groups,dc=test\n      group_filter: \"(member={dn})\"\n";

const OIDC: &str = "    oidc:\n      - { issuer: \"https://ci.test\", audience: registry.test, username: ci, groups_claim: groups }\n";

const RULE: &str = "    - { account: \"*\", name: \"${account}/**\", actions: [pull] }\n";

#[test]
fn login_backends() {
    let dir = fixtures();
    std::fs::write(dir.path().join("bind.secret"), "pw\n").unwrap();
    std::fs::write(dir.path().join("empty.secret"), "\n").unwrap();
    std::fs::write(dir.path().join("two-lines.secret"), "pw\nmore\n").unwrap();
    std::fs::write(dir.path().join("htpasswd"), "").unwrap();
    let ldap = |from: &str, to: &str| users(&LDAP.replace(from, to), RULE);
    assert_cases(
        dir.path(),
        vec![
            valid("ldap.yaml", users(LDAP, RULE)),
            valid("oidc.yaml", users(OIDC, RULE)),
            valid("http.yaml", users("    http: { url: \"https://auth.test/login\", timeout: 3s }\n", RULE)),
            valid(
                "all.yaml",
                users(&format!("    htpasswd: htpasswd\n    cache_ttl: 5m\n{LDAP}{OIDC}    http: {{ url: \"http://127.0.0.1:9/x\" }}\n"), RULE),
            ),
            valid("ldaps.yaml", ldap("ldap://ldap.test\n      start_tls: true", "ldaps://ldap.test:636")),
            refused("no-backend.yaml", users("    cache_ttl: 5m\n", RULE), &["auth.users", "no backend"]),
            refused("ldap-scheme.yaml", ldap("ldap://ldap.test", "https://ldap.test"), &["auth.users.ldap.url"]),
            refused(
                "ldaps-starttls.yaml",
                ldap("ldap://ldap.test", "ldaps://ldap.test"),
                &["auth.users.ldap.start_tls", "ldaps"],
            ),
            refused("filter-no-user.yaml", ldap("uid={user}", "uid=alice"), &["auth.users.ldap.user_filter", "{user}"]),
            refused("filter-shape.yaml", ldap("\"(&(objectClass", "\"&(objectClass"), &["auth.users.ldap.user_filter", "RFC 4515"]),
            refused(
                "filter-unbalanced.yaml",
                ldap("(uid={user}))\"", "(uid={user})\""),
                &["auth.users.ldap.user_filter", "parentheses"],
            ),
            refused(
                "password-two-lines.yaml",
                ldap("bind.secret", "two-lines.secret"),
                &["auth.users.ldap.bind_password_file", "one line"],
            ),
            refused("group-filter.yaml", ldap("(member={dn})", "(member=x)"), &["auth.users.ldap.group_filter", "{dn}"]),
            refused(
                "password-missing.yaml",
                ldap("bind.secret", "missing.secret"),
                &["auth.users.ldap.bind_password_file", "missing.secret"],
            ),
            refused("password-empty.yaml", ldap("bind.secret", "empty.secret"), &["auth.users.ldap.bind_password_file", "empty"]),
            refused(
                "bind-dn-alone.yaml",
                ldap("      bind_password_file: bind.secret\n", ""),
                &["auth.users.ldap.bind_password_file", "go together"],
            ),
            refused("ldap-ca-missing.yaml", ldap("certs/tls.crt", "absent.crt"), &["auth.users.ldap.ca", "absent.crt"]),
            refused(
                "oidc-http.yaml",
                users(&OIDC.replace("https://ci.test", "http://ci.test"), RULE),
                &["auth.users.oidc[0].issuer", "https"],
            ),
            refused(
                "oidc-twice.yaml",
                users(&format!("{OIDC}{}", &OIDC["    oidc:\n".len()..].replace("username: ci", "username: ci2")), RULE),
                &["auth.users.oidc[1].issuer", "twice"],
            ),
            refused("oidc-audience.yaml", users(&OIDC.replace("registry.test", "\"\""), RULE), &["auth.users.oidc[0].audience"]),
            refused(
                "oidc-ca.yaml",
                users(&OIDC.replace("groups_claim: groups", "ca: absent.crt"), RULE),
                &["auth.users.oidc[0].ca", "absent.crt"],
            ),
            refused("http-url.yaml", users("    http: { url: \"/login\" }\n", RULE), &["auth.users.http.url"]),
            refused("http-timeout.yaml", users("    http: { url: \"https://a.test\", timeout: 0s }\n", RULE), &["auth.users.http.timeout"]),
        ],
    );
}

#[test]
fn acl_selectors() {
    let dir = fixtures();
    std::fs::write(dir.path().join("htpasswd"), "").unwrap();
    let rule = |text: &str| users("    htpasswd: htpasswd\n", &format!("    - {text}\n"));
    assert_cases(
        dir.path(),
        vec![
            valid("group.yaml", rule("{ group: platform, name: \"platform/**\", actions: [\"*\"] }")),
            valid(
                "claims.yaml",
                rule("{ claims: { repository: acme/app }, name: \"${claims.repository}/**\", actions: [pull, push] }"),
            ),
            valid("both.yaml", rule("{ account: \"ci-*\", group: ci, name: \"ci/*\", actions: [pull] }")),
            refused("no-selector.yaml", rule("{ name: \"**\", actions: [pull] }"), &["auth.acl[0]", "at least one selector"]),
            refused("empty-group.yaml", rule("{ group: \"\", name: \"**\", actions: [pull] }"), &["auth.acl[0].group"]),
            refused(
                "placeholder.yaml",
                rule("{ account: \"*\", name: \"${acount}/**\", actions: [pull] }"),
                &["auth.acl[0].name", "${acount}"],
            ),
            refused(
                "claims-placeholder.yaml",
                rule("{ account: \"*\", name: \"${claims.}/**\", actions: [pull] }"),
                &["auth.acl[0].name"],
            ),
            valid(
                "from.yaml",
                rule("{ account: \"\", name: \"public/**\", actions: [pull], from: [\"10.0.0.0/8\", \"fd00::/8\", 192.0.2.7] }"),
            ),
            valid("from-only.yaml", rule("{ from: [\"10.0.0.0/8\"], name: \"**\", actions: [pull] }")),
            refused(
                "from-prefix.yaml",
                rule("{ account: \"\", name: \"**\", actions: [pull], from: [\"10.0.0.0/40\"] }"),
                &["auth.acl[0].from", "10.0.0.0/40"],
            ),
            refused(
                "from-empty.yaml",
                rule("{ account: \"\", name: \"**\", actions: [pull], from: [] }"),
                &["auth.acl[0].from", "empty"],
            ),
            refused(
                "from-text.yaml",
                rule("{ account: \"\", name: \"**\", actions: [pull], from: [office] }"),
                &["auth.acl[0].from", "office"],
            ),
            refused("claims-not-string.yaml", rule("{ claims: { run: [1] }, name: \"**\", actions: [pull] }"), &["auth.acl"]),
        ],
    );
}
