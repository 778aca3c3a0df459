//! One `Range: bytes=…` header (RFC 9110 §14.1.2) against a body of known size: the part
//! asked for, the whole body, or nothing that can be satisfied (416).

/// A `Range` header asked for bytes `start..=end` of the entry.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Wanted {
    Whole,
    Part { start: u64, end: u64 },
    Unsatisfiable,
}

/// One `bytes=` range (RFC 9110 §14.1.2); several ranges, or anything else, get the whole
/// entry, as a server may answer any `Range` it does not support.
pub(crate) fn wanted(range: Option<&str>, size: u64) -> Wanted {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return Wanted::Whole;
    };
    if spec.contains(',') {
        return Wanted::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Wanted::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let parsed = match (first.is_empty(), last.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => last
            .parse::<u64>()
            .ok()
            .map(|n| (size.saturating_sub(n), size.wrapping_sub(1), n == 0)),
        (false, true) => first
            .parse::<u64>()
            .ok()
            .map(|s| (s, size.wrapping_sub(1), false)),
        (false, false) => match (first.parse::<u64>(), last.parse::<u64>()) {
            (Ok(s), Ok(e)) if s <= e => Some((s, e.min(size.wrapping_sub(1)), false)),
            _ => None,
        },
        (true, true) => None,
    };
    match parsed {
        None => Wanted::Whole,
        Some((start, end, empty)) if empty || size == 0 || start >= size || start > end => {
            Wanted::Unsatisfiable
        }
        Some((start, end, _)) => Wanted::Part { start, end },
    }
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
        assert_eq!(wanted(Some("bytes=-0"), 10), Wanted::Unsatisfiable);
        for whole in [
            "bytes=5-2",
            "bytes=0-1,4-5",
            "items=0-1",
            "bytes=x-",
            "bytes=-",
        ] {
            assert_eq!(wanted(Some(whole), 10), Wanted::Whole, "{whole}");
        }
    }
}
