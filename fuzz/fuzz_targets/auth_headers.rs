//! `Authorization` parsing at the realm (Basic) and on registry requests (Bearer).
#![no_main]

use libfuzzer_sys::fuzz_target;
use registry_edge::auth::check::bearer_token;
use registry_edge::auth::endpoint::{basic_credentials, Basic};

fuzz_target!(|header: &str| {
    if let Basic::Credentials(user, _password) = basic_credentials(Some(header)) {
        // The user name ends at the first colon: it can never contain one.
        assert!(!user.contains(':'));
    }
    if let Some(token) = bearer_token(Some(header)) {
        assert!(header.contains(token));
        assert!(!token.starts_with(' ') && !token.ends_with(' '));
    }
});
