//! Soak (issue 7), behind a flag: 10 minutes of mixed pushes and pulls through the edge —
//! h2load pulling a blob over HTTP/2, curl pushing and pulling random blobs, skopeo
//! pushing and pulling an image — with zero failed requests, no digest mismatch and the
//! edge's memory stable (last minute's peak RSS within 10 % of the second minute's).
//!
//! Run: `cargo test --release --test soak -- --ignored --nocapture`
//! (`REGISTRY_EDGE_SOAK_SECS` shortens or lengthens it; default 600).

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{curl, digest, edge_with_node, push_blob, tiny_oci_layout};
use rand::{Rng, SeedableRng};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Runs one h2load burst; (requests done, failures reported).
fn h2load_burst(url: &str, seconds: u64) -> (u64, u64, String) {
    let out = Command::new("h2load")
        .args(["-c", "8", "-m", "4", "-t", "1", "-D"])
        .arg(seconds.to_string())
        .arg(url)
        .output()
        .expect("h2load is installed (scripts/install-deps)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // "requests: 100 total, 100 started, 100 done, 100 succeeded, 0 failed, 0 errored, 0 timeout"
    let line = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_else(|| panic!("h2load printed no summary: {text}"));
    let field = |name: &str| -> u64 {
        line.split(',')
            .find(|part| part.trim().ends_with(name))
            .and_then(|part| part.split_whitespace().find_map(|w| w.parse().ok()))
            .unwrap_or(u64::MAX)
    };
    let non_2xx = text
        .lines()
        .find(|l| l.starts_with("status codes:"))
        .map(|l| {
            l.split(',')
                .skip(1)
                .filter_map(|p| p.split_whitespace().next()?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .unwrap_or(u64::MAX);
    let failed = field("failed") + field("errored") + field("timeout") + non_2xx;
    (field("succeeded"), failed, line.to_string())
}

#[test]
#[ignore = "10-minute soak: cargo test --release --test soak -- --ignored"]
fn soak_mixed_pushes_and_pulls() {
    let seconds: u64 = std::env::var("REGISTRY_EDGE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    assert!(
        seconds >= 180,
        "the soak compares minute 2 with the last minute: 180 s at least"
    );
    let dir = tempfile::tempdir().unwrap();
    let (certs, _registry, edge) = edge_with_node(dir.path(), "");
    let ca = certs.ca_dir.join("ca.crt");
    let ca_arg = ca.to_str().unwrap().to_string();
    let base = edge.url("");
    let hot = vec![1u8; 64 * 1024];
    let hot_blob = push_blob(&base, &ca, "soak/hot", &hot, &[]);
    let hot_url = edge.url(&format!("/v2/soak/hot/blobs/{hot_blob}"));
    let layout = tiny_oci_layout(dir.path());
    let cert_dir = certs.ca_dir.to_str().unwrap().to_string();
    // (h2load does not verify certificates; curl and skopeo do.)
    let pid = edge.proc.pid();

    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let (pulls, blob_ops, images) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let mut failures: Vec<String> = Vec::new();
    let mut samples: Vec<(u64, u64)> = Vec::new();

    std::thread::scope(|scope| {
        let h2 = scope.spawn(|| {
            let mut errors = Vec::new();
            while Instant::now() + Duration::from_secs(10) < until {
                let (done, failed, line) = h2load_burst(&hot_url, 10);
                pulls.fetch_add(done, Ordering::Relaxed);
                if failed != 0 {
                    errors.push(format!("h2load: {line}"));
                }
            }
            errors
        });
        let blobs = scope.spawn(|| {
            let mut errors = Vec::new();
            let mut rng = rand::rngs::StdRng::seed_from_u64(7);
            let mut i = 0u64;
            while Instant::now() < until {
                let mut bytes = vec![0u8; rng.random_range(1..4 * 1024 * 1024)];
                rng.fill(&mut bytes[..]);
                let repo = format!("soak/blobs{}", i % 8);
                match common::try_push_blob(&base, &ca, &repo, &bytes, &[]) {
                    Ok(d) => {
                        let pulled =
                            curl(&["--cacert", &ca_arg, &format!("{base}/v2/{repo}/blobs/{d}")]);
                        if pulled.status != 200 || digest(&pulled.body) != d {
                            errors.push(format!("pull {repo}@{d}: {}", pulled.status));
                        }
                    }
                    Err(e) => errors.push(format!("push {repo}: {e}")),
                }
                blob_ops.fetch_add(2, Ordering::Relaxed);
                i += 1;
            }
            errors
        });
        let skopeo = scope.spawn(|| {
            let mut errors = Vec::new();
            let mut i = 0u64;
            while Instant::now() < until {
                let target = format!("docker://127.0.0.1:{}/soak/app:t{}", edge.https_port, i % 4);
                let back = dir.path().join(format!("back{}", i % 2));
                let _ = std::fs::remove_dir_all(&back);
                for (cert_flag, from, to) in [
                    ("--dest-cert-dir", layout.clone(), target.clone()),
                    (
                        "--src-cert-dir",
                        target.clone(),
                        format!("oci:{}:v1", back.display()),
                    ),
                ] {
                    let out = Command::new("skopeo")
                        .args([
                            "--insecure-policy",
                            "copy",
                            cert_flag,
                            &cert_dir,
                            &from,
                            &to,
                        ])
                        .output()
                        .expect("skopeo is installed");
                    if !out.status.success() {
                        errors.push(format!(
                            "skopeo {from} -> {to}: {}",
                            String::from_utf8_lossy(&out.stderr)
                        ));
                    }
                }
                images.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            errors
        });
        while Instant::now() < until {
            samples.push((started.elapsed().as_secs(), rss_kib(pid)));
            std::thread::sleep(Duration::from_secs(1));
        }
        for worker in [h2, blobs, skopeo] {
            failures.extend(worker.join().unwrap());
        }
    });

    let peak = |from: u64, to: u64| {
        samples
            .iter()
            .filter(|(t, _)| (from..to).contains(t))
            .map(|(_, kib)| *kib)
            .max()
            .unwrap_or(0)
    };
    let second_minute = peak(60, 120);
    let last_minute = peak(seconds.saturating_sub(60), seconds);
    println!(
        "soak {seconds}s: {} HTTP/2 pulls, {} blob pushes+pulls, {} skopeo image round trips; \
         edge peak RSS minute 2: {} MiB, last minute: {} MiB ({:+.1} %)",
        pulls.load(Ordering::Relaxed),
        blob_ops.load(Ordering::Relaxed),
        images.load(Ordering::Relaxed),
        second_minute / 1024,
        last_minute / 1024,
        (last_minute as f64 / second_minute.max(1) as f64 - 1.0) * 100.0
    );
    // The edge's view of its node, to tell a node that failed from one the edge took out.
    let log = edge.log_text();
    let health: Vec<&str> = log.lines().filter(|l| l.contains("healthy")).collect();
    assert!(
        failures.is_empty(),
        "{} failures: {:#?}\nhealth changes: {health:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(
        edge.log_text().matches("status=5").count() == 0,
        "5xx in the access log"
    );
    assert!(
        last_minute as f64 <= second_minute as f64 * 1.10,
        "RSS grew: minute 2 peak {second_minute} KiB, last minute {last_minute} KiB"
    );
}
