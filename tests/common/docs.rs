//! The documentation as the docs tests read it: its Markdown files, the fenced configs
//! marked complete (```` ```yaml complete ````), their links, and the files such a config
//! names, made in a test folder so that `check` can read them.

use std::path::{Path, PathBuf};

use pulldown_cmark::{CodeBlockKind, Event, Parser, Tag, TagEnd};
use serde_yaml::Value;

/// The repository's root.
pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `README.md`, `CHANGELOG.md`, `benches/README.md` and every `docs/*.md` that exist.
pub fn doc_files() -> Vec<PathBuf> {
    let root = Path::new(ROOT);
    let mut files: Vec<PathBuf> = ["README.md", "CHANGELOG.md", "benches/README.md"]
        .iter()
        .map(|f| root.join(f))
        .filter(|f| f.exists())
        .collect();
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .map(|entries| entries.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    docs.retain(|p| p.extension().is_some_and(|e| e == "md"));
    docs.sort();
    files.extend(docs);
    files
}

/// The text of every fenced block whose info string is `yaml complete`, in order.
pub fn complete_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for event in Parser::new(markdown) {
        match event {
            Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(info))) => {
                let words: Vec<&str> = info.split_whitespace().collect();
                if words == ["yaml", "complete"] {
                    current = Some(String::new());
                }
            }
            Event::Text(text) => {
                if let Some(block) = current.as_mut() {
                    block.push_str(&text);
                }
            }
            Event::End(TagEnd::CodeBlock) => blocks.extend(current.take()),
            _ => {}
        }
    }
    blocks
}

/// Every link and image destination in `markdown` (not those inside code).
pub fn link_targets(markdown: &str) -> Vec<String> {
    Parser::new(markdown)
        .filter_map(|event| match event {
            Event::Start(Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. }) => {
                Some(dest_url.to_string())
            }
            _ => None,
        })
        .collect()
}

/// Points every absolute file path a config names into `dir` (`/etc/x/y.pem` becomes
/// `dir/etc/x/y.pem`) and makes the file there: TLS certificates and keys, token signing keys,
/// CA bundles, an htpasswd with `alice:pw-alice`, an LDAP bind password. Folders
/// (`dir`, `state_dir`) are left for `check` to find creatable.
pub fn provide_files(config: &mut Value, dir: &Path) {
    let pems = dir.join("pems");
    registry_edge::certgen::generate(&pems, &["registry.example.com".to_string()]).unwrap();
    rewrite(config, dir, &pems);
}

fn rewrite(value: &mut Value, dir: &Path, pems: &Path) {
    match value {
        Value::Sequence(items) => items.iter_mut().for_each(|v| rewrite(v, dir, pems)),
        Value::Mapping(map) => {
            let tls_pair = map.contains_key("cert") && map.contains_key("key");
            for (key, v) in map.iter_mut() {
                let (Some(key), Some(text)) = (key.as_str(), v.as_str()) else {
                    rewrite(v, dir, pems);
                    continue;
                };
                // Relative paths resolve beside the config: the caller's business.
                if !text.starts_with('/') {
                    continue;
                }
                let made = match key {
                    "cert" => Some("tls.crt"),
                    "key" if tls_pair => Some("tls.key"),
                    "signing_key" => Some("registry-auth.key"),
                    "certificate" | "certificates" | "ca" | "ca_roots" => Some("registry-auth.crt"),
                    "htpasswd" => Some("htpasswd"),
                    "bind_password_file" => Some("secret"),
                    "dir" | "state_dir" | "pid_file" => None,
                    _ => continue,
                };
                let path = dir.join(text.trim_start_matches('/'));
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                match made {
                    Some("htpasswd") => {
                        let line =
                            registry_edge::registry_config::htpasswd_line("alice", "pw-alice", 4)
                                .unwrap();
                        std::fs::write(&path, format!("{line}\n")).unwrap();
                    }
                    Some("secret") => std::fs::write(&path, "secret\n").unwrap(),
                    Some(pem) => {
                        std::fs::copy(pems.join(pem), &path).unwrap();
                    }
                    None => {}
                }
                *v = Value::String(path.display().to_string());
            }
        }
        _ => {}
    }
}
