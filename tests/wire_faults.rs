//! Faults on the wire found by replaying public bug reports (issue 29), on the HTTPS
//! listener (raw TLS) and the plain-HTTP redirect listener (raw TCP): pipelined requests, a
//! request followed by the client's FIN, requests Pingora cannot frame, and how client
//! faults are logged.
//!
//! curl cannot send these: it dropped pipelining in 7.65.0 and never half-closes a
//! connection, so they are written by hand; the requests proxied go to the real registry.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use common::{edge_with_node, tls_connect, Certs, Edge, Registry};

struct Setup {
    _dir: tempfile::TempDir,
    certs: Certs,
    _registry: Registry,
    edge: Edge,
    admin: u16,
}

impl Setup {
    /// The registry (no auth) behind an edge with JSON logs, an admin listener and short
    /// client timeouts.
    fn start() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let admin = common::free_port();
        let extra = format!("admin:\n  listen: \"127.0.0.1:{admin}\"\nlog:\n  format: json\n");
        let (certs, registry, edge) = edge_with_node(dir.path(), &extra);
        Setup {
            _dir: dir,
            certs,
            _registry: registry,
            edge,
            admin,
        }
    }

    fn tls(&self) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
        tls_connect(
            self.edge.https_port,
            &self.certs.ca_dir.join("ca.crt"),
            &["http/1.1"],
        )
    }

    fn plain(&self) -> TcpStream {
        let tcp = TcpStream::connect(("127.0.0.1", self.edge.http_port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        tcp
    }
}

/// Everything the server sends until it closes (or the read timeout).
fn read_all(stream: &mut impl Read) -> String {
    let mut all = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => all.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}

/// The statuses of the answers in `text`, in order.
fn statuses(text: &str) -> Vec<u16> {
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| text.get(at + 9..at + 12)?.parse().ok())
        .collect()
}

/// The closing `PUT …&digest=` of a blob upload started (through the edge) in `repository`,
/// carrying all of `body`: the request text.
fn upload(edge: &Edge, ca: &std::path::Path, repository: &str, body: &[u8]) -> Vec<u8> {
    let url = edge.url(&format!("/v2/{repository}/blobs/uploads/"));
    let location = common::start_upload(&url, ca.to_str().unwrap(), &[]);
    let path = &location[location.find("/v2/").unwrap()..];
    let mut request = format!(
        "PUT {path}&digest={} HTTP/1.1\r\nHost: localhost\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        common::digest(body),
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

fn get(path: &str, last: bool) -> Vec<u8> {
    let connection = if last { "Connection: close\r\n" } else { "" };
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{connection}\r\n").into_bytes()
}

/// Requests sent before reading any answer are answered in order, on both listeners: GETs
/// back to back, and a request body followed in the same write by the next request (which
/// Pingora blamed on the node: 502 "Sent data after end of body").
#[test]
fn pipelined_requests_are_answered_in_order() {
    let s = Setup::start();
    let ca = s.certs.ca_dir.join("ca.crt");
    let body = b"pipelined blob";
    let blob = format!("/v2/wire/pipe/blobs/{}", common::digest(body));
    let cases: Vec<(&str, Vec<u8>, Vec<u16>)> = vec![
        (
            "two GETs",
            [get("/v2/", false), get("/v2/", true)].concat(),
            vec![200, 200],
        ),
        (
            "a body, then the next request in the same write",
            [upload(&s.edge, &ca, "wire/pipe", body), get(&blob, true)].concat(),
            vec![201, 200],
        ),
        (
            "GET, body, GET",
            [
                get("/v2/", false),
                upload(&s.edge, &ca, "wire/pipe2", body),
                get("/v2/", true),
            ]
            .concat(),
            vec![200, 201, 200],
        ),
        (
            // The connection's header scan does not see a head that arrives with a body.
            "a head over the limits behind a body",
            [
                upload(&s.edge, &ca, "wire/pipe3", body),
                format!(
                    "GET /v2/ HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
                    "b".repeat(70_000)
                )
                .into_bytes(),
            ]
            .concat(),
            vec![201, 431],
        ),
    ];
    for (what, requests, expected) in &cases {
        let mut tls = s.tls();
        tls.write_all(requests).unwrap();
        let answers = read_all(&mut tls);
        assert_eq!(&statuses(&answers), expected, "{what}:\n{answers}");
    }
    let mut plain = s.plain();
    plain
        .write_all(&[get("/v2/", false), get("/v2/_catalog", true)].concat())
        .unwrap();
    let answers = read_all(&mut plain);
    assert_eq!(statuses(&answers), [301, 301], "{answers}");
    // HTTP/1.0 without keep-alive: the answer says the connection closes, and it does.
    let mut plain = s.plain();
    plain
        .write_all(b"GET /v2/ HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let answer = read_all(&mut plain);
    assert_eq!(statuses(&answer), [301], "{answer}");
    assert!(answer.contains("Connection: close"), "{answer}");
    assert!(
        answers
            .to_ascii_lowercase()
            .contains("location: https://localhost:"),
        "{answers}"
    );
    let log = s.edge.log_text();
    assert!(!log.contains("Sent data after end of body"), "{log}");
    assert!(!log.contains("\"status\":502"), "{log}");
}

/// A client that sends its request and then shuts down its write side (`nc -N`, HTTP/1.0
/// tools, health checkers) gets the answer, then the connection closes, as from nginx.
#[test]
fn a_request_followed_by_fin_is_answered() {
    let s = Setup::start();
    let ca = s.certs.ca_dir.join("ca.crt");
    let body = b"half-closed blob";
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("GET proxied", get("/v2/", false), 200),
        (
            "upload with a body",
            upload(&s.edge, &ca, "wire/fin", body),
            201,
        ),
        (
            "the edge's own answer",
            get("/v2/Bad/Name/manifests/x", false),
            400,
        ),
    ];
    for (what, request, status) in &cases {
        let mut tls = s.tls();
        tls.write_all(request).unwrap();
        tls.flush().unwrap();
        tls.conn.send_close_notify();
        tls.flush().unwrap();
        tls.sock.shutdown(Shutdown::Write).unwrap();
        let answer = read_all(&mut tls);
        assert_eq!(statuses(&answer), [*status], "{what}:\n{answer}");
    }
    // TLS without close_notify: the bare FIN ends the client's input as on plain HTTP.
    let mut tls = s.tls();
    tls.write_all(&get("/v2/", false)).unwrap();
    tls.flush().unwrap();
    tls.sock.shutdown(Shutdown::Write).unwrap();
    let answer = read_all(&mut tls);
    assert_eq!(statuses(&answer), [200], "a bare FIN over TLS:\n{answer}");
    let mut plain = s.plain();
    plain.write_all(&get("/v2/", false)).unwrap();
    plain.shutdown(Shutdown::Write).unwrap();
    let answer = read_all(&mut plain);
    assert_eq!(statuses(&answer), [301], "{answer}");
    // The real tool: OpenBSD netcat's -N shuts the socket down at the end of its input.
    if common::tool("nc").is_none() {
        return common::skip("nc -N", "nc is not installed (Debian netcat-openbsd)");
    }
    let out = common::run_with_input(
        std::process::Command::new("nc").args(["-N", "127.0.0.1", &s.edge.http_port.to_string()]),
        "GET /v2/ HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    let answer = String::from_utf8_lossy(&out.stdout);
    assert_eq!(statuses(&answer), [301], "nc -N: {answer}");
}

/// Requests the edge cannot pass on: (what, raw request, status). The first rows Pingora
/// refuses itself; from "a Host with a space" on, Pingora parses them and the edge's own
/// checks refuse them (`request::framing`), where they used to reach the registry.
const MALFORMED: [(&str, &str, u16); 17] = [
    ("userinfo in Host", "GET /v2/ HTTP/1.1\r\nHost: a@b\r\n\r\n", 400),
    ("request line", "GET /v2/ HTTP/1.1 extra\r\nHost: localhost\r\n\r\n", 400),
    ("header name", "GET /v2/ HTTP/1.1\r\nHost: localhost\r\nBad Header: x\r\n\r\n", 400),
    ("control byte", "GET /v2/ HTTP/1.1\r\nHost: localhost\r\nX-A: a\u{1}b\r\n\r\n", 400),
    ("Content-Length", "POST /v2/ HTTP/1.1\r\nHost: localhost\r\nContent-Length: abc\r\n\r\n", 400),
    (
        "two Content-Lengths",
        "POST /v2/ HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        400,
    ),
    (
        "Transfer-Encoding on HTTP/1.0",
        "POST /v2/ HTTP/1.0\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "a final coding other than chunked",
        "POST /v2/ HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip\r\n\r\n",
        400,
    ),
    ("a Host with a space", "GET /v2/ HTTP/1.1\r\nHost: local host\r\n\r\n", 400),
    ("a Host with a slash", "GET /v2/ HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    ("a Host with a bad port", "GET /v2/ HTTP/1.1\r\nHost: localhost:99999\r\n\r\n", 400),
    ("no Host on HTTP/1.1", "GET /v2/ HTTP/1.1\r\nUser-Agent: x\r\n\r\n", 400),
    ("double spaces in the request line", "GET  /v2/  HTTP/1.1\r\nHost: localhost\r\n\r\n", 400),
    ("an authority-form target", "GET localhost:8453 HTTP/1.1\r\nHost: localhost\r\n\r\n", 400),
    (
        "gzip under chunked",
        "POST /v2/ HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
    ),
    (
        "chunked twice",
        "POST /v2/ HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    ("CONNECT", "CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\n\r\n", 405),
];

/// The registry's JSON error with `status`, closing the connection.
fn assert_json_error(what: &str, answer: &str, status: u16) {
    assert_eq!(statuses(answer).first(), Some(&status), "{what}:\n{answer}");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((answer, ""));
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: application/json"),
        "{what}:\n{answer}"
    );
    assert!(lower.contains("connection: close"), "{what}:\n{answer}");
    let json: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}):\n{answer}"));
    assert!(json["errors"][0]["code"].is_string(), "{what}: {json}");
}

/// Every request the HTTPS listener can frame is answered in the registry's JSON format, the
/// ones Pingora refuses before the proxy sees them included; the redirect listener answers
/// them 400 instead of closing without a word. A pipelined malformed request after a good
/// one is answered too.
#[test]
fn malformed_requests_get_the_registrys_json_errors_on_both_listeners() {
    let s = Setup::start();
    for (what, request, status) in MALFORMED {
        let mut tls = s.tls();
        tls.write_all(request.as_bytes()).unwrap();
        assert_json_error(&format!("https: {what}"), &read_all(&mut tls), status);
        let mut plain = s.plain();
        plain.write_all(request.as_bytes()).unwrap();
        assert_json_error(&format!("http: {what}"), &read_all(&mut plain), status);
    }
    // A Content-Length sent as a list of one value reaches the node as that value.
    let mut tls = s.tls();
    let listed = b"POST /v2/wire/cl/blobs/uploads/ HTTP/1.1\r\nHost: localhost\r\n\
                   Content-Length: 2, 2\r\nConnection: close\r\n\r\nab";
    tls.write_all(listed).unwrap();
    let answer = read_all(&mut tls);
    assert_eq!(statuses(&answer), [202], "{answer}");
    // Both Content-Length and Transfer-Encoding: chunked wins, and the connection closes
    // after the answer (RFC 9112 §6.1), the next request on it unanswered.
    let mut tls = s.tls();
    let both = b"POST /v2/wire/te/blobs/uploads/ HTTP/1.1\r\nHost: localhost\r\n\
                 Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    tls.write_all(&[both.to_vec(), get("/v2/", false)].concat())
        .unwrap();
    let answer = read_all(&mut tls);
    assert_eq!(statuses(&answer), [202], "{answer}");
    assert!(answer.contains("Connection: close"), "{answer}");
    // After a good request on the same connection.
    let mut tls = s.tls();
    tls.write_all(&[get("/v2/", false), MALFORMED[0].1.as_bytes().to_vec()].concat())
        .unwrap();
    let answers = read_all(&mut tls);
    assert_eq!(statuses(&answers), [200, 400], "{answers}");
    let second = &answers[answers.rfind("HTTP/1.1 400").unwrap()..];
    assert_json_error("https: pipelined after a good request", second, 400);
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

/// The admin listener keeps its own answers (it is not the registry's API) and answers
/// pipelined requests in order too.
#[test]
fn the_admin_listener_answers_pipelined_requests() {
    let s = Setup::start();
    let mut admin = TcpStream::connect(("127.0.0.1", s.admin)).unwrap();
    admin
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    admin
        .write_all(&[get("/healthz", false), get("/nowhere", true)].concat())
        .unwrap();
    assert_eq!(statuses(&read_all(&mut admin)), [200, 404]);
}

/// An answer a request in flight gets during a drain (SIGTERM) says `Connection: close`, as
/// the connection then closes: over raw HTTP/1.1 (no `Expect`), for a proxied upload and for
/// the edge's own answer.
#[test]
fn answers_finished_during_a_drain_say_the_connection_closes() {
    let dir = tempfile::tempdir().unwrap();
    let certs = common::make_certs(dir.path());
    let registry = Registry::start(dir.path(), "node");
    let edge = Edge::start_with(
        dir.path(),
        &certs,
        "  shutdown_grace: 20s\n",
        &common::upstream_yaml(&[registry.addr()], "repository_hash"),
        "",
    );
    let ca = certs.ca_dir.join("ca.crt");
    let body = vec![9u8; 64 << 10];
    let request = upload(&edge, &ca, "wire/drain", &body);
    let (head, rest) = request.split_at(request.len() - 1000);
    let mut uploading = tls_connect(edge.https_port, &ca, &["http/1.1"]);
    uploading.write_all(head).unwrap();
    uploading.flush().unwrap();
    // An own answer (a bad name) still waiting for its body, too.
    let mut refused = tls_connect(edge.https_port, &ca, &["http/1.1"]);
    refused
        .write_all(
            b"PUT /v2/Bad/manifests/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n\r\nab",
        )
        .unwrap();
    common::wait_for(
        "the upload to reach the registry",
        Duration::from_secs(20),
        || (registry.upload_bytes_stored("wire/drain") > 0).then_some(()),
    );
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &edge.proc.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    common::wait_for("the drain to begin", Duration::from_secs(20), || {
        edge.log_text().contains("graceful stop").then_some(())
    });
    uploading.write_all(rest).unwrap();
    let answer = read_all(&mut uploading);
    assert_eq!(statuses(&answer), [201], "{answer}");
    assert!(answer.contains("Connection: close"), "{answer}");
    refused.write_all(b"cd").unwrap();
    let answer = read_all(&mut refused);
    assert!(answer.contains("Connection: close"), "{answer}");
}
