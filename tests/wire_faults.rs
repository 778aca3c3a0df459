//! Faults on the wire found by replaying public bug reports (issue 29), on the HTTPS
//! listener (raw TLS) and the plain-HTTP redirect listener (raw TCP): pipelined requests, a
//! request followed by the client's FIN, requests Pingora cannot frame. (How client faults
//! are logged: `tests/logs.rs`; answers during a drain: `tests/shutdown.rs`.)
//!
//! curl cannot send these: it dropped pipelining in 7.65.0 and never half-closes a
//! connection, so they are written by hand; the requests proxied go to the real registry.

mod common;

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use common::raw::{get, read_all, statuses, upload};
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
