//! Answers written straight to an HTTP/1 connection, below Pingora, in the registry's JSON
//! error format: the 431 for a header block over the limits (`header_limit`), and the JSON
//! form of the refusals Pingora writes itself before the proxy sees a request.
//!
//! Pingora answers a request it cannot frame (a malformed request line, header or `Host`,
//! an invalid `Content-Length`) with an empty `400`, and `CONNECT` with an empty `405`, from
//! `HttpProxy::handle_new_request`, before any `ProxyHttp` hook runs. The proxy's listener
//! knows no request is in progress then (the connection's watch is in its headers or idle
//! phase; the proxy moves it to busy in its first hook), so a response head written in
//! that phase can only be one of those, and [`for_pingora_answer`] gives the JSON answer
//! to write instead.

use crate::error::RegistryError;

/// The whole HTTP/1.1 answer for `error` (header block and JSON body, or the header block
/// alone for a HEAD request), closing the connection.
pub(super) fn raw_answer(error: &RegistryError, head: bool) -> Vec<u8> {
    let body = error.body();
    let status = error.status();
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut answer = format!(
        "HTTP/1.1 {status} {reason}\r\n\
         Content-Type: application/json\r\n\
         Docker-Distribution-Api-Version: registry/2.0\r\n\
         Cache-Control: no-store\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head {
        answer.extend_from_slice(&body);
    }
    answer
}

/// The JSON answer to write in place of `written`, when `written` starts a response head
/// (`HTTP/1.x NNN `) with a 4xx status; `None` for anything else.
pub(super) fn for_pingora_answer(written: &[u8], head: bool) -> Option<Vec<u8>> {
    let rest = written
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| written.strip_prefix(b"HTTP/1.0 "))?;
    let status: u16 = std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()?;
    if !(400..500).contains(&status) {
        return None;
    }
    Some(raw_answer(&RegistryError::from_status(status), head))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pingoras_empty_refusals_become_json() {
        let pingora_400 =
            b"HTTP/1.1 400 Bad Request\r\nServer: Pingora\r\nContent-Length: 0\r\n\r\n";
        let answer = String::from_utf8(for_pingora_answer(pingora_400, false).unwrap()).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["errors"][0]["code"], "UNSUPPORTED");
        let connect =
            for_pingora_answer(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n", false).unwrap();
        assert!(connect.starts_with(b"HTTP/1.1 405 Method Not Allowed\r\n"));
        // To HEAD: the header block alone.
        let to_head = for_pingora_answer(pingora_400, true).unwrap();
        assert!(to_head.ends_with(b"\r\n\r\n"));
        // Anything else is left alone.
        assert!(for_pingora_answer(b"HTTP/1.1 200 OK\r\n\r\n", false).is_none());
        assert!(for_pingora_answer(b"0\r\n\r\n", false).is_none());
        assert!(for_pingora_answer(b"HTTP/1.1 4", false).is_none());
    }
}
