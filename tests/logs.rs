//! Access logs (issue 8): `log.format: json` gives one JSON object per line with the request
//! id, client, account, method, path, status, bytes, duration, node and rate-limit decision,
//! and never a credential; `X-Request-Id` reaches the node and comes back to the client.

mod common;

use base64::Engine;
use common::auth::{auth_yaml, login};
use common::echo::EchoUpstream;
use common::{curl, make_certs, upstream_yaml, wait_for, Edge};

#[test]
fn json_access_lines_carry_the_request_and_no_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let upstream = EchoUpstream::start();
    let extra = format!("{}log:\n  format: json\n", auth_yaml(dir.path(), ""));
    let edge = Edge::start(
        dir.path(),
        &certs,
        &upstream_yaml(std::slice::from_ref(&upstream.addr), "round_robin"),
        &extra,
    );
    let ca = certs.ca_dir.join("ca.crt");
    let ca = ca.to_str().unwrap();

    assert_eq!(
        login(&edge, ca, "alice", "wrong-pw", "repository:alice/app:pull").status,
        401
    );
    let ok = login(&edge, ca, "alice", "pw-alice", "repository:alice/app:pull");
    assert_eq!(ok.status, 200);
    let token = ok.json()["token"].as_str().unwrap().to_string();
    let bearer = format!("Authorization: Bearer {token}");
    let url = edge.url("/v2/alice/app/tags/list");

    // The client's id goes to the node and comes back.
    let given = curl(&[
        "--cacert",
        ca,
        "-H",
        &bearer,
        "-H",
        "X-Request-Id: build-42.step:7",
        &url,
    ]);
    assert_eq!(given.status, 200);
    assert_eq!(given.header("x-request-id"), Some("build-42.step:7"));
    let echoed = String::from_utf8_lossy(&given.body).to_ascii_lowercase();
    assert!(echoed.contains("x-request-id: build-42.step:7"), "{echoed}");

    // None, or one that is not a plain token: the edge makes one, the same both ways.
    for extra in [None, Some("X-Request-Id: has spaces in it")] {
        let mut args = vec!["--cacert", ca, "-H", bearer.as_str()];
        if let Some(h) = extra {
            args.extend(["-H", h]);
        }
        args.push(&url);
        let made = curl(&args);
        let id = made
            .header("x-request-id")
            .expect("an X-Request-Id")
            .to_string();
        assert!(
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
        let echoed = String::from_utf8_lossy(&made.body).to_ascii_lowercase();
        assert!(echoed.contains(&format!("x-request-id: {id}")), "{echoed}");
    }
    // Own answers carry it too.
    let refused = curl(&["--cacert", ca, "-H", "X-Request-Id: no-token-1", &url]);
    assert_eq!(refused.status, 401);
    assert_eq!(refused.header("x-request-id"), Some("no-token-1"));

    let log = wait_for(
        "the access lines",
        std::time::Duration::from_secs(10),
        || {
            let log = edge.log_text();
            log.contains("no-token-1").then_some(log)
        },
    );
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let access: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["target"] == "registry_edge::access")
        .collect();
    assert!(access.len() >= 6, "{log}");
    for line in &access {
        for field in [
            "request_id",
            "client",
            "account",
            "method",
            "path",
            "status",
            "bytes_in",
            "bytes_out",
            "duration_ms",
            "upstream",
            "rate_limit",
        ] {
            assert!(!line[field].is_null(), "{field} missing in {line}");
        }
    }
    let pull = access
        .iter()
        .find(|l| l["request_id"] == "build-42.step:7")
        .expect("the pull's line");
    assert_eq!(pull["account"], "alice");
    assert_eq!(pull["client"], "127.0.0.1");
    assert_eq!(pull["method"], "GET");
    assert_eq!(pull["path"], "/v2/alice/app/tags/list");
    assert_eq!(pull["status"], 200);
    assert_eq!(pull["upstream"], upstream.addr.as_str());
    assert!(access
        .iter()
        .any(|l| l["path"] == "/jwt/auth" && l["status"] == 401));

    // No credential of any kind.
    let basic = base64::engine::general_purpose::STANDARD.encode("alice:pw-alice");
    for secret in [
        token.as_str(),
        "pw-alice",
        "wrong-pw",
        basic.as_str(),
        "Bearer ",
        "Basic ",
    ] {
        assert!(!log.contains(secret), "the log contains {secret:?}");
    }
}

/// Access lines are buffered per thread (as nginx's `access_log … buffer=64k flush=1s`):
/// they reach the log within the flush interval, and a graceful stop writes every one.
#[test]
fn buffered_access_lines_arrive_within_the_interval_and_survive_a_graceful_stop() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let upstream = EchoUpstream::start();
    let ca = certs.ca_dir.join("ca.crt");
    let ca = ca.to_str().unwrap();
    // Only access lines (no "graceful stop" info line, whose write would flush them too):
    // what is buffered at exit is written by the log writer's guard alone.
    let start = |flush: &str| {
        let (https, http) = (common::free_port(), common::free_port());
        let yaml = format!(
            "server:\n  https_listen: [\"127.0.0.1:{https}\"]\n  http_listen: [\"127.0.0.1:{http}\"]\n  threads: 2\n  shutdown_grace: 2s\n\
             tls:\n  certificates:\n    - cert: {}\n      key: {}\n{}",
            certs.tls_crt.display(),
            certs.tls_key.display(),
            upstream_yaml(std::slice::from_ref(&upstream.addr), "round_robin"),
        );
        let edge = Edge::start_config_env(
            dir.path(),
            https,
            http,
            &yaml,
            &[
                ("REGISTRY_EDGE_LOG_FLUSH", flush),
                ("REGISTRY_EDGE_LOG", "warn,registry_edge::access=info"),
            ],
        );
        wait_for("the edge to answer", Duration::from_secs(30), || {
            (curl(&["--cacert", ca, &edge.url("/v2/")]).status == 200).then_some(())
        });
        edge
    };
    // 40 requests on one connection; their lines (~8 KB) stay below the 64 KiB flush size.
    let send = |edge: &Edge| {
        let urls: Vec<String> = (0..40)
            .map(|i| edge.url(&format!("/v2/batch/n{i}/tags/list")))
            .collect();
        let mut args = vec!["--cacert", ca];
        args.extend(urls.iter().map(String::as_str));
        let got = curl(&args);
        assert_eq!(got.status, 200, "{}", got.stderr);
    };
    let lines = |edge: &Edge| {
        edge.log_text()
            .lines()
            .filter(|l| l.contains("/v2/batch/") && l.contains("status=200"))
            .count()
    };

    let every_second = start("1s");
    send(&every_second);
    wait_for(
        "40 access lines within the flush interval",
        Duration::from_secs(5),
        || (lines(&every_second) == 40).then_some(()),
    );

    let mut hourly = start("1h");
    send(&hourly);
    assert_eq!(
        lines(&hourly),
        0,
        "access lines are buffered:\n{}",
        hourly.log_text()
    );
    let pid = nix::unistd::Pid::from_raw(hourly.proc.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    wait_for("the edge to exit", Duration::from_secs(20), || {
        (!hourly.proc.is_running()).then_some(())
    });
    assert_eq!(
        lines(&hourly),
        40,
        "a graceful stop writes every buffered line:\n{}",
        hourly.log_text()
    );
}
