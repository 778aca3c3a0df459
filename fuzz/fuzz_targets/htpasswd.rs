//! The htpasswd parser: any file text either loads or is refused with a message naming
//! the file and a line; nothing panics (a bad cost used to, in bcrypt).
#![no_main]

use std::path::Path;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use registry_edge::auth::users::{Users, UsersError};

fuzz_target!(|text: &str| {
    match Users::parse(Path::new("htpasswd"), text, Duration::ZERO) {
        Ok(_) => {}
        Err(UsersError::Entry { line, .. }) => assert!(line >= 1 && line <= text.lines().count()),
        Err(e) => panic!("parsing text gave a non-entry error: {e}"),
    }
});
