//! A cold fill runs at the registry's pace (issue 32): a first client reading at 1 MB/s
//! holds no one, its kill disturbs no one, and the registry answers one GET for the
//! digest, counted in its own access log.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cache::{noise, push_blob, Setup};
use common::{curl, wait_for, Proc};

/// Bytes of the blob: 24 MiB, 24 s for the slow client.
const SIZE: usize = 24 << 20;

/// The slack the fast clients get over a pull from the registry alone.
const SLACK: Duration = Duration::from_secs(2);

/// A pull of `path` through the edge by curl limited to 1 MB/s, as a process to kill.
fn slow_pull(s: &Setup, path: &str, bearer: &str) -> Proc {
    Proc::spawn(
        Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "--limit-rate", "1M", "--cacert"])
            .arg(s.ca())
            .args(["-H", bearer])
            .arg(s.edge.url(path))
            .stdin(Stdio::null()),
    )
}

/// How long a GET of `path` from the registry alone takes (the best of three).
fn registry_alone(s: &Setup, path: &str, bearer: &str) -> Duration {
    let url = format!("http://{}{path}", s.registry.addr());
    (0..3)
        .map(|_| {
            let started = Instant::now();
            let answer = curl(&["-H", bearer, "-o", "/dev/null", &url]);
            assert_eq!(answer.status, 200);
            started.elapsed()
        })
        .min()
        .unwrap()
}

/// Two fast pulls at once; each one's body is checked and its time returned.
fn fast_pulls(s: &Setup, path: &str, bearer: &str, bytes: &[u8]) -> Vec<Duration> {
    let pulls: Vec<_> = (0..2)
        .map(|_| {
            let (ca, url, bearer) = (s.ca(), s.edge.url(path), bearer.to_string());
            std::thread::spawn(move || {
                let started = Instant::now();
                let answer = curl(&["--cacert", &ca, "-H", &bearer, &url]);
                (answer, started.elapsed())
            })
        })
        .collect();
    pulls
        .into_iter()
        .map(|pull| {
            let (answer, took) = pull.join().unwrap();
            assert_eq!(answer.status, 200, "{}", answer.text());
            assert!(answer.body == bytes, "a fast pull got other bytes");
            took
        })
        .collect()
}

/// Waits until the edge began answering the slow client (its fetch started).
fn slow_answer_started(s: &Setup) {
    wait_for("the slow pull to start", Duration::from_secs(10), || {
        (s.metric("miss") >= 1.0).then_some(())
    });
}

#[test]
fn a_slow_first_client_holds_no_one_and_its_kill_disturbs_no_one() {
    for kill_first in [false, true] {
        let s = Setup::cache("");
        let bytes = noise(SIZE, 11);
        let digest = push_blob(&s, "slow", &bytes);
        let token = s.token("alice", "repository:alice/slow:pull");
        let bearer = format!("Authorization: Bearer {token}");
        let path = format!("/v2/alice/slow/blobs/{digest}");
        let alone = registry_alone(&s, &path, &bearer);
        let before = s.registry.requests("GET", &path);
        let mut slow = slow_pull(&s, &path, &bearer);
        slow_answer_started(&s);
        if kill_first {
            // Killed mid-way, before anyone else asks: the fill goes on without it.
            slow.kill();
        }
        let fast = std::thread::scope(|scope| {
            let fast = scope.spawn(|| fast_pulls(&s, &path, &bearer, &bytes));
            // Killed while the fast clients read: they do not notice.
            slow.kill();
            fast.join().unwrap()
        });
        for took in fast {
            assert!(
                took <= alone + SLACK,
                "kill_first={kill_first}: a fast pull took {took:?}, the registry alone {alone:?}"
            );
        }
        wait_for("the fill to commit", Duration::from_secs(30), || {
            (s.metric("fill") >= 1.0).then_some(())
        });
        // Every answer came from the fill, the killed client's too (its access line).
        wait_for(
            "three access lines from the cache",
            Duration::from_secs(10),
            || {
                let log = s.edge.log_text();
                let lines = log.lines().filter(|l| {
                    l.contains("method=GET") && l.contains(&digest) && l.contains("upstream=cache")
                });
                (lines.count() == 3).then_some(())
            },
        );
        assert_eq!(
            s.registry.requests("GET", &path) - before,
            1,
            "kill_first={kill_first}: GETs the registry answered:\n{}",
            s.registry.log_text()
        );
    }
}

/// A registry whose stored blob no longer matches its digest (a byte flipped in its
/// storage, same size): the fill is not committed, counted as a mismatch, and the answer
/// from it is cut short (never complete with bytes known to be wrong); the next pull asks
/// the registry again.
#[test]
fn a_registry_body_that_does_not_match_its_digest_is_cut_short_and_not_cached() {
    let s = Setup::cache("");
    let bytes = noise(3 << 20, 5);
    let digest = push_blob(&s, "bad", &bytes);
    let hex = &digest["sha256:".len()..];
    let data = s
        .registry
        .root
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let mut stored = std::fs::read(&data).unwrap();
    stored[1 << 20] ^= 0xff;
    std::fs::write(&data, &stored).unwrap();
    let path = format!("/v2/alice/bad/blobs/{digest}");
    for round in 1..=2 {
        let answer = s.get("alice/bad", &path, &[]);
        assert!(
            answer.body.len() < stored.len(),
            "round {round}: an answer from a mismatched fill completed ({} bytes)",
            answer.body.len()
        );
        wait_for(
            "the mismatch to be counted",
            Duration::from_secs(10),
            || (s.metric("mismatch") >= f64::from(round)).then_some(()),
        );
    }
    assert_eq!(s.metric("fill"), 0.0);
    assert_eq!(
        s.registry.requests("GET", &path),
        2,
        "each pull asked again"
    );
}
