//! The configuration reference (`docs/configuration.md`), generated from the code: the
//! file shapes' JSON Schema (`schemars`, read from the serde types and their doc comments)
//! gives every key, its type, whether it is required and its description; the doc
//! comment's `Default …` sentence gives its default; the sections' key tables
//! ([`super::keys`]) say whether a reload applies it. `registry-edge config-reference`
//! prints it, and a test compares it with the committed file, so the two cannot drift.

use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::file::ConfigFile;
use super::keys::{Applied, Key};

/// One key of the file as the reference lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDoc {
    /// Dotted path; list items are written `name[]`, e.g. `auth.acl[].name`.
    pub path: String,
    /// `string`, `integer`, `boolean`, `list of strings`, `section`, `one of …`, …
    pub kind: String,
    /// Whether the key must be written (when its section is).
    pub required: bool,
    /// The default as the doc comment states it (`None` when it states none).
    pub default: Option<String>,
    /// The doc comment without its `Default …` sentence.
    pub description: String,
    /// When a running process takes a new value: `None` when no key table names the key
    /// or a prefix of it (a section whose keys are classified one by one).
    pub applied: Option<Applied>,
}

/// Every key of the configuration file, in file order, sections before their keys.
pub fn key_docs() -> Vec<KeyDoc> {
    let schema = schemars::schema_for!(ConfigFile);
    let root = schema.as_value();
    let defs = root.get("$defs").and_then(Value::as_object);
    let keys: Vec<Key> = super::changes::all_keys().collect();
    let mut docs = Vec::new();
    walk(root, defs, "", &keys, &mut docs);
    docs
}

/// The dotted names of the key tables, for the test that every one names a real key.
pub fn classified_names() -> Vec<&'static str> {
    super::changes::all_keys().map(|k| k.name).collect()
}

fn walk(
    object: &Value,
    defs: Option<&Map<String, Value>>,
    prefix: &str,
    keys: &[Key],
    docs: &mut Vec<KeyDoc>,
) {
    let Some(properties) = object.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<&str> = object
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, property) in properties {
        let path = match prefix {
            "" => name.clone(),
            _ => format!("{prefix}.{name}"),
        };
        let shape = resolve(property, defs);
        let text = description(property).or_else(|| description(shape));
        let (description, stated_default) = split_default(&text.unwrap_or_default());
        docs.push(KeyDoc {
            kind: kind(shape, defs),
            required: required.contains(&name.as_str()),
            default: stated_default.or_else(|| schema_default(property)),
            description,
            applied: classify(&path, keys),
            path: path.clone(),
        });
        if shape.get("properties").is_some() {
            walk(shape, defs, &path, keys, docs);
        } else if let Some(items) = shape.get("items").map(|i| resolve(i, defs)) {
            walk(items, defs, &format!("{path}[]"), keys, docs);
        }
    }
}

/// The schema behind `$ref`s and `Option`'s `anyOf: [T, null]`.
fn resolve<'a>(schema: &'a Value, defs: Option<&'a Map<String, Value>>) -> &'a Value {
    if let Some(name) = schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
    {
        if let Some(target) = defs.and_then(|d| d.get(name)) {
            return resolve(target, defs);
        }
    }
    if let Some(alternatives) = schema.get("anyOf").and_then(Value::as_array) {
        let mut not_null = alternatives.iter().filter(|a| !is_null(a));
        if let (Some(only), None) = (not_null.next(), not_null.next()) {
            return resolve(only, defs);
        }
    }
    schema
}

fn is_null(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("null")
}

fn description(schema: &Value) -> Option<String> {
    let text = schema.get("description")?.as_str()?;
    Some(text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The key's type in words.
fn kind(shape: &Value, defs: Option<&Map<String, Value>>) -> String {
    if let Some(values) = choices(shape) {
        return format!("one of {}", values.join(", "));
    }
    if shape.get("properties").is_some() {
        return "section".to_string();
    }
    match primary_type(shape) {
        Some("array") => {
            let item = shape.get("items").map(|i| resolve(i, defs));
            match item.map(|i| kind(i, defs)) {
                Some(k) if k == "section" => "list of sections".to_string(),
                Some(k) => format!("list of {}", plural(&k)),
                None => "list".to_string(),
            }
        }
        Some("object") => {
            let value = shape.get("additionalProperties").map(|v| resolve(v, defs));
            let value = value.map(|v| kind(v, defs)).unwrap_or("any".to_string());
            format!("map of string to {value}")
        }
        Some("integer") => match shape.get("minimum").and_then(Value::as_f64) {
            Some(m) if m >= 0.0 => "integer ≥ 0".to_string(),
            _ => "integer".to_string(),
        },
        Some(other) => other.to_string(),
        None => "any".to_string(),
    }
}

fn plural(kind: &str) -> String {
    match kind {
        "string" | "integer" | "boolean" => format!("{kind}s"),
        other => other.to_string(),
    }
}

/// `"string"` from `"string"` or `["string", "null"]`.
fn primary_type(shape: &Value) -> Option<&str> {
    match shape.get("type")? {
        Value::String(t) => Some(t),
        Value::Array(types) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null"),
        _ => None,
    }
}

/// A closed set's values, as `enum` or as `oneOf` of `const`s (variants with doc comments).
fn choices(shape: &Value) -> Option<Vec<String>> {
    let code = |v: &Value| v.as_str().map(|s| format!("`{s}`"));
    if let Some(values) = shape.get("enum").and_then(Value::as_array) {
        return Some(values.iter().filter_map(code).collect());
    }
    let variants = shape.get("oneOf").and_then(Value::as_array)?;
    let mut values = Vec::new();
    for variant in variants {
        match (variant.get("const"), variant.get("enum")) {
            (Some(value), _) => values.push(code(value)?),
            (None, Some(Value::Array(more))) => values.extend(more.iter().filter_map(code)),
            _ => return None,
        }
    }
    Some(values)
}

/// The schema's own default (from `#[serde(default = "…")]`), when not null.
fn schema_default(property: &Value) -> Option<String> {
    match property.get("default")? {
        Value::Null => None,
        value => Some(format!("`{value}`")),
    }
}

/// Splits `Text. Default X.` (or `…; default: X.`) into the text and `X`; failing that, a
/// closed set's `` `x` (default) `` gives `` `x` ``. Sentences end at a `.` outside
/// backticks followed by a space or the end.
fn split_default(text: &str) -> (String, Option<String>) {
    let (kept, default) = split_default_sentence(text);
    if default.is_some() {
        return (kept, default);
    }
    let marked = text
        .find("` (default")
        .and_then(|end| text[..end].rfind('`').map(|start| &text[start..=end]));
    (kept, marked.map(str::to_string))
}

fn split_default_sentence(text: &str) -> (String, Option<String>) {
    let sentences = sentences(text);
    let mut kept = Vec::new();
    let mut default = None;
    for sentence in sentences {
        let found = ["Default: ", "Default ", "; default: ", "; default "]
            .iter()
            .find_map(|marker| sentence.find(marker).map(|at| (at, marker.len())))
            .filter(|(at, _)| *at == 0 || sentence.as_bytes()[*at] == b';');
        match (found, &default) {
            (Some((at, len)), None) => {
                let value = sentence[at + len..].trim_end_matches('.').trim();
                default = Some(value.to_string());
                let before = sentence[..at].trim();
                if !before.is_empty() {
                    kept.push(format!("{before}."));
                }
            }
            _ => kept.push(sentence.to_string()),
        }
    }
    (kept.join(" "), default)
}

fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut in_code) = (0, false);
    let bytes = text.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        match b {
            b'`' => in_code = !in_code,
            b'.' if !in_code && bytes.get(i + 1).is_none_or(|n| *n == b' ') => {
                out.push(text[start..=i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if !text[start..].trim().is_empty() {
        out.push(text[start..].trim());
    }
    out
}

/// The key table entry for `path`: its own, or its nearest section's (`auth.acl[].name` is
/// classified by `auth`).
fn classify(path: &str, keys: &[Key]) -> Option<Applied> {
    let plain = path.replace("[]", "");
    keys.iter()
        .filter(|k| plain == k.name || plain.starts_with(&format!("{}.", k.name)))
        .max_by_key(|k| k.name.len())
        .map(|k| k.applied)
}

/// The Markdown of `docs/configuration.md`.
pub fn markdown() -> String {
    let mut out = String::from(include_str!("reference_intro.md"));
    let docs = key_docs();
    for doc in &docs {
        if !doc.path.contains('.') {
            let _ = writeln!(out, "\n## `{}`\n\n{}", doc.path, doc.description);
            match &doc.default {
                _ if doc.required => out.push_str("\nThis section is required.\n"),
                Some(default) => {
                    let _ = writeln!(out, "\nWhen left out: {default}.");
                }
                None => {}
            }
            out.push_str("\n| Key | Type | Required | Default | Reload | Description |\n");
            out.push_str("|---|---|---|---|---|---|\n");
        }
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} | {} |",
            doc.path,
            doc.kind,
            if doc.required { "yes" } else { "no" },
            cell(doc.default.as_deref().unwrap_or("—")),
            reload_words(doc.applied),
            cell(&doc.description),
        );
    }
    out
}

fn reload_words(applied: Option<Applied>) -> &'static str {
    match applied {
        Some(Applied::Live) => "live",
        Some(Applied::AtRestart) => "restart",
        Some(Applied::AtRestartUnlessRemoved) => "restart (removal: live)",
        None => "per key",
    }
}

/// A table cell: `|` would end it.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_sentence_is_taken_out_of_the_description() {
        let split = |t: &str| split_default(t);
        assert_eq!(
            split("TLS listeners. Default `[\"0.0.0.0:443\"]`."),
            ("TLS listeners.".into(), Some("`[\"0.0.0.0:443\"]`".into()))
        );
        assert_eq!(
            split("Public URL (`https://host[:port]`); default: derived from `Host`."),
            (
                "Public URL (`https://host[:port]`).".into(),
                Some("derived from `Host`".into())
            )
        );
        assert_eq!(
            split("Token lifetime. Default `5m`; at least 60s. More."),
            (
                "Token lifetime. More.".into(),
                Some("`5m`; at least 60s".into())
            )
        );
        assert_eq!(split("No default here."), ("No default here.".into(), None));
        assert_eq!(
            split("`text` (default) or `json`."),
            ("`text` (default) or `json`.".into(), Some("`text`".into()))
        );
    }

    #[test]
    fn list_items_are_classified_by_their_section() {
        let keys = [
            Key {
                name: "auth",
                applied: Applied::Live,
            },
            Key {
                name: "auth.trusted_issuers",
                applied: Applied::AtRestart,
            },
        ];
        assert_eq!(classify("auth.acl[].name", &keys), Some(Applied::Live));
        assert_eq!(
            classify("auth.trusted_issuers[].realm", &keys),
            Some(Applied::AtRestart)
        );
        assert_eq!(classify("authx", &keys), None);
    }
}
