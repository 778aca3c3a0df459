//! A small HTTP/1.1 response leaves the edge as one TLS record (issue 18): the response
//! header and body are written separately by Pingora, and without the edge's write buffer
//! each write became a record of its own (and a `sendto` of its own). A relay between the
//! client and the edge counts the application-data records the edge sends.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{edge_with_node, tls_connect};

/// TLS record content type of application data (RFC 8446 §5.1), which under TLS 1.3 also
/// carries encrypted handshake messages such as session tickets.
const APPLICATION_DATA: u8 = 23;

/// Forwards one connection to `target`, counting the records coming back from it.
struct Relay {
    port: u16,
    records: Arc<AtomicUsize>,
}

impl Relay {
    fn start(target: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let records = Arc::new(AtomicUsize::new(0));
        let counter = records.clone();
        // The threads end when either side closes; they hold nothing else.
        std::thread::spawn(move || {
            let (client, _) = listener.accept().unwrap();
            let edge = TcpStream::connect(("127.0.0.1", target)).unwrap();
            let (mut client_in, mut edge_out) =
                (client.try_clone().unwrap(), edge.try_clone().unwrap());
            std::thread::spawn(move || std::io::copy(&mut client_in, &mut edge_out));
            count_records(edge, client, &counter);
        });
        Relay { port, records }
    }

    fn records(&self) -> usize {
        self.records.load(Ordering::SeqCst)
    }
}

/// Copies `from` to `to`, counting each complete application-data record before the bytes
/// that complete it are passed on (so a client that has read a response has been counted).
fn count_records(mut from: TcpStream, mut to: TcpStream, counter: &AtomicUsize) {
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        pending.extend_from_slice(&chunk[..n]);
        while pending.len() >= 5 {
            let length = u16::from_be_bytes([pending[3], pending[4]]) as usize;
            if pending.len() < 5 + length {
                break;
            }
            if pending[0] == APPLICATION_DATA {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            pending.drain(..5 + length);
        }
        if to.write_all(&chunk[..n]).is_err() {
            return;
        }
    }
}

/// Sends `GET /v2/` and reads the whole response (head and `Content-Length` body).
fn get(tls: &mut impl ReadWrite) -> String {
    tls.write_all(b"GET /v2/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tls.read(&mut chunk).unwrap();
        assert!(
            n > 0,
            "the edge closed the connection: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("a Content-Length");
            if got.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

#[test]
fn a_small_http1_response_is_one_tls_record() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, _registry, edge) = edge_with_node(dir.path(), "");
    let relay = Relay::start(edge.https_port);
    let mut tls = tls_connect(relay.port, &certs.ca_dir.join("ca.crt"), &["http/1.1"]);
    // The first exchange also carries TLS 1.3 session tickets; count from the second.
    let first = get(&mut tls);
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    for attempt in 0..3 {
        let before = relay.records();
        let response = get(&mut tls);
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert_eq!(
            relay.records() - before,
            1,
            "request {attempt}: records for one {}-byte response",
            response.len()
        );
    }
}
