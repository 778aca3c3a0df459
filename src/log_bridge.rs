//! Pingora's log records (the `log` crate) into `tracing`, with the lines that report a
//! client's fault lowered from `ERROR` to `WARN` (and one routine event Pingora recovers
//! from, `ROUTINE`, to `DEBUG`).
//!
//! Pingora logs at `ERROR` whatever ends a connection before a request hook runs: a client
//! that closed or reset while sending its request head, a head over the header limits
//! (answered 431 by `listen`), a read timeout, an HTTP/2 client that failed its handshake,
//! an answer the client did not stay to read. None of these is the operator's problem, and
//! an `ERROR` per broken client buries the ones that are (a node that failed). Pingora has
//! no hook for these lines, so this bridge, installed in place of tracing-log's
//! `LogTracer`, lowers exactly the messages listed in `CLIENT_FAULTS` and passes every
//! other record on unchanged. Failures of a request the proxy saw are logged by the proxy
//! itself (`proxy::failure::log`), with the request id.

use log::{Level, Log, Metadata, Record};
use tracing_log::AsTrace;

/// Pingora 0.9.1's `ERROR` messages that report a client's fault, by their beginning and
/// end (`pingora-proxy/src/lib.rs` `handle_new_request`, `proxy_h1.rs`, `proxy_h2.rs`,
/// `pingora-core/src/apps/mod.rs`, and `apps/http_app.rs`, which serves the admin
/// listener). "Fail to proxy" is a client's fault only in the form `handle_new_request`
/// logs: a downstream error, ending with the session type. Both ends are matched, as a
/// node's failure line carries text the client chose (its Host) in the middle.
const CLIENT_FAULTS: [(&str, &[&str]); 6] = [
    (
        "Fail to proxy: Downstream ",
        &[
            ", downstream session type: h1",
            ", downstream session type: h2",
        ],
    ),
    ("failed to send error response to downstream", &[]),
    ("Error finish sending body to downstream", &[]),
    ("H2 handshake error", &[]),
    ("HTTP server fails to read from downstream", &[]),
    ("HTTP server fails to write to downstream", &[]),
];

/// Pingora 0.9.1's `ERROR` messages about something it recovers from by itself, with no
/// request failing: `connectors/mod.rs` logs "failed to acquire reusable stream" when a
/// pooled upstream connection is still held by its idle watch (a race between runtime
/// threads; benches/README.md's small-requests section has figures) and then simply opens a new
/// connection. Logged at DEBUG.
const ROUTINE: [&str; 1] = ["failed to acquire reusable stream"];

/// The `log` → `tracing` bridge; see the module documentation.
pub struct PingoraLog;

impl PingoraLog {
    /// Installs the bridge as the `log` crate's logger, passing records up to `max`
    /// (the tracing subscriber's most verbose level, so disabled records cost one compare).
    pub fn install(
        max: Option<tracing::level_filters::LevelFilter>,
    ) -> Result<(), log::SetLoggerError> {
        log::set_boxed_logger(Box::new(PingoraLog))?;
        let max = max.map_or(log::LevelFilter::Trace, |level| {
            tracing_log::AsLog::as_log(&level)
        });
        log::set_max_level(max);
        Ok(())
    }
}

/// The level `record` is logged at: `WARN` for a client's fault reported as an error.
fn level_of(record: &Record<'_>) -> Level {
    if record.level() != Level::Error || !record.target().starts_with("pingora") {
        return record.level();
    }
    let text = record.args().to_string();
    if ROUTINE.iter().any(|routine| text == *routine) {
        return Level::Debug;
    }
    let client_fault = CLIENT_FAULTS.iter().any(|(start, ends)| {
        text.starts_with(start) && (ends.is_empty() || ends.iter().any(|end| text.ends_with(end)))
    });
    match client_fault {
        true => Level::Warn,
        false => Level::Error,
    }
}

impl Log for PingoraLog {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        tracing::dispatcher::get_default(|dispatch| dispatch.enabled(&metadata.as_trace()))
    }

    fn log(&self, record: &Record<'_>) {
        let level = level_of(record);
        if level == record.level() {
            let _ = tracing_log::format_trace(record);
            return;
        }
        let lowered = Record::builder()
            .level(level)
            .target(record.target())
            .args(*record.args())
            .module_path(record.module_path())
            .file(record.file())
            .line(record.line())
            .build();
        let _ = tracing_log::format_trace(&lowered);
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(target: &str, level: Level, text: std::fmt::Arguments<'_>) -> Level {
        level_of(
            &Record::builder()
                .target(target)
                .level(level)
                .args(text)
                .build(),
        )
    }

    #[test]
    fn client_faults_are_warnings_and_everything_else_keeps_its_level() {
        let read = "Fail to proxy: Downstream ReadError context: while reading request headers, \
                    downstream session type: h1";
        assert_eq!(
            level("pingora_proxy", Level::Error, format_args!("{read}")),
            Level::Warn
        );
        let h2 = "H2 handshake error Downstream ConnectionClosed";
        assert_eq!(
            level("pingora_core::apps", Level::Error, format_args!("{h2}")),
            Level::Warn
        );
        // A node's failure stays an error, and so does anyone else's line.
        let node = "Fail to proxy: Upstream ConnectRefused, status: 502, tries: 1";
        assert_eq!(
            level("pingora_proxy", Level::Error, format_args!("{node}")),
            Level::Error
        );
        // Not even when the client's Host says the words.
        let host = "Fail to proxy: Upstream ConnectRefused, status: 502, tries: 1, retry: \
                    false, GET /v2/, Host: x, downstream session type: h1, request_id: abc";
        assert_eq!(
            level("pingora_proxy", Level::Error, format_args!("{host}")),
            Level::Error
        );
        assert_eq!(
            level("other", Level::Error, format_args!("{h2}")),
            Level::Error
        );
        let pool = "failed to acquire reusable stream";
        assert_eq!(
            level(
                "pingora_core::connectors",
                Level::Error,
                format_args!("{pool}")
            ),
            Level::Debug
        );
        assert_eq!(
            level("pingora_proxy", Level::Info, format_args!("{read}")),
            Level::Info
        );
    }
}
