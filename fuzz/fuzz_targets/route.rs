//! Route classification: decoding never invents a path separator, and the repository the
//! edge authorises and rate-limits is exactly the one named in the decoded path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registry_edge::registry::is_valid_repository;
use registry_edge::registry::{decoded_path, Route};

fuzz_target!(|raw: &str| {
    let Some(path) = decoded_path(raw) else {
        return;
    };
    assert_eq!(
        path.matches('/').count(),
        raw.matches('/').count(),
        "decoding changed the path's segments"
    );
    let route = Route::parse(&http::Method::GET, &path);
    if let Some(name) = &route.repository {
        let rest = path
            .strip_prefix("/v2/")
            .expect("repositories live under /v2/");
        assert!(
            rest.starts_with(name.as_str()),
            "{name:?} is not where {path:?} says"
        );
        assert!(
            rest[name.len()..].starts_with('/'),
            "{name:?} ends mid-segment in {path:?}"
        );
        if is_valid_repository(name) {
            assert!(!name
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == ".."));
        }
    }
    assert_eq!(Route::parse(&http::Method::GET, &path), route, "parsing is deterministic");
});
