//! Raw HTTP/1.1 on a socket, for what curl cannot send (pipelined requests, a half-closed
//! connection, malformed heads): request texts and reading the answers back.

use std::io::Read;
use std::path::Path;

use super::Edge;

/// Everything the server sends until it closes (or the read timeout).
pub fn read_all(stream: &mut impl Read) -> String {
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
pub fn statuses(text: &str) -> Vec<u16> {
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| text.get(at + 9..at + 12)?.parse().ok())
        .collect()
}

/// The closing `PUT …&digest=` of a blob upload started (through the edge) in `repository`,
/// carrying all of `body`: the request text.
pub fn upload(edge: &Edge, ca: &Path, repository: &str, body: &[u8]) -> Vec<u8> {
    let url = edge.url(&format!("/v2/{repository}/blobs/uploads/"));
    let location = super::start_upload(&url, ca.to_str().unwrap(), &[]);
    let path = &location[location.find("/v2/").unwrap()..];
    let mut request = format!(
        "PUT {path}&digest={} HTTP/1.1\r\nHost: localhost\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        super::digest(body),
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// A GET of `path`, asking to close the connection after it when `last`.
pub fn get(path: &str, last: bool) -> Vec<u8> {
    let connection = if last { "Connection: close\r\n" } else { "" };
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{connection}\r\n").into_bytes()
}
