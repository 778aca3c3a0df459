//! `policy:` on two edge instances sharing usage through a real Redis: a push through one
//! counts against the quota the other enforces; with Redis down and `on_unavailable:
//! local`, an instance keeps enforcing from the last usage Redis gave it; with `deny` it
//! refuses pushes.

mod common;

use common::auth::{auth_yaml, registry_auth_block};
use common::images::noise_image;
use common::policy::usage_of as usage;
use common::redis::RedisServer;
use common::{make_certs, skopeo_push, upstream_yaml, Edge, Registry};

const MIB: u64 = 1 << 20;

#[test]
fn two_instances_share_usage_and_keep_the_last_one_while_redis_is_away() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let registry = Registry::start_with(dir.path(), "node", &registry_auth_block(dir.path()));
    let mut redis = RedisServer::start(dir.path());
    let upstream = upstream_yaml(&[registry.addr()], "repository_hash");
    let edge = |name: &str, on_unavailable: &str| {
        let extra = format!(
            "{}shared_state:\n  redis:\n    url: {}\n    key_prefix: \"test:\"\n    timeout: 200ms\n    \
             on_unavailable: {on_unavailable}\npolicy:\n  state_dir: {}\n  quotas:\n    namespaces: {{ alice: 3MiB }}\n",
            auth_yaml(dir.path(), ""),
            redis.url(),
            dir.path().join(name).display()
        );
        Edge::start(dir.path(), &certs, &upstream, &extra)
    };
    let (a, b) = (edge("a", "local"), edge("b", "local"));
    let denying = edge("c", "deny");
    let cert_dir = certs.ca_dir.to_str().unwrap().to_string();
    let push = |edge: &Edge, size: u64, seed: u64, target: &str| {
        let layout = dir.path().join(format!("image-{seed}"));
        let source = match layout.exists() {
            true => format!("oci:{}:x", layout.display()),
            false => noise_image(&layout, "x", size, seed),
        };
        let out = skopeo_push(
            &cert_dir,
            Some("alice:pw-alice"),
            &source,
            &format!("docker://127.0.0.1:{}/{target}", edge.https_port),
            &[],
        );
        match out.status.success() {
            true => Ok(()),
            false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        }
    };

    push(&a, 2 * MIB, 10, "alice/one:v1").expect("2 MiB of 3 through a");
    let counted = usage(&b.config, "alice");
    assert!(counted > 2 * MIB && counted < 3 * MIB, "{counted}");
    assert_eq!(usage(&a.config, "alice"), counted, "the instances disagree");
    // Refused at the blob's bytes or at the manifest: a client writing a body when the
    // 403 comes may report only a broken pipe, so the edge's own log tells.
    // The access line comes once the edge has read away what the client still sent.
    let refusals = |edge: &Edge| edge.log_text().matches("status=403").count();
    let refused_times = |edge: &Edge, n: usize, why: &str| {
        common::wait_for(why, std::time::Duration::from_secs(10), || {
            (refusals(edge) >= n).then_some(())
        });
        assert_eq!(refusals(edge), n, "{why}");
    };
    let refused = push(&b, 2 * MIB, 20, "alice/two:v1").unwrap_err();
    refused_times(&b, 1, &format!("b did not see a's push: {refused}"));

    redis.stop();
    let refused = push(&b, 2 * MIB, 20, "alice/two:v1").unwrap_err();
    refused_times(
        &b,
        2,
        &format!("b forgot the usage while Redis was away: {refused}"),
    );
    push(&b, MIB / 4, 40, "alice/three:v1").expect("what still fits is accepted");
    assert!(b.log_text().contains("shared_state.redis unavailable"));
    // on_unavailable: deny refuses pushes while Redis is away.
    let refused = push(&denying, MIB / 4, 40, "alice/four:v1").unwrap_err();
    assert!(refused.contains("503 Service Unavailable"), "{refused}");
}
