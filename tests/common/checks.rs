//! Soft assertions for scenarios whose setup is costly (a registry and an edge, ~1–2 s) but
//! which check several unrelated behaviours: [`Checks::run`] runs each behaviour as a named
//! part, a part that fails (panics on an assert) is recorded and the next part still runs,
//! and [`Checks::finish`] fails the test once, naming every failed part. Each caught panic
//! is still printed where it happened, with its file and line.

use std::panic::{catch_unwind, AssertUnwindSafe};

/// The failed parts of one scenario so far. Must end with [`Checks::finish`]: dropping it
/// with failures recorded fails the test too.
#[must_use = "call finish() so recorded failures fail the test"]
pub struct Checks {
    ran: usize,
    failed: Vec<String>,
    finished: bool,
}

impl Checks {
    pub fn new() -> Checks {
        Checks {
            ran: 0,
            failed: Vec::new(),
            finished: false,
        }
    }

    /// Runs `part`; a panic in it (a failed assert) is recorded under `name` instead of
    /// ending the test. Returns the part's value, or `None` when it failed.
    pub fn run<T>(&mut self, name: &str, part: impl FnOnce() -> T) -> Option<T> {
        self.ran += 1;
        match catch_unwind(AssertUnwindSafe(part)) {
            Ok(value) => Some(value),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                self.failed.push(format!("{name}: {message}"));
                None
            }
        }
    }

    /// Fails the test if any part failed, listing them all.
    #[track_caller]
    pub fn finish(mut self) {
        self.finished = true;
        self.report();
    }

    #[track_caller]
    fn report(&self) {
        if self.failed.is_empty() {
            return;
        }
        let list = format!(
            "{} of {} parts failed:\n  {}",
            self.failed.len(),
            self.ran,
            self.failed.join("\n  ")
        );
        if std::thread::panicking() {
            // The scenario already failed outside a part; say what failed before that.
            eprintln!("{list}");
        } else {
            panic!("{list}");
        }
    }
}

impl Default for Checks {
    fn default() -> Self {
        Checks::new()
    }
}

impl Drop for Checks {
    fn drop(&mut self) {
        if !self.finished {
            self.report();
        }
    }
}
