//! Token verification: arbitrary input never verifies (or panics), and no tampered copy
//! of a token the edge issued verifies.
#![no_main]

use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use registry_edge::registry::Scope;
use registry_edge::auth::token::{SigningKeys, TokenAuthority};
use registry_edge::certgen;

static AUTHORITY: LazyLock<TokenAuthority> = LazyLock::new(|| {
    let dir = std::env::temp_dir().join(format!("registry-edge-fuzz-{}", std::process::id()));
    certgen::generate(&dir, &["fuzz.test".to_string()]).expect("key material");
    let keys = SigningKeys::load(&dir.join(certgen::AUTH_KEY), &dir.join(certgen::AUTH_CERT))
        .expect("keys load");
    let _ = std::fs::remove_dir_all(&dir);
    TokenAuthority::new(
        keys,
        "fuzz-issuer".into(),
        "fuzz-service".into(),
        Duration::from_secs(300),
    )
});

static VALID: LazyLock<String> = LazyLock::new(|| {
    AUTHORITY
        .issue(
            "fuzzer",
            &[Scope::repository("fuzz/repo", &["pull", "push"])],
            SystemTime::now(),
        )
        .token
});

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        assert!(AUTHORITY.verify(text).is_err() || text == VALID.as_str());
    }
    // Splice the input into the valid token at a position it chooses.
    if let [hi, lo, patch @ ..] = data {
        let mut token = VALID.clone().into_bytes();
        let at = (usize::from(*hi) << 8 | usize::from(*lo)) % token.len();
        let end = (at + patch.len()).min(token.len());
        token.splice(at..end, patch.iter().copied());
        if let Ok(text) = String::from_utf8(token) {
            if text != *VALID {
                assert!(
                    AUTHORITY.verify(&text).is_err(),
                    "a tampered token verified: {text}"
                );
            }
        }
    }
});
