//! Repository names: distribution's name grammar (`reference/regexp.go`), with an optional
//! `host[:port]/` prefix as clients send it.

/// Longest repository name distribution accepts.
const MAX_NAME_LEN: usize = 255;

/// The distribution name grammar, with an optional `host[:port]/` prefix:
/// components `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*` separated by `/`.
pub fn is_valid_repository(name: &str) -> bool {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return false;
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    // A first segment with a dot, a colon or equal to localhost is a registry host.
    if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
        if !is_valid_host(parts[0]) {
            return false;
        }
        parts.remove(0);
    }
    parts.iter().all(|c| is_valid_component(c))
}

fn is_valid_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let name_ok = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    port_ok && name_ok
}

fn is_valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    // Separators between alphanumeric runs: one `.`, one or two `_`, or any number of `-`.
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_grammar() {
        for ok in [
            "a",
            "a/b",
            "a.b/c_d/e__f/g---h",
            "localhost/app",
            "my-host.io:5000/app",
            "0/1",
        ] {
            assert!(is_valid_repository(ok), "{ok}");
        }
        let long = "a".repeat(256);
        for bad in [
            "",
            "A",
            "a/",
            "/a",
            "a//b",
            "a/../b",
            ".a",
            "a.",
            "a..b",
            "a___b",
            "a%2fb",
            "a b",
            long.as_str(),
        ] {
            assert!(!is_valid_repository(bad), "{bad}");
        }
    }
}
