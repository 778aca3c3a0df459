//! Access logs (issue 8): `log.format: json` gives one JSON object per line with the request
//! id, client, account, method, path, status, bytes, duration, node and rate-limit decision,
//! and never a credential; `X-Request-Id` reaches the node and comes back to the client.
//! Faults of a client's are warnings, not errors, and each listener logs one start line
//! (issue 29).

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use base64::Engine;
use common::auth::{auth_yaml, login};
use common::echo::EchoUpstream;
use common::raw::{read_all, statuses, upload};
use common::{curl, make_certs, tls_connect, upstream_yaml, wait_for, Edge, Registry};

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

/// The edge's JSON log lines.
fn log_lines(edge: &Edge) -> Vec<serde_json::Value> {
    edge.log_text()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// Faults of the client's (a reset mid-download, a head over the limits, a stalled head or
/// body, a failed h2 handshake, a connection closed mid-head) are logged below ERROR, a
/// request's with its request id; each listener says once where it listens.
#[test]
fn client_faults_are_warnings_and_listeners_are_logged_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let certs = common::make_certs(dir.path());
    let registry = Registry::start(dir.path(), "node");
    let admin = common::free_port();
    let edge = Edge::start_with(
        dir.path(),
        &certs,
        "  shutdown_grace: 1s\n  header_timeout: 1s\n  body_timeout: 1s\n",
        &common::upstream_yaml(&[registry.addr()], "repository_hash"),
        &format!("admin:\n  listen: \"127.0.0.1:{admin}\"\nlog:\n  format: json\n"),
    );
    let ca = certs.ca_dir.join("ca.crt");
    let tls = || tls_connect(edge.https_port, &ca, &["http/1.1"]);
    // A 4 MiB blob, read a little and reset.
    let big = vec![3u8; 4 << 20];
    let digest = common::push_blob(&edge.url(""), &ca, "wire/big", &big, &[]);
    let mut download = tls();
    let request = format!("GET /v2/wire/big/blobs/{digest} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    download.write_all(request.as_bytes()).unwrap();
    let mut some = [0u8; 1024];
    download.read_exact(&mut some).unwrap();
    socket2::SockRef::from(&download.sock)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(download);
    // A head over the limits (431).
    let mut over = tls();
    let huge = format!(
        "GET /v2/ HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70_000)
    );
    over.write_all(huge.as_bytes()).unwrap();
    assert_eq!(statuses(&read_all(&mut over)).first(), Some(&431));
    // A head that stalls, and a body that stalls (server.header_timeout / body_timeout).
    let mut stalled_head = tls();
    stalled_head
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: local")
        .unwrap();
    let mut stalled_body = tls();
    stalled_body
        .write_all(&upload(&edge, &ca, "wire/stall", &[5u8; 1000])[..300])
        .unwrap();
    let _ = read_all(&mut stalled_head);
    let _ = read_all(&mut stalled_body);
    // A connection closed in the middle of its head.
    let mut cut = tls();
    cut.write_all(b"GET /v2/ HTTP/1.1\r\nHo").unwrap();
    cut.flush().unwrap();
    drop(cut);
    // An h2 client that sends garbage instead of its preface.
    let mut h2 = tls_connect(edge.https_port, &ca, &["h2"]);
    h2.write_all(b"this is not an HTTP/2 connection preface\r\n\r\n")
        .unwrap();
    let _ = read_all(&mut h2);
    // The reset download is over once the access line for it is written.
    common::wait_for(
        "the reset download's access line",
        Duration::from_secs(20),
        || {
            log_lines(&edge)
                .iter()
                .any(|l| {
                    l["path"]
                        .as_str()
                        .is_some_and(|p| p.contains("wire/big/blobs"))
                })
                .then_some(())
        },
    );
    let lines = log_lines(&edge);
    let errors: Vec<_> = lines.iter().filter(|l| l["level"] == "ERROR").collect();
    assert!(
        errors.is_empty(),
        "client faults logged as errors: {errors:#?}"
    );
    let warnings: Vec<_> = lines
        .iter()
        .filter(|l| {
            l["level"] == "WARN" && l["target"].as_str() == Some("registry_edge::proxy::failure")
        })
        .collect();
    assert!(
        !warnings.is_empty(),
        "no warning for the request-level faults: {lines:#?}"
    );
    for warning in &warnings {
        let id = warning["request_id"].as_str().unwrap_or("");
        assert!(
            !id.is_empty(),
            "a warning without the request id: {warning}"
        );
    }
    // One start line per listener: address, TLS or plain, PROXY protocol or not.
    let starts: Vec<String> = lines
        .iter()
        .filter_map(|l| l["message"].as_str())
        .filter(|m| m.starts_with("listening on "))
        .map(str::to_string)
        .collect();
    let expected = [
        format!("listening on 127.0.0.1:{} (TLS)", edge.https_port),
        format!("listening on 127.0.0.1:{} (plain HTTP)", edge.http_port),
        format!("listening on 127.0.0.1:{admin} (plain HTTP)"),
    ];
    for line in &expected {
        assert_eq!(
            starts.iter().filter(|s| *s == line).count(),
            1,
            "{line} in {starts:?}"
        );
    }
    assert_eq!(starts.len(), 3, "{starts:?}");
    let _ = &registry;
}
