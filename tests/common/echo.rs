//! A tiny upstream that answers every request with its own request line and headers,
//! counting how often each connection is reused: the only way to observe what the edge
//! sends a node. [`stand_in`] is the node underneath, for stand-ins with other answers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// Answers every request with its own request line and headers as the body.
pub struct EchoUpstream {
    pub addr: String,
    /// Request lines received, health checks (`GET /v2/`) excluded.
    pub seen: Arc<Mutex<Vec<String>>>,
}

impl EchoUpstream {
    pub fn start() -> EchoUpstream {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let addr = stand_in(move |head, served| {
            let request_line = head.lines().next().unwrap_or_default().to_string();
            if !request_line.starts_with("GET /v2/ ") {
                record.lock().unwrap().push(request_line);
            }
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Served-On-Connection: {served}\r\nContent-Length: {}\r\n\r\n{head}",
                head.len()
            )
        });
        EchoUpstream { addr, seen }
    }
}

/// A node of the test's own on a free loopback port: reads each request (head, and a body
/// of `Content-Length` bytes) and writes what `reply` makes of its head and of how many
/// requests its connection served (this one included). Returns its address.
pub fn stand_in(reply: impl Fn(&str, usize) -> String + Send + Sync + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let reply = Arc::new(reply);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let reply = reply.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                let mut served = 0;
                loop {
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        head.push_str(&line);
                    }
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().to_string())
                        })
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    served += 1;
                    if writer.write_all(reply(&head, served).as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// An edge (dev certificates, round robin) in front of a fresh echo upstream; `extra` is
/// appended to its config.
pub fn echo_edge(dir: &std::path::Path, extra: &str) -> (super::Certs, EchoUpstream, super::Edge) {
    echo_edge_with(dir, "  shutdown_grace: 1s\n", extra)
}

/// Like [`echo_edge`], with extra lines inside `server:` (see [`super::Edge::start_with`]).
pub fn echo_edge_with(
    dir: &std::path::Path,
    server_extra: &str,
    extra: &str,
) -> (super::Certs, EchoUpstream, super::Edge) {
    let certs = super::make_certs(dir);
    let upstream = EchoUpstream::start();
    let nodes = super::upstream_yaml(std::slice::from_ref(&upstream.addr), "round_robin");
    let edge = super::Edge::start_with(dir, &certs, server_extra, &nodes, extra);
    (certs, upstream, edge)
}
