//! Which part of an entry a request gets, decided as the registry decides it for the
//! endpoint asked, so a cached answer and the registry's own never differ.
//!
//! - **Blobs**: distribution serves them with Go's `http.ServeContent` (its
//!   `registry/storage/blobserver.go`), with the digest as a strong `ETag` and no
//!   modification time, which makes RFC 9110 §13.2.2's order: `If-Match` (strong
//!   comparison, lists, `*`) → 412; `If-None-Match` (weak comparison, lists, `*`) → 304; `If-Range` holds only for the strong `ETag` (a weak tag
//!   or a date never: there is no `Last-Modified`), else the whole blob; then one
//!   satisfiable `Range` → 206, one starting past the end → 416 (Go's "failed to overlap").
//!   `If-Modified-Since` and `If-Unmodified-Since` are ignored (no modification time).
//!   What the cache does not reproduce goes to the registry: several ranges (multipart), a
//!   malformed range. (The registry's own 412 and 416 keep distribution's `Content-Length`
//!   of the whole blob over a shorter body; the cache's are framed right.)
//! - **Manifests**: distribution's manifest handler answers 304 only when one
//!   `If-None-Match` header line equals the digest, quoted or not (its `etagMatch`), and
//!   ignores every other condition and `Range`.

use http::HeaderMap;

use super::range::{wanted, Wanted};
use super::store::Kind;

/// The answer's status and the bytes `start..end` of the entry it carries.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Part {
    pub status: u16,
    pub start: u64,
    pub end: u64,
}

/// The part of an entry of `size` bytes, digest `digest`, that a request with `headers`
/// to a `kind` endpoint gets; `None` when the registry answers it.
pub(super) fn part(headers: &HeaderMap, kind: Kind, digest: &str, size: u64) -> Option<Part> {
    let whole = Part {
        status: 200,
        start: 0,
        end: size,
    };
    let status = |status| Part {
        status,
        start: 0,
        end: 0,
    };
    if kind == Kind::Manifest {
        let matches = values(headers, "if-none-match").any(|v| {
            let v = v.trim();
            v == digest || v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) == Some(digest)
        });
        return Some(if matches { status(304) } else { whole });
    }
    let etag = format!("\"{digest}\"");
    if headers.contains_key("if-match") && !any_tag(headers, "if-match", |t| t == etag) {
        return Some(status(412));
    }
    let weak_match = |t: &str| t.strip_prefix("W/").unwrap_or(t) == etag;
    if any_tag(headers, "if-none-match", weak_match) {
        return Some(status(304));
    }
    let range = values(headers, "range").next();
    let if_range = values(headers, "if-range").next();
    if range.is_none() || if_range.is_some_and(|v| v.trim() != etag) {
        return Some(whole);
    }
    match wanted(range, size) {
        Wanted::Whole => Some(whole),
        Wanted::Part { start, end } => Some(Part {
            status: 206,
            start,
            end: end + 1,
        }),
        Wanted::Unsatisfiable => Some(status(416)),
        Wanted::Other => None,
    }
}

fn values<'a>(headers: &'a HeaderMap, name: &str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
}

/// Whether any entity tag listed in the `name` header lines is `*` or passes `matches`.
fn any_tag(headers: &HeaderMap, name: &str, matches: impl Fn(&str) -> bool) -> bool {
    values(headers, name)
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || matches(tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:aaaa";

    /// (status, start, end); status 0: the registry answers.
    fn asked(kind: Kind, headers: &[(&str, &str)]) -> (u16, u64, u64) {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        part(&map, kind, DIGEST, 100).map_or((0, 0, 0), |p| (p.status, p.start, p.end))
    }

    #[test]
    fn blobs_follow_go_serve_content() {
        let blob = |h: &[(&str, &str)]| asked(Kind::Blob, h);
        let tag = "\"sha256:aaaa\"";
        assert_eq!(blob(&[]), (200, 0, 100));
        assert_eq!(blob(&[("range", "bytes=10-19")]), (206, 10, 20));
        assert_eq!(
            blob(&[("range", "bytes=10-19"), ("if-range", tag)]),
            (206, 10, 20)
        );
        for other in [
            "\"sha256:bbbb\"",
            "W/\"sha256:aaaa\"",
            "Sat, 01 Jan 2000 00:00:00 GMT",
        ] {
            let h = [("range", "bytes=10-19"), ("if-range", other)];
            assert_eq!(blob(&h), (200, 0, 100), "If-Range {other}");
        }
        assert_eq!(
            blob(&[("if-none-match", "\"x\", W/\"sha256:aaaa\"")]).0,
            304
        );
        assert_eq!(blob(&[("if-none-match", "*")]).0, 304);
        assert_eq!(blob(&[("if-none-match", "\"x\"")]).0, 200);
        assert_eq!(blob(&[("if-match", "\"x\"")]).0, 412);
        assert_eq!(blob(&[("if-match", &format!("\"x\", {tag}"))]).0, 200);
        assert_eq!(
            blob(&[("if-match", "W/\"sha256:aaaa\"")]).0,
            412,
            "strong only"
        );
        let ius = ("if-unmodified-since", "Sat, 01 Jan 2000 00:00:00 GMT");
        assert_eq!(blob(&[ius]).0, 200);
        assert_eq!(blob(&[("range", "bytes=200-")]).0, 416, "unsatisfiable");
        assert_eq!(blob(&[("range", "bytes=5-2")]).0, 0, "malformed");
        assert_eq!(blob(&[("range", "bytes=0-1,5-6")]).0, 0, "multipart");
        assert_eq!(
            blob(&[("if-modified-since", "Sat, 01 Jan 2100 00:00:00 GMT")]).0,
            200
        );
    }

    #[test]
    fn manifests_follow_distribution_s_etag_match() {
        let manifest = |h: &[(&str, &str)]| asked(Kind::Manifest, h).0;
        assert_eq!(manifest(&[("if-none-match", "\"sha256:aaaa\"")]), 304);
        assert_eq!(manifest(&[("if-none-match", "sha256:aaaa")]), 304);
        assert_eq!(manifest(&[("if-none-match", "*")]), 200);
        assert_eq!(
            manifest(&[("if-none-match", "\"x\", \"sha256:aaaa\"")]),
            200
        );
        assert_eq!(
            manifest(&[("if-none-match", "\"x\""), ("if-none-match", "sha256:aaaa")]),
            304
        );
        assert_eq!(manifest(&[("range", "bytes=0-9")]), 200);
        assert_eq!(manifest(&[("if-match", "\"x\"")]), 200);
    }
}
