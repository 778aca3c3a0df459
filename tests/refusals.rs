//! One path for the edge's own refusals: the same refusal decided at admission (from a
//! declared `Content-Length`) and while the body streams (chunked, cut part-way) gets the
//! same answer and the same access-log record, against the real registry with token auth.

mod common;

use common::policy::Setup;
use std::time::Duration;

use common::{curl, start_upload, wait_for, CurlResult};

/// `alice` has a 512 KiB quota; `bob` has none; no body may pass 1 MiB.
const CONFIG: &str =
    "  quotas:\n    namespaces: { alice: 512KiB }\nlimits:\n  max_body_size: 1048576\n";

/// What a client and the access log see of one refusal.
#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    code: String,
    content_type: Option<String>,
    request_id: Option<String>,
    logged_status: String,
    logged_error: String,
}

/// A `PATCH` of `size` bytes to a new upload of `user`/app, its length declared or sent
/// chunked, with the request id `id`.
fn patch(s: &Setup, user: &str, size: usize, chunked: bool, id: &str) -> CurlResult {
    let repository = format!("{user}/app");
    let token = s.token(user, &format!("repository:{repository}:pull,push"));
    let bearer = format!("Authorization: Bearer {token}");
    let url = s.edge.url(&format!("/v2/{repository}/blobs/uploads/"));
    let location = start_upload(&url, &s.ca(), &["-H", &bearer]);
    let file = s.dir.path().join(format!("body-{size}"));
    std::fs::write(&file, vec![5u8; size]).unwrap();
    let data = format!("@{}", file.display());
    let request_id = format!("X-Request-Id: {id}");
    let ca = s.ca();
    let mut args = vec![
        "--cacert",
        &ca,
        "-X",
        "PATCH",
        "-H",
        &bearer,
        "-H",
        &request_id,
    ];
    args.extend(["-H", "Content-Type: application/octet-stream"]);
    if chunked {
        args.extend(["-H", "Transfer-Encoding: chunked"]);
    }
    args.extend(["--data-binary", &data, &location]);
    curl(&args)
}

/// The access line for request `id` (access lines are written in batches: polled).
fn access_line(s: &Setup, id: &str) -> String {
    let wanted = format!("request_id={id} ");
    wait_for("the access line", Duration::from_secs(10), || {
        s.edge
            .log_text()
            .lines()
            .find(|l| l.contains("registry_edge::access") && l.contains(&wanted))
            .map(str::to_string)
    })
}

/// The access line's `field=` value.
fn logged(line: &str, field: &str) -> String {
    let start = line
        .find(&format!(" {field}="))
        .unwrap_or_else(|| panic!("no {field} in {line}"));
    let value = &line[start + field.len() + 2..];
    value.split_whitespace().next().unwrap_or("").to_string()
}

fn seen(s: &Setup, answer: &CurlResult, id: &str) -> Seen {
    let line = access_line(s, id);
    Seen {
        status: answer.status,
        code: answer.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        content_type: answer.header("content-type").map(str::to_string),
        request_id: answer.header("x-request-id").map(str::to_string),
        logged_status: logged(&line, "status"),
        logged_error: logged(&line, "error"),
    }
}

#[test]
fn a_refusal_reads_the_same_whether_decided_at_admission_or_from_the_body() {
    let s = Setup::policy(CONFIG);
    for (case, user, size, status, code) in [
        ("quota", "alice", 768 << 10, 403, "DENIED"),
        ("size", "bob", 2 << 20, 413, "SIZE_INVALID"),
    ] {
        let mut both = Vec::new();
        for chunked in [false, true] {
            let id = format!("{case}-chunked-{chunked}");
            let answer = patch(&s, user, size, chunked, &id);
            let mut seen = seen(&s, &answer, &id);
            assert_eq!(seen.request_id.as_deref(), Some(id.as_str()), "{case}");
            seen.request_id = None;
            both.push(seen);
        }
        let expected = Seen {
            status,
            code: code.to_string(),
            content_type: Some("application/json".to_string()),
            request_id: None,
            logged_status: status.to_string(),
            logged_error: code.to_string(),
        };
        assert_eq!(both[0], expected, "{case} refused at admission");
        assert_eq!(both[1], expected, "{case} refused from the streaming body");
    }
}
