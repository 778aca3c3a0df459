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
        let bare = digest.as_bytes();
        let matches = headers.get_all("if-none-match").iter().any(|v| {
            let v = trim(v.as_bytes());
            v == bare || v.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")) == Some(bare)
        });
        return Some(if matches { status(304) } else { whole });
    }
    // Go reads the first line of each header (`Header.Get`), as bytes.
    let first = |name: &str| headers.get(name).map(|v| v.as_bytes());
    let etag = format!("\"{digest}\"");
    let etag = etag.as_bytes();
    if let Some(tags) = first("if-match").filter(|v| !v.is_empty()) {
        if !any_tag(tags, |t| t == etag) {
            return Some(status(412));
        }
    }
    let weak = |t: &[u8]| t.strip_prefix(b"W/").unwrap_or(t) == etag;
    if first("if-none-match").is_some_and(|tags| !tags.is_empty() && any_tag(tags, weak)) {
        return Some(status(304));
    }
    let Some(range) = first("range").filter(|v| !v.is_empty()) else {
        return Some(whole);
    };
    // `If-Range`: its first entity tag must be the strong tag; a date never holds.
    let if_range = first("if-range").filter(|v| !v.is_empty());
    if if_range.is_some_and(|v| scan_tag(v).is_none_or(|(tag, _)| tag != etag)) {
        return Some(whole);
    }
    // Anything but ASCII makes Go's number parsing fail: the registry answers it.
    let Ok(range) = std::str::from_utf8(range) else {
        return None;
    };
    match wanted(Some(range), size) {
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

/// ASCII whitespace off both ends (Go's `textproto.TrimString`).
fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// Whether the entity-tag list `tags` holds `*` or a tag `matches` accepts, read as Go's
/// `checkIfMatch`/`checkIfNoneMatch` read it: commas optional, the list ends at the first
/// thing that is not a tag.
fn any_tag(tags: &[u8], matches: impl Fn(&[u8]) -> bool) -> bool {
    let mut rest = tags;
    loop {
        rest = trim(rest);
        match rest.first() {
            None => return false,
            Some(b',') => rest = &rest[1..],
            Some(b'*') => return true,
            Some(_) => match scan_tag(rest) {
                Some((tag, _)) if matches(tag) => return true,
                Some((_, remain)) => rest = remain,
                None => return false,
            },
        }
    }
}

/// The entity tag (`"…"` or `W/"…"`) at the start of `s`, and what follows (Go's
/// `scanETag`); `None` when `s` does not start with one.
fn scan_tag(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let s = trim(s);
    let start = if s.starts_with(b"W/") { 2 } else { 0 };
    if s.len() < start + 2 || s[start] != b'"' {
        return None;
    }
    for (i, &c) in s.iter().enumerate().skip(start + 1) {
        match c {
            b'"' => return Some((&s[..=i], &s[i + 1..])),
            0x21 | 0x23..=0x7e | 0x80..=0xff => {}
            _ => return None,
        }
    }
    None
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
        // Go's list reading: commas optional, only the first header line, bytes.
        assert_eq!(blob(&[("if-none-match", "\"x\" \"sha256:aaaa\"")]).0, 304);
        let two = [("if-none-match", "\"x\""), ("if-none-match", tag)];
        assert_eq!(blob(&two).0, 200, "only the first line counts");
        let garbage_after = format!("{tag} garbage");
        let h = [("range", "bytes=0-9"), ("if-range", garbage_after.as_str())];
        assert_eq!(blob(&h), (206, 0, 10), "If-Range: its first tag");
        let h = [("range", "bytes=0-9"), ("if-range", "\"xé\"")];
        assert_eq!(blob(&h), (200, 0, 100), "a non-ASCII tag is another tag");
        assert_eq!(blob(&[("range", "bytes=0-9é")]).0, 0, "non-ASCII range");
        assert_eq!(
            blob(&[("range", "bytes=0-18446744073709551615")]).0,
            0,
            "over i64"
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
