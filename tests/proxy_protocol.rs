//! PROXY protocol (issue 8): behind an L4 load balancer, the v1 or v2 header the balancer
//! writes names the client that X-Forwarded-For, X-Real-IP and the access log show. On such
//! listeners a connection without a valid header is refused.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::echo::EchoUpstream;
use common::{make_certs, tls_over, upstream_yaml, wait_for, Certs, Edge};

/// An edge with PROXY listeners; `balancers` is `forwarded.trusted_proxies`, `extra` more config.
fn edge_trusting(
    dir: &std::path::Path,
    balancers: &str,
    extra: &str,
) -> (Certs, EchoUpstream, Edge) {
    let certs = make_certs(dir);
    let upstream = EchoUpstream::start();
    let nodes = upstream_yaml(std::slice::from_ref(&upstream.addr), "round_robin");
    let server = "  shutdown_grace: 1s\n  proxy_protocol: true\n";
    let trust = format!("forwarded:\n  trusted_proxies: [{balancers}]\n{extra}");
    // Edge::start waits with a plain curl, which this listener refuses: start it by hand.
    let edge = Edge::start_unchecked(dir, &certs, server, &nodes, &trust);
    (certs, upstream, edge)
}

/// The tests' balancer is on loopback.
fn edge(dir: &std::path::Path) -> (Certs, EchoUpstream, Edge) {
    edge_trusting(dir, "\"127.0.0.1/32\"", "")
}

fn v2_header(client: &str, edge_port: u16) -> Vec<u8> {
    let client: SocketAddr = client.parse().unwrap();
    let local: SocketAddr = if client.is_ipv4() {
        format!("127.0.0.1:{edge_port}").parse().unwrap()
    } else {
        format!("[::1]:{edge_port}").parse().unwrap()
    };
    ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (client, local),
    )
    .build()
    .unwrap()
}

/// Sends `header`, then a GET over TLS; returns the echoed request head the node saw.
fn echoed_through(edge: &Edge, certs: &Certs, header: &[u8], path: &str) -> String {
    let mut tcp = TcpStream::connect(("127.0.0.1", edge.https_port)).unwrap();
    tcp.write_all(header).unwrap();
    let mut tls = tls_over(tcp, &certs.ca_dir.join("ca.crt"), &["http/1.1"]);
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).to_string();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}

fn header_value<'a>(echo: &'a str, name: &str) -> Option<&'a str> {
    echo.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn proxy_headers_name_the_client_and_plain_connections_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, _upstream, edge) = edge(dir.path());
    wait_for(
        "the edge to listen",
        std::time::Duration::from_secs(30),
        || TcpStream::connect(("127.0.0.1", edge.https_port)).ok(),
    );

    // v1, IPv4.
    let v1 = format!(
        "PROXY TCP4 203.0.113.7 127.0.0.1 51234 {}\r\n",
        edge.https_port
    );
    let echo = echoed_through(&edge, &certs, v1.as_bytes(), "/v2/pp/one/tags/list");
    assert_eq!(
        header_value(&echo, "x-forwarded-for"),
        Some("203.0.113.7"),
        "{echo}"
    );
    assert_eq!(header_value(&echo, "x-real-ip"), Some("203.0.113.7"));

    // v2, IPv6; a spoofed X-Forwarded-For from the (untrusted) client is still replaced.
    let mut tcp = TcpStream::connect(("127.0.0.1", edge.https_port)).unwrap();
    tcp.write_all(&v2_header("[2001:db8::5]:40000", edge.https_port))
        .unwrap();
    let mut tls = tls_over(tcp, &certs.ca_dir.join("ca.crt"), &["http/1.1"]);
    tls.write_all(
        b"GET /v2/pp/two/tags/list HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: 10.9.9.9\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response);
    let echo = String::from_utf8_lossy(&response).to_string();
    assert_eq!(
        header_value(&echo, "x-forwarded-for"),
        Some("2001:db8::5"),
        "{echo}"
    );

    // The balancer's own health check (v2 LOCAL) keeps the socket's address.
    let local = ppp::v2::Builder::new(
        ppp::v2::Version::Two | ppp::v2::Command::Local,
        ppp::v2::AddressFamily::Unspecified | ppp::v2::Protocol::Unspecified,
    )
    .build()
    .unwrap();
    let echo = echoed_through(&edge, &certs, &local, "/v2/pp/local/tags/list");
    assert_eq!(header_value(&echo, "x-forwarded-for"), Some("127.0.0.1"));

    // The access log shows the named clients (written by a background appender: poll).
    let log = wait_for(
        "both access lines",
        std::time::Duration::from_secs(10),
        || {
            let log = edge.log_text();
            (log.contains("client=203.0.113.7") && log.contains("client=2001:db8::5"))
                .then_some(log)
        },
    );
    assert!(log.contains("client=203.0.113.7"), "{log}");
    assert!(log.contains("client=2001:db8::5"), "{log}");

    // No header: refused before TLS, on the TLS and on the plain listener.
    let tcp = TcpStream::connect(("127.0.0.1", edge.https_port)).unwrap();
    let mut plain = tls_over(tcp, &certs.ca_dir.join("ca.crt"), &["http/1.1"]);
    let handshake = plain.write_all(b"GET /v2/ HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let mut buf = [0u8; 64];
    let answered = handshake.is_ok() && matches!(plain.read(&mut buf), Ok(n) if n > 0);
    assert!(!answered, "a connection without a PROXY header was served");
    let mut http = TcpStream::connect(("127.0.0.1", edge.http_port)).unwrap();
    http.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    http.write_all(b"GET /v2/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    assert!(
        !matches!(http.read(&mut buf), Ok(n) if n > 0),
        "the plain listener served a connection without a PROXY header"
    );
    // The log is written through a background appender: poll for the line.
    wait_for(
        "the refusal in the log",
        std::time::Duration::from_secs(10),
        || {
            edge.log_text()
                .contains("no valid PROXY header")
                .then_some(())
        },
    );

    // With a header the plain listener redirects as usual.
    let mut http = TcpStream::connect(("127.0.0.1", edge.http_port)).unwrap();
    http.write_all(format!("PROXY TCP4 198.51.100.2 127.0.0.1 4000 {}\r\nGET /v2/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", edge.http_port).as_bytes())
        .unwrap();
    let mut redirect = String::new();
    let _ = http.read_to_string(&mut redirect);
    assert!(redirect.starts_with("HTTP/1.1 301"), "{redirect}");
}

#[test]
fn proxy_headers_from_peers_outside_trusted_proxies_are_refused_logged_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let admin = common::free_port();
    // The balancer is 192.0.2.1; this test connects from 127.0.0.1 like an attacker would.
    let (certs, upstream, edge) = edge_trusting(
        dir.path(),
        "\"192.0.2.1/32\"",
        &format!("admin:\n  listen: \"127.0.0.1:{admin}\"\n"),
    );
    wait_for(
        "the admin listener",
        std::time::Duration::from_secs(30),
        || TcpStream::connect(("127.0.0.1", admin)).ok(),
    );
    for header in [
        format!(
            "PROXY TCP4 203.0.113.9 127.0.0.1 51234 {}\r\n",
            edge.https_port
        )
        .into_bytes(),
        v2_header("203.0.113.9:40000", edge.https_port),
    ] {
        let mut tcp = TcpStream::connect(("127.0.0.1", edge.https_port)).unwrap();
        tcp.write_all(&header).unwrap();
        let mut tls = tls_over(tcp, &certs.ca_dir.join("ca.crt"), &["http/1.1"]);
        let sent = tls.write_all(
            b"GET /v2/spoof/tags/list HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        );
        let mut buf = [0u8; 64];
        let answered = sent.is_ok() && matches!(tls.read(&mut buf), Ok(n) if n > 0);
        assert!(
            !answered,
            "a PROXY header from an untrusted peer was served"
        );
    }
    // The plain listener too.
    let mut http = TcpStream::connect(("127.0.0.1", edge.http_port)).unwrap();
    http.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    http.write_all(format!("PROXY TCP4 203.0.113.9 127.0.0.1 4000 {}\r\nGET /v2/ HTTP/1.1\r\nHost: localhost\r\n\r\n", edge.http_port).as_bytes())
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(!matches!(http.read(&mut buf), Ok(n) if n > 0));

    assert!(
        upstream.seen.lock().unwrap().is_empty(),
        "a spoofed request reached the node"
    );
    let log = wait_for(
        "the refusals in the log",
        std::time::Duration::from_secs(10),
        || {
            let log = edge.log_text();
            (log.matches("outside forwarded.trusted_proxies").count() >= 3).then_some(log)
        },
    );
    assert!(log.contains("claiming 203.0.113.9"), "{log}");
    assert!(!log.contains("client=203.0.113.9"), "{log}");
    let metrics = common::admin_metrics(admin);
    let refused = common::metric(
        &metrics,
        "registry_edge_proxy_protocol_refused_total{reason=\"untrusted_peer\"}",
    );
    assert_eq!(refused, Some(3.0), "{metrics}");
}

#[test]
fn a_reload_cannot_empty_the_trust_list_of_running_proxy_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let upstream = EchoUpstream::start();
    let nodes = upstream_yaml(std::slice::from_ref(&upstream.addr), "round_robin");
    let pid_file = dir.path().join("edge.pid");
    let server = format!(
        "  shutdown_grace: 1s\n  proxy_protocol: true\n  pid_file: {}\n",
        pid_file.display()
    );
    let trust = "forwarded:\n  trusted_proxies: [\"127.0.0.1/32\"]\n";
    let edge = Edge::start_unchecked(dir.path(), &certs, &server, &nodes, trust);
    wait_for("the pid file", std::time::Duration::from_secs(30), || {
        std::fs::read_to_string(&pid_file).ok()
    });
    // Planned for the next restart: PROXY off and no balancers. Applied now, the trust list
    // would refuse every connection the still-running PROXY listeners get.
    let text = std::fs::read_to_string(&edge.config).unwrap();
    let next = text
        .replace("proxy_protocol: true", "proxy_protocol: false")
        .replace("[\"127.0.0.1/32\"]", "[]");
    std::fs::write(&edge.config, next).unwrap();
    common::reload(&pid_file);
    let line = wait_for("the rejection", std::time::Duration::from_secs(10), || {
        edge.log_text()
            .lines()
            .find(|l| l.contains("reload rejected"))
            .map(str::to_string)
    });
    assert!(line.contains("forwarded.trusted_proxies"), "{line}");
    // The balancer still gets through.
    let v1 = format!(
        "PROXY TCP4 203.0.113.7 127.0.0.1 51234 {}\r\n",
        edge.https_port
    );
    let echo = echoed_through(&edge, &certs, v1.as_bytes(), "/v2/pp/after/tags/list");
    assert_eq!(header_value(&echo, "x-forwarded-for"), Some("203.0.113.7"));
}

/// Two connections whose balancer declares the same client address and port keep their own
/// deadlines: a request on one does not take the other's watch (the watch map is keyed by
/// the accepted connection, not by the declared address).
#[test]
fn connections_declaring_the_same_client_keep_their_own_deadlines() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let upstream = EchoUpstream::start();
    let nodes = upstream_yaml(std::slice::from_ref(&upstream.addr), "round_robin");
    let server = "  shutdown_grace: 1s\n  proxy_protocol: true\n  header_timeout: 1s\n";
    let trust = "forwarded:\n  trusted_proxies: [\"127.0.0.1/32\"]\n";
    let edge = Edge::start_unchecked(dir.path(), &certs, server, &nodes, trust);
    wait_for("the edge to listen", Duration::from_secs(30), || {
        TcpStream::connect(("127.0.0.1", edge.https_port)).ok()
    });
    let same = format!(
        "PROXY TCP4 203.0.113.7 127.0.0.1 40000 {}\r\n",
        edge.https_port
    );
    let connect = || {
        let mut tcp = TcpStream::connect(("127.0.0.1", edge.https_port)).unwrap();
        tcp.write_all(same.as_bytes()).unwrap();
        tls_over(tcp, &certs.ca_dir.join("ca.crt"), &["http/1.1"])
    };
    let mut busy = connect();
    // Complete the handshake before the second connection registers.
    busy.conn.complete_io(&mut busy.sock).unwrap();
    let mut idle = connect();
    idle.conn.complete_io(&mut idle.sock).unwrap();
    // A request on the first whose body arrives slowly: past header_timeout, which no
    // longer applies once its head is in.
    let body = b"slow body";
    let head = format!(
        "POST /v2/pp/slow/blobs/uploads/ HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    busy.write_all(head.as_bytes()).unwrap();
    busy.write_all(&body[..4]).unwrap();
    busy.flush().unwrap();
    // The client is slow (this is the case under test, not a wait for the edge).
    std::thread::sleep(Duration::from_millis(2500));
    busy.write_all(&body[4..]).unwrap();
    let mut answer = Vec::new();
    let _ = busy.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The second, which never sent a request, was closed at its own header deadline.
    let (_, closed) = common::wait_closed(&mut idle);
    assert!(
        closed,
        "the idle connection was not closed at its header_timeout"
    );
}
