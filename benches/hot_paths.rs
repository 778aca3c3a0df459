//! The functions every proxied request runs, one by one: route classification, the
//! bearer-token check (first sight vs. repeat), ACL evaluation and the push limiter; the
//! request id, forwarding headers and request metrics every proxied request pays for.
//! Run: `cargo bench --bench hot_paths`. Whole-request figures against nginx come
//! from `benches/compare_nginx.py`.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::Method;
use registry_edge::auth::acl::{Acl, Rule};
use registry_edge::auth::identity::{Backend, Identity};
use registry_edge::auth::token::{SigningKeys, TokenAuthority};
use registry_edge::config::{LimitKey, PushLimit};
use registry_edge::limits::PushLimiter;
use registry_edge::registry::route::{decoded_path, Route};
use registry_edge::registry::Scope;

const BLOB_PATH: &str = "/v2/group/project/app/blobs/sha256:\
                         0d2f9a1b6c8e4f7a3b5d9c1e2f4a6b8c0d2e4f6a8b0c2d4e6f8a0b2c4d6e8f0a";

fn route(c: &mut Criterion) {
    c.bench_function("route: decode + classify a blob path", |b| {
        b.iter(|| {
            let path = decoded_path(std::hint::black_box(BLOB_PATH)).unwrap();
            let route = Route::parse(&Method::HEAD, &path);
            registry_edge::auth::access::needed(&route, None)
        })
    });
}

fn token(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    registry_edge::certgen::generate(dir.path(), &["bench".into()]).unwrap();
    let keys = SigningKeys::load(
        &dir.path().join("registry-auth.key"),
        &dir.path().join("registry-auth.crt"),
    )
    .unwrap();
    let authority = TokenAuthority::new(
        keys,
        "bench".into(),
        "container_registry".into(),
        Duration::from_secs(300),
    );
    let access = [Scope::repository("group/project/app", &["pull", "push"])];
    c.bench_function("token: issue (ES256 sign)", |b| {
        b.iter(|| authority.issue("alice", &access, SystemTime::now()))
    });
    c.bench_function("token: verify a token seen for the first time", |b| {
        b.iter_batched(
            || authority.issue("alice", &access, SystemTime::now()).token,
            |token| authority.verify(&token).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let token = authority.issue("alice", &access, SystemTime::now()).token;
    authority.verify(&token).unwrap();
    c.bench_function("token: verify a token seen before (cache hit)", |b| {
        b.iter(|| authority.verify(std::hint::black_box(&token)).unwrap())
    });
}

fn acl(c: &mut Criterion) {
    let rule = |account: &str, name: &str, actions: &[&str]| {
        Rule::new(account, "repository", name, actions)
    };
    // A GitLab-like policy: a few admin and CI rules before the per-user one that matches.
    let acl = Acl {
        rules: vec![
            rule("admin", "**", &["*"]),
            rule("ci-bot", "ci/**", &["pull", "push"]),
            rule("", "public/*", &["pull"]),
            rule("*", "public/*", &["pull"]),
            rule("*", "${account}/**", &["pull", "push", "delete"]),
        ],
    };
    let wanted = Scope::repository("alice/team/app", &["pull", "push"]);
    c.bench_function("acl: grant pull,push through the 5th rule", |b| {
        let alice = Identity::new("alice", Backend::Htpasswd);
        b.iter(|| acl.grant(std::hint::black_box(&alice), &wanted, None))
    });
}

fn limiter(c: &mut Criterion) {
    let limiter = PushLimiter::new(
        PushLimit {
            key: LimitKey::Account,
            per_minute: NonZeroU32::MAX,
            burst: NonZeroU32::MAX,
            exempt_accounts: HashSet::new(),
        },
        None,
    );
    c.bench_function("limiter: admit one push (one account)", |b| {
        b.iter(|| {
            futures::executor::block_on(
                limiter.admit(Some(std::hint::black_box("alice")), "127.0.0.1"),
            )
        })
    });
}

/// The per-request pieces the issue-18 work rewrote: request id, forwarding headers,
/// request metrics.
fn request_path(c: &mut Criterion) {
    use registry_edge::bench_support as edge;
    c.bench_function("request id: 128 random bits as hex", |b| {
        b.iter(edge::request_id)
    });
    let request = || {
        let mut req = pingora::http::RequestHeader::build("GET", BLOB_PATH.as_bytes(), None)
            .expect("a valid request line");
        for (name, value) in [
            ("Host", "registry.example.com"),
            ("User-Agent", "containerd/1.7.24"),
            ("Accept", "application/vnd.oci.image.layer.v1.tar+gzip"),
            (
                "Authorization",
                "Bearer eyJhbGciOiJFUzI1NiJ9.e30.c2lnbmF0dXJl",
            ),
        ] {
            req.append_header(name, value).expect("a valid header");
        }
        req
    };
    let peer = "192.0.2.7".parse().expect("an address");
    c.bench_function("forwarding headers: rewrite a request for a node", |b| {
        b.iter_batched(
            request,
            |mut req| {
                edge::forward_request_headers(&mut req, peer);
                req
            },
            BatchSize::SmallInput,
        )
    });
    c.bench_function(
        "framing: target, Host and framing headers of a request",
        |b| {
            b.iter_batched(
                request,
                |mut req| {
                    assert!(edge::check_framing(&mut req));
                    req
                },
                BatchSize::SmallInput,
            )
        },
    );
    c.bench_function("metrics: count one request (class, status, latency)", |b| {
        b.iter(|| edge::count_request("pull", 200, 0.002))
    });
}

/// The routes' per-request pieces: the match and names, and the remembered tag a
/// `stale_if_error` route records on every by-tag answer.
fn routes(c: &mut Criterion) {
    use registry_edge::bench_support as edge;
    let table = edge::RouteTable::new();
    let path = "/v2/hub/library/nginx/manifests/1.27";
    c.bench_function("routes: match a prefixed name, pool path", |b| {
        b.iter(|| {
            assert!(edge::match_route(
                &table,
                "registry.example.com",
                path,
                "hub/library/nginx"
            ))
        })
    });
    c.bench_function("routes: no route takes the name", |b| {
        b.iter(|| {
            edge::match_route(
                &table,
                "registry.example.com",
                "/v2/team/app/manifests/1",
                "team/app",
            )
        })
    });
    let tags = edge::RememberedTags::new();
    c.bench_function("stale_if_error: remember a tag seen again", |b| {
        b.iter(|| tags.remember_again())
    });
    c.bench_function("stale_if_error: recall a tag", |b| {
        b.iter(|| assert!(tags.recall()))
    });
}

criterion_group!(benches, route, token, acl, limiter, request_path, routes);
criterion_main!(benches);
