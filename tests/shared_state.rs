//! Several edge instances as one gateway (`shared_state.redis`): push limits and
//! failed-login throttling shared through a real Redis (Debian's `redis-server`), the
//! fallback while Redis is away, repository affinity and refresh tokens across instances.

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use common::auth::{auth_yaml, login, registry_auth_block, SERVICE};
use common::redis::RedisServer;
use common::*;

fn shared_yaml(redis: &RedisServer, on_unavailable: &str) -> String {
    format!(
        "shared_state:\n  redis:\n    url: {}\n    key_prefix: \"test:\"\n    timeout: 50ms\n    on_unavailable: {on_unavailable}\n",
        redis.url()
    )
}

/// Push limit by client IP (every request here comes from 127.0.0.1): a burst of 4,
/// refilling once a minute, so nothing refills during a test.
const PUSH_LIMIT: &str = "rate_limits:\n  push: { key: client_ip, per_minute: 1, burst: 4 }\n";

fn ca(certs: &Certs) -> String {
    certs.ca_dir.join("ca.crt").to_str().unwrap().to_string()
}

fn push_start(edge: &Edge, ca: &str) -> CurlResult {
    curl(&[
        "--cacert",
        ca,
        "-X",
        "POST",
        &edge.url("/v2/app/blobs/uploads/"),
    ])
}

/// Push starts alternating between the instances: statuses in order.
fn alternate_push_starts(edges: [&Edge; 2], ca: &str, count: usize) -> Vec<u16> {
    (0..count)
        .map(|i| push_start(edges[i % 2], ca).status)
        .collect()
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

fn metric(port: u16, name: &str) -> Option<f64> {
    common::metric(&admin_metrics(port), name)
}

#[test]
fn push_limit_is_shared_by_two_instances() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let node = Registry::start(dir.path(), "node");
    let redis = RedisServer::start(dir.path());
    let upstream = upstream_yaml(&[node.addr()], "repository_hash");
    let extra = format!("{PUSH_LIMIT}{}", shared_yaml(&redis, "local"));
    let a = Edge::start(dir.path(), &certs, &upstream, &extra);
    let b = Edge::start(dir.path(), &certs, &upstream, &extra);
    let ca = ca(&certs);

    let statuses = alternate_push_starts([&a, &b], &ca, 8);
    assert_eq!(
        (count(&statuses, 202), count(&statuses, 429)),
        (4, 4),
        "one budget of 4 for both instances: {statuses:?}"
    );
    assert_eq!(&statuses[..4], &[202; 4], "{statuses:?}");
    // The same refusal as the in-memory limiter: JSON, Retry-After, RateLimit headers.
    let refused = push_start(&b, &ca);
    assert_eq!(refused.status, 429);
    assert_eq!(refused.json()["errors"][0]["code"], "TOOMANYREQUESTS");
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(refused.header("ratelimit-limit"), Some("1;w=60"));
    // One key for the client, expiring once its budget has refilled (4 cells × 60 s).
    let ttl = redis.integer(&["PTTL", "test:push:ip:127.0.0.1"]);
    assert!((1..=241_000).contains(&ttl), "PTTL {ttl}");

    // The same two instances without shared_state: each has its own budget of 4.
    let c = Edge::start(dir.path(), &certs, &upstream, PUSH_LIMIT);
    let d = Edge::start(dir.path(), &certs, &upstream, PUSH_LIMIT);
    let statuses = alternate_push_starts([&c, &d], &ca, 8);
    assert_eq!(count(&statuses, 202), 8, "{statuses:?}");
}

/// A push the edge refuses after counting it (here a chunked body over
/// `limits.max_body_size`, refused while it streams) is given back in Redis too: after many
/// such refusals on both instances the shared burst is whole.
#[test]
fn pushes_refused_after_counting_are_given_back_in_redis() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let node = Registry::start(dir.path(), "node");
    let redis = RedisServer::start(dir.path());
    let upstream = upstream_yaml(&[node.addr()], "repository_hash");
    let extra = format!(
        "{PUSH_LIMIT}{}limits:\n  max_body_size: 1000\n",
        shared_yaml(&redis, "local")
    );
    let a = Edge::start(dir.path(), &certs, &upstream, &extra);
    let b = Edge::start(dir.path(), &certs, &upstream, &extra);
    let ca = ca(&certs);
    let body = dir.path().join("body");
    std::fs::write(&body, vec![1u8; 4000]).unwrap();
    let data = format!("@{}", body.display());
    for edge in [&a, &b, &a, &b, &a, &b] {
        let refused = curl(&[
            "--cacert",
            &ca,
            "--http1.1",
            "-X",
            "POST",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &data,
            &edge.url("/v2/app/blobs/uploads/"),
        ]);
        assert_eq!(refused.status, 413, "{}", refused.text());
    }
    let statuses = alternate_push_starts([&a, &b], &ca, 5);
    assert_eq!(
        statuses,
        [202, 202, 202, 202, 429],
        "the whole burst of 4 is left"
    );
}

#[test]
fn upload_budget_is_shared_by_two_instances() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let node = Registry::start(dir.path(), "node");
    let redis = RedisServer::start(dir.path());
    let upstream = upstream_yaml(&[node.addr()], "repository_hash");
    let limit =
        "rate_limits:\n  upload_bytes: { key: client_ip, per_second: 1048576, burst: 1048576 }\n";
    let ca = certs.ca_dir.join("ca.crt");
    let two_mib: Vec<u8> = (0..2u32 << 20).map(|i| (i % 251) as u8).collect();
    let one_mib: Vec<u8> = (0..1u32 << 20).map(|i| (i % 241) as u8).collect();

    // A spends the shared budget; B's upload right after must wait for it to refill.
    let shared = format!("{limit}{}", shared_yaml(&redis, "local"));
    let a = Edge::start(dir.path(), &certs, &upstream, &shared);
    let b = Edge::start(dir.path(), &certs, &upstream, &shared);
    push_blob(&a.url(""), &ca, "shared/first", &two_mib, &[]);
    push_blob(&b.url(""), &ca, "shared/second", &one_mib, &[]);
    let held = put_throttled_ms(&b, "shared/second");
    assert!(held >= 300, "B waited {held} ms for the budget A spent");
    eprintln!("shared upload budget: B held {held} ms after A spent the burst");

    // Control: per-instance budgets, B's first MiB passes at once.
    let c = Edge::start(dir.path(), &certs, &upstream, limit);
    let d = Edge::start(dir.path(), &certs, &upstream, limit);
    push_blob(&c.url(""), &ca, "local/first", &two_mib, &[]);
    push_blob(&d.url(""), &ca, "local/second", &one_mib, &[]);
    assert_eq!(put_throttled_ms(&d, "local/second"), 0);
}

#[test]
fn failed_logins_are_throttled_across_instances() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let node = Registry::start_with(dir.path(), "node", &registry_auth_block(dir.path()));
    let redis = RedisServer::start(dir.path());
    let upstream = upstream_yaml(&[node.addr()], "repository_hash");
    let auth = auth_yaml(
        dir.path(),
        "  failed_logins: { per_client_ip: 3, per_account: 100 }\n",
    );
    let ca = ca(&certs);
    let scope = "repository:alice/app:pull";

    // Five wrong passwords alternating between two instances: the fifth is throttled
    // only if both count into one budget (each alone has seen at most three).
    let shared = format!("{auth}{}", shared_yaml(&redis, "local"));
    let a = Edge::start(dir.path(), &certs, &upstream, &shared);
    let b = Edge::start(dir.path(), &certs, &upstream, &shared);
    let statuses: Vec<u16> = (0..5)
        .map(|i| login([&a, &b][i % 2], &ca, "alice", "wrong", scope).status)
        .collect();
    assert_eq!(statuses, [401, 401, 401, 401, 429], "shared throttle");
    let throttled = login(&b, &ca, "alice", "pw-alice", scope);
    assert_eq!(
        throttled.status, 429,
        "the address is blocked on every instance"
    );
    assert!(throttled.header("retry-after").is_some());

    // Control: the same instances without shared_state never reach the limit this way.
    let c = Edge::start(dir.path(), &certs, &upstream, &auth);
    let d = Edge::start(dir.path(), &certs, &upstream, &auth);
    let statuses: Vec<u16> = (0..5)
        .map(|i| login([&c, &d][i % 2], &ca, "alice", "wrong", scope).status)
        .collect();
    assert_eq!(statuses, [401; 5], "per-instance throttles");
}

#[test]
fn redis_outage_falls_back_to_local_limits_then_shares_again() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let node = Registry::start(dir.path(), "node");
    let mut redis = RedisServer::start(dir.path());
    let upstream = upstream_yaml(&[node.addr()], "repository_hash");
    let admin = free_port();
    let shared = format!("{PUSH_LIMIT}{}", shared_yaml(&redis, "local"));
    let a = Edge::start(
        dir.path(),
        &certs,
        &upstream,
        &format!("{shared}admin:\n  listen: 127.0.0.1:{admin}\n"),
    );
    let b = Edge::start(dir.path(), &certs, &upstream, &shared);
    let ca = ca(&certs);
    let up = "registry_edge_shared_state_up";
    assert_eq!(push_start(&a, &ca).status, 202);
    assert_eq!(metric(admin, up), Some(1.0));

    // Redis goes away between pushes: they go on under per-instance limits (4 each).
    redis.stop();
    let statuses = alternate_push_starts([&a, &b], &ca, 10);
    assert_eq!(&statuses[..8], &[202; 8], "{statuses:?}");
    assert_eq!(&statuses[8..], &[429; 2], "{statuses:?}");
    assert_eq!(metric(admin, up), Some(0.0));
    let fallbacks = metric(
        admin,
        "registry_edge_shared_state_fallbacks_total{limit=\"push\"}",
    );
    assert!(fallbacks.is_some_and(|n| n >= 4.0), "{fallbacks:?}");
    let log = a.log_text();
    assert_eq!(
        log.matches("shared_state.redis unavailable").count(),
        1,
        "logged once per transition: {log}"
    );
    // Pulls never depend on Redis.
    assert_eq!(curl(&["--cacert", &ca, &a.url("/v2/")]).status, 200);

    // Redis is back (empty): both instances share one budget again.
    redis.restart();
    wait_for(
        "the edges to see Redis again",
        Duration::from_secs(20),
        || (metric(admin, up) == Some(1.0)).then_some(()),
    );
    wait_for(
        "the second edge to see Redis again",
        Duration::from_secs(20),
        || {
            b.log_text()
                .contains("shared_state.redis answers again")
                .then_some(())
        },
    );
    let statuses = alternate_push_starts([&a, &b], &ca, 8);
    assert_eq!(
        (count(&statuses, 202), count(&statuses, 429)),
        (4, 4),
        "{statuses:?}"
    );
    assert!(a.log_text().contains("shared_state.redis answers again"));
}

#[test]
fn a_slow_redis_times_out_into_the_fallback_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let node = Registry::start(dir.path(), "node");
    let redis = RedisServer::start(dir.path());
    let upstream = upstream_yaml(&[node.addr()], "repository_hash");
    let admin = free_port();
    let edge = Edge::start(
        dir.path(),
        &certs,
        &upstream,
        &format!(
            "rate_limits:\n  push: {{ key: client_ip, per_minute: 1, burst: 1000 }}\n{}admin:\n  listen: 127.0.0.1:{admin}\n",
            shared_yaml(&redis, "local")
        ),
    );
    let ca = ca(&certs);
    assert_eq!(push_start(&edge, &ca).status, 202);

    // Redis stops answering (busy for 3 s) without closing connections.
    let port = redis.port;
    let asleep = std::thread::spawn(move || {
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.write_all(b"DEBUG SLEEP 3\r\n").unwrap();
        let mut reply = [0u8; 5];
        tcp.read_exact(&mut reply).unwrap();
    });
    // Push starts go on (within the 50 ms timeout, then locally) while it sleeps.
    wait_for(
        "the timeout to switch to the fallback",
        Duration::from_secs(10),
        || {
            assert_eq!(push_start(&edge, &ca).status, 202);
            edge.log_text()
                .contains("shared_state.redis unavailable (no answer within 50ms)")
                .then_some(())
        },
    );
    assert!(
        !asleep.is_finished(),
        "the fallback came while Redis was still asleep"
    );
    assert_eq!(metric(admin, "registry_edge_shared_state_up"), Some(0.0));
    asleep.join().unwrap();
    wait_for("Redis to be used again", Duration::from_secs(10), || {
        (metric(admin, "registry_edge_shared_state_up") == Some(1.0)).then_some(())
    });
    assert_eq!(push_start(&edge, &ca).status, 202);
}

#[test]
fn redis_outage_with_deny_refuses_pushes_but_not_pulls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let node = Registry::start(dir.path(), "node");
    // A password-protected Redis: the password is in the URL and must never be logged.
    let mut redis = RedisServer::start_with_password(dir.path(), Some("pw-in-the-url"));
    let upstream = upstream_yaml(&[node.addr()], "repository_hash");
    let edge = Edge::start(
        dir.path(),
        &certs,
        &upstream,
        &format!("{PUSH_LIMIT}{}", shared_yaml(&redis, "deny")),
    );
    let ca_path = certs.ca_dir.join("ca.crt");
    let ca = ca(&certs);
    let blob = b"pulled while redis is down".to_vec();
    let digest = push_blob(&edge.url(""), &ca_path, "app", &blob, &[]);

    redis.stop();
    let refused = push_start(&edge, &ca);
    assert_eq!(refused.status, 503, "{:?}", refused.json());
    assert_eq!(refused.json()["errors"][0]["code"], "UNAVAILABLE");
    let pulled = curl(&[
        "--cacert",
        &ca,
        &edge.url(&format!("/v2/app/blobs/{digest}")),
    ]);
    assert_eq!((pulled.status, pulled.body), (200, blob));

    redis.restart();
    wait_for(
        "pushes to be admitted again",
        Duration::from_secs(20),
        || (push_start(&edge, &ca).status == 202).then_some(()),
    );
    let log = edge.log_text();
    assert!(log.contains("shared_state.redis unavailable"), "{log}");
    assert!(
        !log.contains("pw-in-the-url"),
        "the Redis password was logged: {log}"
    );
}

#[test]
fn a_repository_reaches_the_same_node_through_either_instance() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    // Two nodes, each with its own storage: a pull from the wrong node would be a 404.
    let one = Registry::start(dir.path(), "one");
    let two = Registry::start(dir.path(), "two");
    let upstream = upstream_yaml(&[one.addr(), two.addr()], "repository_hash");
    let a = Edge::start(dir.path(), &certs, &upstream, "");
    let b = Edge::start(dir.path(), &certs, &upstream, "");
    let ca_path = certs.ca_dir.join("ca.crt");
    let ca = ca(&certs);
    // Sixteen repositories: with ephemeral ports the hash places them anew each run, and all
    // sixteen on one node (a test proving nothing) has odds of 1 in 32,768 (eight: 1 in 128).
    let mut on_one = 0;
    for i in 0..16 {
        let repo = format!("team/app-{i}");
        let blob = format!("blob of {repo}").into_bytes();
        let digest = push_blob(&a.url(""), &ca_path, &repo, &blob, &[]);
        let pulled = curl(&[
            "--cacert",
            &ca,
            &b.url(&format!("/v2/{repo}/blobs/{digest}")),
        ]);
        assert_eq!((pulled.status, pulled.body), (200, blob), "{repo}");
        assert!(one.has_blob(&repo, &digest) != two.has_blob(&repo, &digest));
        on_one += usize::from(one.has_blob(&repo, &digest));
    }
    assert!(
        (1..16).contains(&on_one),
        "both nodes hold repositories ({on_one} of 16 on one)"
    );
}

#[test]
fn refresh_tokens_work_on_every_instance_until_the_user_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let node = Registry::start_with(dir.path(), "node", &registry_auth_block(dir.path()));
    let upstream = upstream_yaml(&[node.addr()], "repository_hash");
    let auth = auth_yaml(dir.path(), "");
    let a = Edge::start(dir.path(), &certs, &upstream, &auth);
    let b = Edge::start(dir.path(), &certs, &upstream, &auth);
    let ca = ca(&certs);

    let offline = curl(&[
        "--cacert",
        &ca,
        "-u",
        "alice:pw-alice",
        &a.url(&format!(
            "/jwt/auth?service={SERVICE}&scope=repository:alice/app:pull&offline_token=true"
        )),
    ]);
    assert_eq!(offline.status, 200);
    let refresh_token = offline.json()["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_string();
    let refresh = |edge: &Edge| {
        curl(&[
            "--cacert",
            &ca,
            "-X",
            "POST",
            "--data-urlencode",
            "grant_type=refresh_token",
            "--data-urlencode",
            &format!("service={SERVICE}"),
            "--data-urlencode",
            &format!("refresh_token={refresh_token}"),
            "--data-urlencode",
            "scope=repository:alice/app:pull",
            &edge.url("/jwt/auth"),
        ])
        .status
    };
    assert_eq!(refresh(&b), 200, "issued by A, accepted by B");
    assert_eq!(refresh(&a), 200);

    // alice is removed from the shared htpasswd; each instance reloads.
    // auth_yaml wrote it; htpasswd() would write it afresh.
    let file = dir.path().join("htpasswd");
    let kept: Vec<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("alice:"))
        .map(str::to_string)
        .collect();
    std::fs::write(&file, kept.join("\n") + "\n").unwrap();
    for edge in [&a, &b] {
        let status = Command::new("kill")
            .args(["-HUP", &edge.proc.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
    for edge in [&a, &b] {
        wait_for(
            "the reload to refuse alice",
            Duration::from_secs(20),
            || (refresh(edge) == 401).then_some(()),
        );
    }
}
