//! What the edge reports about itself: samples of the admin listener's `/metrics` and
//! fields of its access-log lines.

use std::time::Duration;

use super::{curl, wait_for, Edge};

/// The admin listener's `/metrics` text.
pub fn admin_metrics(port: u16) -> String {
    let got = curl(&[&format!("http://127.0.0.1:{port}/metrics")]);
    String::from_utf8_lossy(&got.body).into_owned()
}

/// The value of the sample `name` (with its labels, as printed) in metrics `text`.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// `throttled_ms` of the access line of the PUT that finished an upload to `repo`.
pub fn put_throttled_ms(edge: &Edge, repo: &str) -> u64 {
    let line = wait_for("the PUT's access line", Duration::from_secs(10), || {
        edge.log_text()
            .lines()
            .find(|l| l.contains("method=PUT") && l.contains(repo))
            .map(str::to_string)
    });
    line.split("throttled_ms=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("throttled_ms in the access log: {line}"))
}
