//! Reloads under load (issue 7): config and certificate reloads while 100 clients pull;
//! none may fail. In its own file so the 100 clients do not share the machine with other
//! fault tests, and with a production-like health interval (2 s): the point is the reload,
//! not how fast a starved node's health check answers.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{curl, digest, make_certs, push_blob, reload, wait_for, Edge, Registry};

#[test]
fn config_and_certificate_reloads_under_100_concurrent_pulls_fail_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let registry = Registry::start(dir.path(), "node");
    let pid_file = dir.path().join("edge.pid");
    let edge = Edge::start_with(
        dir.path(),
        &certs,
        &format!("  shutdown_grace: 1s\n  pid_file: {}\n", pid_file.display()),
        &format!(
            "upstream:\n  nodes: [\"{}\"]\n  connect_timeout: 1s\n  read_timeout: 60s\n  \
             health_check: {{ path: /v2/, interval: 2s }}\n",
            registry.addr()
        ),
        "",
    );
    let ca = certs.ca_dir.join("ca.crt");
    let layer = vec![5u8; 512 * 1024];
    let blob = push_blob(&edge.url(""), &ca, "faults/reload", &layer, &[]);
    let url = edge.url(&format!("/v2/faults/reload/blobs/{blob}"));

    // Clients trust the current and the next certificate (a renewal by the same operator).
    let next = dir.path().join("next");
    registry_edge::certgen::generate(&next, &["registry.test".into(), "localhost".into()]).unwrap();
    let bundle = dir.path().join("bundle.crt");
    let both = [
        std::fs::read(&certs.tls_crt).unwrap(),
        std::fs::read(next.join("tls.crt")).unwrap(),
    ]
    .concat();
    std::fs::write(&bundle, both).unwrap();
    let bundle_arg = bundle.to_str().unwrap();
    let original = std::fs::read_to_string(&edge.config).unwrap();

    let running = AtomicBool::new(true);
    let done = AtomicUsize::new(0);
    // Let at least 50 more pulls complete before the next reload.
    let progress = |since: usize| {
        wait_for("pulls to progress", Duration::from_secs(60), || {
            let now = done.load(Ordering::Relaxed);
            (now >= since + 50).then_some(now)
        })
    };
    let results = std::thread::scope(|scope| {
        let pullers: Vec<_> = (0..100)
            .map(|_| {
                scope.spawn(|| {
                    let mut seen = Vec::new();
                    // Each client pulls until the reloads are over, at least three times.
                    while running.load(Ordering::Relaxed) || seen.len() < 3 {
                        let r = curl(&["--cacert", bundle_arg, &url]);
                        seen.push((r.status, digest(&r.body)));
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    seen
                })
            })
            .collect();
        // Config reloads (a limit on, off) and a certificate reload while they pull.
        let mut mark = progress(0);
        for round in 0..3 {
            let extra = if round % 2 == 0 {
                "limits:\n  max_body_size: 1073741824\n"
            } else {
                ""
            };
            std::fs::write(&edge.config, format!("{original}{extra}")).unwrap();
            reload(&pid_file);
            mark = progress(mark);
        }
        std::fs::copy(next.join("tls.crt"), &certs.tls_crt).unwrap();
        std::fs::copy(next.join("tls.key"), &certs.tls_key).unwrap();
        std::fs::write(&edge.config, &original).unwrap();
        reload(&pid_file);
        progress(mark);
        running.store(false, Ordering::Relaxed);
        pullers
            .into_iter()
            .flat_map(|p| p.join().unwrap())
            .collect::<Vec<_>>()
    });
    let failed: Vec<_> = results
        .iter()
        .filter(|(status, d)| *status != 200 || *d != blob)
        .collect();
    println!("{} pulls during 4 reloads", results.len());
    if !failed.is_empty() {
        for line in edge
            .log_text()
            .lines()
            .filter(|l| !l.contains("status=200"))
            .take(40)
        {
            eprintln!("{line}");
        }
    }
    assert!(results.len() >= 300);
    assert!(
        failed.is_empty(),
        "{} of {} pulls failed: {:?}",
        failed.len(),
        results.len(),
        &failed[..failed.len().min(5)]
    );
    let reloaded = edge.log_text().matches("configuration reloaded").count();
    assert!(reloaded >= 4, "4 reloads applied, log shows {reloaded}");
}
