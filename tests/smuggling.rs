//! Request smuggling (issue 7): ambiguous framing is refused or normalised so the node can
//! never see a request boundary other than the edge's. Raw requests go over TLS from a
//! rustls client; a recording upstream parses what the edge sends (Content-Length and
//! chunked) and keeps every request per upstream connection.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{make_certs, upstream_yaml, wait_for, Edge};

/// One request as the node parsed it.
#[derive(Debug, Clone)]
struct Seen {
    connection: usize,
    head: String,
    body: Vec<u8>,
}

/// A node that parses requests strictly and answers each with 200 `{}`.
struct RecordingUpstream {
    addr: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Connections whose bytes did not parse as HTTP/1.1 (the node would be desynchronised).
    unparsable: Arc<Mutex<Vec<usize>>>,
    /// Connections closed by the edge in the middle of a request.
    aborted: Arc<Mutex<Vec<usize>>>,
}

enum End {
    /// The edge closed the connection between requests.
    Closed,
    /// The edge closed it mid-request: the node drops the partial request.
    Aborted,
}

impl RecordingUpstream {
    fn start() -> RecordingUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let unparsable = Arc::new(Mutex::new(Vec::new()));
        let aborted = Arc::new(Mutex::new(Vec::new()));
        let (record, broken, cut) = (seen.clone(), unparsable.clone(), aborted.clone());
        std::thread::spawn(move || {
            for (connection, stream) in listener.incoming().flatten().enumerate() {
                let (record, broken, cut) = (record.clone(), broken.clone(), cut.clone());
                std::thread::spawn(move || match serve(stream, connection, &record) {
                    Ok(End::Closed) => {}
                    Ok(End::Aborted) => cut.lock().unwrap().push(connection),
                    Err(()) => broken.lock().unwrap().push(connection),
                });
            }
        });
        RecordingUpstream {
            addr,
            seen,
            unparsable,
            aborted,
        }
    }

    /// Requests other than health checks.
    fn requests(&self) -> Vec<Seen> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|s| !s.head.starts_with("GET /v2/ "))
            .cloned()
            .collect()
    }
}

/// Parses requests until the peer closes; `Err` when the bytes are not valid framing.
fn serve(mut stream: TcpStream, connection: usize, record: &Mutex<Vec<Seen>>) -> Result<End, ()> {
    let mut buf = Vec::new();
    loop {
        let (head, head_len, length, chunked) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf).map_err(|_| ())? {
                httparse::Status::Complete(len) => {
                    let header = |name: &str| {
                        req.headers
                            .iter()
                            .filter(|h| h.name.eq_ignore_ascii_case(name))
                            .map(|h| String::from_utf8_lossy(h.value).to_string())
                            .collect::<Vec<_>>()
                    };
                    let lengths = header("content-length");
                    let encodings = header("transfer-encoding");
                    // A node seeing both, or two lengths, could frame differently from the edge.
                    if lengths.len() > 1 || (!lengths.is_empty() && !encodings.is_empty()) {
                        return Err(());
                    }
                    let length = lengths.first().map(|l| l.parse::<usize>().map_err(|_| ()));
                    let head = String::from_utf8_lossy(&buf[..len]).to_string();
                    break (head, len, length.transpose()?, !encodings.is_empty());
                }
                httparse::Status::Partial => {
                    if !read_more(&mut stream, &mut buf)? {
                        return Ok(if buf.is_empty() {
                            End::Closed
                        } else {
                            End::Aborted
                        });
                    }
                }
            }
        };
        buf.drain(..head_len);
        let body = if chunked {
            match read_chunked(&mut stream, &mut buf)? {
                Some(body) => body,
                None => return Ok(End::Aborted),
            }
        } else {
            let n = length.unwrap_or(0);
            while buf.len() < n {
                if !read_more(&mut stream, &mut buf)? {
                    return Ok(End::Aborted);
                }
            }
            buf.drain(..n).collect()
        };
        record.lock().unwrap().push(Seen {
            connection,
            head,
            body,
        });
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            .map_err(|_| ())?;
    }
}

fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<bool, ()> {
    let mut chunk = [0u8; 16384];
    match stream.read(&mut chunk) {
        Ok(0) => Ok(false),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(true)
        }
        Err(_) => Ok(false),
    }
}

/// The decoded body; `None` when the connection closes before its end.
fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>, ()> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            if !read_more(stream, buf)? {
                return Ok(None);
            }
        };
        let size = std::str::from_utf8(&buf[..line_end]).map_err(|_| ())?;
        let size = usize::from_str_radix(size.trim(), 16).map_err(|_| ())?;
        buf.drain(..line_end + 2);
        while buf.len() < size + 2 {
            if !read_more(stream, buf)? {
                return Ok(None);
            }
        }
        if &buf[size..size + 2] != b"\r\n" {
            return Err(());
        }
        body.extend(buf.drain(..size));
        buf.drain(..2);
        if size == 0 {
            return Ok(Some(body));
        }
    }
}

/// Sends raw bytes over TLS and returns the status of the first response (0 if none).
fn send_raw(edge: &Edge, ca: &std::path::Path, raw: &[u8]) -> u16 {
    let mut tls = common::tls_connect(edge.https_port, ca, &["http/1.1"]);
    tls.write_all(raw).unwrap();
    tls.flush().unwrap();
    common::read_head(&mut tls).0
}

#[test]
fn ambiguous_framing_is_refused_or_normalised() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let upstream = RecordingUpstream::start();
    let edge = Edge::start(
        dir.path(),
        &certs,
        &upstream_yaml(std::slice::from_ref(&upstream.addr), "repository_hash"),
        "",
    );
    let ca = certs.ca_dir.join("ca.crt");
    wait_for("the node to be healthy", Duration::from_secs(30), || {
        (send_raw(
            &edge,
            &ca,
            b"GET /v2/probe/x/tags/list HTTP/1.1\r\nHost: localhost\r\n\r\n",
        ) == 200)
            .then_some(())
    });
    let post = "POST /v2/alice/app/blobs/uploads/ HTTP/1.1\r\nHost: localhost\r\n";

    // Refused outright: the node sees nothing of them.
    for (what, extra) in [
        (
            "two different Content-Lengths",
            "Content-Length: 4\r\nContent-Length: 40\r\n\r\nabcd",
        ),
        ("a signed Content-Length", "Content-Length: +4\r\n\r\nabcd"),
        (
            "chunked not last",
            "Transfer-Encoding: chunked, identity\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
        ),
    ] {
        let before = upstream.requests().len();
        let status = send_raw(&edge, &ca, format!("{post}{extra}").as_bytes());
        assert_eq!(status, 400, "{what}");
        assert_eq!(
            upstream.requests().len(),
            before,
            "{what}: nothing reached the node"
        );
    }

    // Normalised: Content-Length + Transfer-Encoding is framed by chunked alone, so the
    // request "hidden" after the terminating chunk is never part of the POST's body.
    let smuggle = format!(
        "{post}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
         GET /v2/smuggled/x/tags/list HTTP/1.1\r\nHost: localhost\r\n\r\n"
    );
    assert_eq!(send_raw(&edge, &ca, smuggle.as_bytes()), 200);
    let identity_chunked =
        format!("{post}Transfer-Encoding: identity, chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n");
    assert_eq!(send_raw(&edge, &ca, identity_chunked.as_bytes()), 200);

    // An invalid chunk size mid-body: 400 to the client, and the node connection that had
    // received the request head is not reused for anyone else's request.
    let bad_chunk = format!("{post}Transfer-Encoding: chunked\r\n\r\nzz\r\nabcd\r\n0\r\n\r\n");
    assert_eq!(send_raw(&edge, &ca, bad_chunk.as_bytes()), 400);
    let after = "GET /v2/after/x/tags/list HTTP/1.1\r\nHost: localhost\r\n\r\n";
    assert_eq!(send_raw(&edge, &ca, after.as_bytes()), 200);

    let requests = upstream.requests();
    for r in &requests {
        let lower = r.head.to_ascii_lowercase();
        assert!(
            !(lower.contains("content-length:") && lower.contains("transfer-encoding:")),
            "node saw both framings: {}",
            r.head
        );
        assert!(
            !String::from_utf8_lossy(&r.body).contains("smuggled"),
            "a request travelled inside a body: {r:?}"
        );
    }
    let posts: Vec<&Seen> = requests
        .iter()
        .filter(|r| r.head.starts_with("POST "))
        .collect();
    assert_eq!(posts.len(), 2, "the two normalised POSTs: {requests:?}");
    assert_eq!(posts[0].body, b"", "CL+TE framed by chunked: empty body");
    assert_eq!(posts[1].body, b"abcd");
    assert!(
        upstream.unparsable.lock().unwrap().is_empty(),
        "every node connection stayed in sync"
    );
    assert!(
        requests.iter().all(|r| !r.head.contains("abcd")),
        "no body bytes were read as a request head"
    );
    let after_seen = requests
        .iter()
        .find(|r| r.head.starts_with("GET /v2/after/"))
        .expect("the request after the bad chunk arrived");
    // The bad-chunk POST's head reached a node connection that the edge then cut: that
    // connection is closed, never handed to the next request.
    let aborted = upstream.aborted.lock().unwrap().clone();
    assert!(
        !aborted.contains(&after_seen.connection),
        "the next request went over the cut connection {aborted:?}"
    );
}
