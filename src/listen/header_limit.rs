//! HTTP/1 header limits enforced as the block arrives, before Pingora parses it: at most
//! [`MAX_HEADER_LINES`] fields and [`MAX_HEADER_BYTES`] bytes, answered 431 in the
//! registry's error format. HTTP/2 blocks arrive whole and are measured by the proxy.

use std::sync::LazyLock;

use super::raw_answer::raw_answer;
use crate::error::RegistryError;

use crate::request::{MAX_HEADER_BYTES, MAX_HEADER_LINES};

/// Counts the lines and bytes of an HTTP/1 header block as it arrives.
#[derive(Default)]
pub(super) struct HeaderScan {
    lines: usize,
    bytes: usize,
    line_len: usize,
    done: bool,
    /// The block's first bytes, enough to tell a HEAD request (answered without a body).
    start: [u8; 5],
}

impl HeaderScan {
    /// Whether the block is still within [`MAX_HEADER_LINES`] and [`MAX_HEADER_BYTES`].
    pub(super) fn within_limits(&mut self, data: &[u8]) -> bool {
        for &b in data {
            if self.done {
                return true;
            }
            if let Some(slot) = self.start.get_mut(self.bytes) {
                *slot = b;
            }
            self.bytes += 1;
            match b {
                b'\n' if self.line_len == 0 => self.done = self.lines > 0,
                b'\n' => {
                    self.lines += 1;
                    self.line_len = 0;
                }
                b'\r' => {}
                _ => self.line_len += 1,
            }
            if self.bytes > MAX_HEADER_BYTES || self.lines > MAX_HEADER_LINES + 1 {
                return false;
            }
        }
        true
    }
}

impl HeaderScan {
    /// Whether the request being scanned is a HEAD (RFC 9110 §9.3.2: no body in the answer).
    pub(super) fn is_head(&self) -> bool {
        &self.start == b"HEAD "
    }
}

/// The raw HTTP/1 431 answer, in the registry's error format.
pub(super) static REFUSAL: LazyLock<Vec<u8>> = LazyLock::new(|| raw_answer(&TOO_LARGE, false));

/// [`REFUSAL`] to a HEAD request: its header block alone.
pub(super) static REFUSAL_TO_HEAD: LazyLock<Vec<u8>> =
    LazyLock::new(|| raw_answer(&TOO_LARGE, true));

const TOO_LARGE: RegistryError = RegistryError::HeadersTooLarge {
    max_headers: MAX_HEADER_LINES,
    max_bytes: MAX_HEADER_BYTES,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> bool {
        let mut scan = HeaderScan::default();
        chunks.iter().all(|c| scan.within_limits(c))
    }

    #[test]
    fn header_scan_counts_lines_across_reads_and_stops_at_the_blank_line() {
        assert!(scan(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]));
        let many: String = (0..MAX_HEADER_LINES)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect();
        let request = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(scan(&[request.as_bytes()]));
        let (a, b) = request.as_bytes().split_at(17);
        assert!(scan(&[a, b]));
        let too_many = format!("GET / HTTP/1.1\r\n{many}X-last: v\r\n\r\n");
        assert!(!scan(&[too_many.as_bytes()]));
        // What follows the header block is a body, not headers.
        let body = "x\n".repeat(MAX_HEADER_BYTES);
        assert!(scan(&[request.as_bytes(), body.as_bytes()]));
        let big = format!(
            "GET / HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEADER_BYTES)
        );
        assert!(!scan(&[big.as_bytes()]));
    }

    #[test]
    fn refusal_is_a_complete_http_answer() {
        let text = String::from_utf8(REFUSAL.clone()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert!(body.contains("\"errors\""));
        // To HEAD: the same header block (Content-Length included), no body.
        let to_head = String::from_utf8(REFUSAL_TO_HEAD.clone()).unwrap();
        assert_eq!(to_head, format!("{head}\r\n\r\n"));
    }

    #[test]
    fn scan_tells_head_requests() {
        let mut scan = HeaderScan::default();
        assert!(scan.within_limits(b"HE"));
        assert!(scan.within_limits(b"AD / HTTP/1.1\r\n"));
        assert!(scan.is_head());
        let mut scan = HeaderScan::default();
        assert!(scan.within_limits(b"HEADX / HTTP/1.1\r\n"));
        assert!(!scan.is_head());
        let mut scan = HeaderScan::default();
        assert!(scan.within_limits(b"GET / HTTP/1.1\r\n"));
        assert!(!scan.is_head());
    }
}
