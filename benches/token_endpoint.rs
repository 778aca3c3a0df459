//! Token endpoint throughput, in process: a correct login that hits the credential
//! cache (token signing + ACL only) against one that pays bcrypt every time
//! (`auth.users.cache_ttl: 0s`), at the cost `hash-password` uses by default (10),
//! and an anonymous request for comparison. Run: `cargo bench --bench token_endpoint`.

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use registry_edge::auth::acl::Rule;
use registry_edge::auth::endpoint::{TokenReply, TokenRequest};
use registry_edge::auth::Auth;
use registry_edge::config::{AuthSettings, UsersSettings};

const BCRYPT_COST: u32 = 10;

fn auth(dir: &std::path::Path, cache_ttl: Duration) -> Auth {
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
        users: UsersSettings::htpasswd_only(dir.join("htpasswd"), cache_ttl),
        acl: vec![
            rule("*", "${account}/**", &["pull", "push"]),
            rule("", "public/*", &["pull"]),
        ],
        failed_logins_per_ip: NonZeroU32::MAX,
        failed_logins_per_account: NonZeroU32::MAX,
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
