//! What `registry-edge check` accepts and refuses in the sections that keep state on disk:
//! `cache:` and `policy:` (sizes, globs, and folders `run` could not create).

mod common;

use common::config_cases::{assert_cases, fixtures, good, refused, valid};

fn with(section: &str) -> String {
    format!("{}{section}", good())
}

#[test]
fn policy_sizes_globs_and_state_dir() {
    let dir = fixtures();
    std::fs::write(dir.path().join("a-file"), b"not a folder").unwrap();
    let documented = "policy:\n  state_dir: state/policy\n  namespace_depth: 1\n  quotas:\n    \
        default: 20GiB\n    namespaces: { team-a: 100GiB, sandbox: 5GiB }\n    exempt_accounts: [admin]\n  \
        immutable_tags:\n    - { name: \"**\", tags: [\"v[0-9]*\", \"release-*\"] }\n    - exempt_accounts: [release-bot]\n";
    assert_cases(
        dir.path(),
        vec![
            valid("documented.yaml", with(documented)),
            refused(
                "issue-sketch.yaml",
                // `exempt_accounts:` under the rule list without a `-` is not YAML.
                with(&documented.replace("    - exempt_accounts", "    exempt_accounts")),
                &["issue-sketch.yaml", "expected '-'", "line 19"],
            ),
            refused(
                "bad-size.yaml",
                with(&documented.replace("100GiB", "100GB!")),
                &["policy.quotas.namespaces.team-a", "invalid size"],
            ),
            refused(
                "bad-default.yaml",
                with(&documented.replace("20GiB", "lots")),
                &["policy.quotas.default"],
            ),
            refused(
                "bad-glob.yaml",
                with(&documented.replace("\"v[0-9]*\"", "\"v[0-9\"")),
                &["policy.immutable_tags[0].tags", "invalid glob"],
            ),
            refused(
                "state-dir-file.yaml",
                with(&documented.replace("state/policy", "a-file")),
                &["policy.state_dir", "not a directory"],
            ),
            refused(
                "state-dir-under-file.yaml",
                with(&documented.replace("state/policy", "a-file/policy")),
                &["policy.state_dir", "cannot be created"],
            ),
            refused(
                "depth-zero.yaml",
                with(&documented.replace("namespace_depth: 1", "namespace_depth: 0")),
                &["policy.namespace_depth"],
            ),
            refused(
                "unknown-key.yaml",
                with(&documented.replace("  quotas:", "  quota_typo: 1\n  quotas:")),
                &["unknown field `quota_typo`"],
            ),
        ],
    );
}

#[test]
fn cache_dir_and_sizes() {
    let dir = fixtures();
    std::fs::write(dir.path().join("a-file"), b"not a folder").unwrap();
    let cache = "cache:\n  dir: state/cache\n  max_size: 1GiB\n";
    assert_cases(
        dir.path(),
        vec![
            valid("cache.yaml", with(cache)),
            refused(
                "cache-dir-file.yaml",
                with(&cache.replace("state/cache", "a-file")),
                &["cache.dir", "not a directory"],
            ),
            refused(
                "cache-memory.yaml",
                with(&format!("{cache}  memory: 2GiB\n")),
                &["cache.memory", "more than cache.max_size"],
            ),
        ],
    );
}
