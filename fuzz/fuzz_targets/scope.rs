//! Scope parsing: whatever parses has a valid name, and prints back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registry_edge::registry::{is_valid_repository, Scope};

fuzz_target!(|text: &str| {
    if let Some(scope) = Scope::parse(text) {
        assert!(!scope.name.is_empty());
        if scope.kind == "repository" {
            assert!(is_valid_repository(&scope.name), "{:?}", scope.name);
        }
        let again = Scope::parse(&scope.to_string()).expect("a printed scope parses");
        assert_eq!(again, scope);
    }
    for scope in Scope::parse_all(text.split('\n')) {
        assert!(!scope.name.is_empty());
    }
});
