//! One `Range: bytes=…` header (RFC 9110 §14.1.2) against a body of known size: the part
//! asked for, the whole body, or something the cache leaves to the registry (several
//! ranges, a malformed or unsatisfiable one: Go's `http.ServeContent` answers those with a
//! multipart body or its own 416 text, which the registry then writes itself).

/// What a `Range` header asks of the entry.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Wanted {
    /// No `Range`: the whole entry.
    Whole,
    /// Bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// One well-formed range starting at or after the end (Go's "failed to overlap").
    Unsatisfiable,
    /// Anything else: the registry answers it.
    Other,
}

/// One satisfiable `bytes=` range (RFC 9110 §14.1.2) of an entry of `size` bytes.
pub(crate) fn wanted(range: Option<&str>, size: u64) -> Wanted {
    let Some(range) = range else {
        return Wanted::Whole;
    };
    let Some(spec) = range.trim().strip_prefix("bytes=") else {
        return Wanted::Other;
    };
    if spec.contains(',') {
        return Wanted::Other;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Wanted::Other;
    };
    let (first, last) = (first.trim(), last.trim());
    let parsed = match (first.is_empty(), last.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => {
            number(last).map(|n| (size.saturating_sub(n), size.wrapping_sub(1), n == 0))
        }
        (false, true) => number(first).map(|s| (s, size.wrapping_sub(1), false)),
        (false, false) => match (number(first), number(last)) {
            (Some(s), Some(e)) if s <= e => Some((s, e.min(size.wrapping_sub(1)), false)),
            _ => None,
        },
        (true, true) => None,
    };
    match parsed {
        Some((start, end, false)) if size > 0 && start < size && start <= end => {
            Wanted::Part { start, end }
        }
        Some((start, _, false)) if !first.is_empty() && start >= size => Wanted::Unsatisfiable,
        _ => Wanted::Other,
    }
}

/// A range bound as Go's `strconv.ParseInt(s, 10, 64)` reads it: past `i64::MAX` or
/// negative, it is no bound.
fn number(text: &str) -> Option<u64> {
    text.parse::<i64>().ok().and_then(|n| u64::try_from(n).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(wanted(None, 10), Wanted::Whole);
        assert_eq!(
            wanted(Some("bytes=0-3"), 10),
            Wanted::Part { start: 0, end: 3 }
        );
        assert_eq!(
            wanted(Some("bytes=4-"), 10),
            Wanted::Part { start: 4, end: 9 }
        );
        assert_eq!(
            wanted(Some("bytes=-3"), 10),
            Wanted::Part { start: 7, end: 9 }
        );
        assert_eq!(
            wanted(Some("bytes=8-100"), 10),
            Wanted::Part { start: 8, end: 9 }
        );
        assert_eq!(
            wanted(Some("bytes=-30"), 10),
            Wanted::Part { start: 0, end: 9 }
        );
        assert_eq!(wanted(Some("bytes=10-"), 10), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=12-20"), 10), Wanted::Unsatisfiable);
        for other in [
            "bytes=-0",
            "bytes=5-2",
            "bytes=0-1,4-5",
            "items=0-1",
            "bytes=x-",
            "bytes=-",
        ] {
            assert_eq!(wanted(Some(other), 10), Wanted::Other, "{other}");
        }
    }
}
