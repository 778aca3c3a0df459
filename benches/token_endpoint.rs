//! Token endpoint throughput, in process: a correct login that hits the credential
//! cache (token signing + ACL only) against one that pays bcrypt every time
//! (`auth.users.cache_ttl: 0s`), at the cost `hash-password` uses by default (10),
//! an anonymous request for comparison, and an LDAP user with a warm cache (a real slapd,
//! as the tests start it; skipped when slapd is not installed) next to the htpasswd one, and
//! a robot access token (`auth.access_tokens`, its SQLite store read at every login).
//! Run: `cargo bench --bench token_endpoint`.

#[allow(unused_imports)]
#[path = "../tests/common/mod.rs"]
mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use registry_edge::auth::access_tokens::AccessTokens;
use registry_edge::auth::acl::Rule;
use registry_edge::auth::endpoint::{TokenReply, TokenRequest};
use registry_edge::auth::Auth;
use registry_edge::config::{AuthSettings, LdapSettings, UsersSettings};
use registry_edge::token_command as cli;

const BCRYPT_COST: u32 = 10;

fn auth(dir: &std::path::Path, cache_ttl: Duration) -> Auth {
    auth_with(dir, |htpasswd| {
        UsersSettings::htpasswd_only(htpasswd, cache_ttl)
    })
}

/// [`auth`] with access tokens on (`auth.access_tokens`, SQLite in `dir/tokens`).
fn auth_with_tokens(dir: &std::path::Path) -> Auth {
    let mut auth = auth(dir, Duration::from_secs(60));
    let tokens = AccessTokens::open_local(&dir.join("tokens")).unwrap();
    auth.access_tokens = Some(std::sync::Arc::new(tokens));
    auth
}

/// The realm over `slapd`'s directory (plain LDAP: the cached path never reaches it).
fn ldap_auth(dir: &std::path::Path, slapd: &common::ldap::Slapd) -> Auth {
    let secret = dir.join("bind.secret");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&secret, slapd.bind_password()).unwrap();
    auth_with(dir, |_| UsersSettings {
        htpasswd: None,
        cache_ttl: Duration::from_secs(300),
        ldap: Some(LdapSettings {
            url: slapd.url(),
            start_tls: false,
            ca: None,
            bind_dn: Some(slapd.bind_dn().into()),
            bind_password_file: Some(secret.clone()),
            user_base: slapd.user_base().into(),
            user_filter: "(&(objectClass=inetOrgPerson)(uid={user}))".into(),
            group_base: Some(slapd.group_base().into()),
            group_filter: "(&(objectClass=groupOfNames)(member={dn}))".into(),
            group_attribute: "cn".into(),
            timeout: Duration::from_secs(5),
        }),
        oidc: Vec::new(),
        http: None,
    })
}

fn auth_with(
    dir: &std::path::Path,
    users: impl FnOnce(std::path::PathBuf) -> UsersSettings,
) -> Auth {
    registry_edge::certgen::generate(&dir.join("certs"), &["bench".into()]).unwrap();
    let line =
        registry_edge::registry_config::htpasswd_line("alice", "pw-alice", BCRYPT_COST).unwrap();
    std::fs::write(dir.join("htpasswd"), line + "\n").unwrap();
    let rule = |account: &str, name: &str, actions: &[&str]| {
        Rule::new(account, "repository", name, actions)
    };
    Auth::load(&AuthSettings {
        realm_path: "/jwt/auth".into(),
        service: "container_registry".into(),
        issuer: "bench".into(),
        signing_key: dir.join("certs/registry-auth.key"),
        certificate: dir.join("certs/registry-auth.crt"),
        expiration: Duration::from_secs(300),
        refresh_expiration: Duration::from_secs(3600),
        users: users(dir.join("htpasswd")),
        acl: vec![
            rule("*", "${account}/**", &["pull", "push"]),
            rule("", "public/*", &["pull"]),
        ],
        failed_logins_per_ip: NonZeroU32::MAX,
        failed_logins_per_account: NonZeroU32::MAX,
        access_tokens: None,
    })
    .unwrap()
}

fn request(authorization: Option<&str>) -> TokenRequest<'_> {
    TokenRequest {
        post: false,
        params: vec![
            ("service".into(), "container_registry".into()),
            ("scope".into(), "repository:alice/app:pull,push".into()),
        ],
        authorization,
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cached = auth(&dir.path().join("cached"), Duration::from_secs(60));
    let uncached = auth(&dir.path().join("uncached"), Duration::ZERO);
    let basic = "Basic YWxpY2U6cHctYWxpY2U="; // alice:pw-alice
    let issue = |auth: &Auth, authorization: Option<&str>| {
        let reply =
            runtime.block_on(auth.handle_token_request(&request(authorization), SystemTime::now()));
        assert!(matches!(reply, TokenReply::Issued { .. }));
    };

    let mut group = c.benchmark_group("token_endpoint");
    group.throughput(Throughput::Elements(1));
    group.bench_function("anonymous", |b| b.iter(|| issue(&cached, None)));
    group.bench_function("login_cached", |b| b.iter(|| issue(&cached, Some(basic))));
    // A robot access token for alice/**: its login reads the token store every time.
    let new = cli::NewToken {
        name: "bench-bot".into(),
        scopes: vec!["alice/**:pull,push".into()],
        ..Default::default()
    };
    let with_tokens = auth_with_tokens(&dir.path().join("tokens"));
    let tokens = with_tokens.access_tokens.as_deref().unwrap();
    let now = SystemTime::now();
    let created = runtime
        .block_on(cli::create_in(tokens, &with_tokens.users, new, now))
        .unwrap();
    let robot = format!(
        "Basic {}",
        STANDARD.encode(format!("bench-bot:{}", created.secret))
    );
    group.bench_function("login_access_token", |b| {
        b.iter(|| issue(&with_tokens, Some(&robot)))
    });
    // htpasswd logins with access tokens on: each also asks the store whether a token has
    // the user's name.
    group.bench_function("login_cached_tokens_on", |b| {
        b.iter(|| issue(&with_tokens, Some(basic)))
    });
    // Kept alive until the group ends; stopped (by pid) when dropped.
    let slapd = common::ldap::Slapd::available().then(|| common::ldap::Slapd::start(dir.path()));
    match &slapd {
        Some(slapd) => {
            let ldap = ldap_auth(&dir.path().join("ldap"), slapd);
            let alice = "Basic YWxpY2U6YWxpY2UtcHc="; // alice:alice-pw, in the directory
            issue(&ldap, Some(alice)); // warms the credential cache: one real LDAP login
            group.bench_function("login_ldap_cached", |b| {
                b.iter(|| issue(&ldap, Some(alice)))
            });
        }
        None => eprintln!("login_ldap_cached skipped: slapd is not installed"),
    }
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.bench_function(format!("login_bcrypt_cost_{BCRYPT_COST}"), |b| {
        b.iter(|| issue(&uncached, Some(basic)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
