//! Config loading: any text gives a config or a clear error naming a key, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(e) = registry_edge::config::parse(Path::new("/fuzz/edge.yaml"), text) {
        assert!(e.to_string().contains("/fuzz/edge.yaml"), "{e}");
    }
});
