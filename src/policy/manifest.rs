//! What a manifest references, from its descriptors.
//!
//! OCI image manifests and Docker v2 schema 2 manifests list a `config` and `layers`; OCI
//! indexes and Docker manifest lists list child `manifests`. Each descriptor carries
//! `digest` and `size` (OCI image-spec `descriptor.md`). A `subject` (referrers) is another
//! manifest's, not this one's. Docker schema 1 manifests (`fsLayers` without sizes)
//! reference nothing countable.

/// Largest manifest body read before it is forwarded: the registry's own limit
/// (distribution's `maxManifestBodySize`, 4 MiB).
pub(super) const MAX_MANIFEST: usize = 4 << 20;

/// One referenced blob or child manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reference {
    /// `sha256:…` (or another algorithm, as written).
    pub digest: String,
    /// Bytes, as the descriptor says (the edge replaces it with the registry's own figure
    /// before counting, see `proxy::policy_body`).
    pub size: u64,
    /// A child manifest of an index (under `/manifests/`), not a blob.
    pub child_manifest: bool,
}

/// Why a body is not a manifest the edge can count; the registry would refuse it too.
#[derive(Debug, thiserror::Error)]
pub(super) enum ManifestError {
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not a JSON object")]
    NotObject,
    #[error("field {0:?} given more than once")]
    Repeated(&'static str),
    #[error("field {0:?} is not a descriptor or a list of descriptors")]
    Invalid(&'static str),
}

/// The blobs and child manifests `body` references (`config`, `layers`, `manifests`), in
/// order, repeats kept. Keys match case-insensitively, as Go's `encoding/json` (which the
/// registry decodes with) matches them; a key given twice in any case is refused rather
/// than guessed at. Other fields are ignored, as the registry ignores them.
pub(super) fn references(body: &[u8]) -> Result<Vec<Reference>, ManifestError> {
    let value: serde_json::Value = serde_json::from_slice(body)?;
    let object = value.as_object().ok_or(ManifestError::NotObject)?;
    let field = |name: &'static str| {
        let mut found = object.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name));
        match (found.next(), found.next()) {
            (Some(_), Some(_)) => Err(ManifestError::Repeated(name)),
            (first, None) => Ok(first.map(|(_, v)| v)),
            (None, Some(_)) => Ok(None),
        }
    };
    let mut references = Vec::new();
    if let Some(config) = field("config")? {
        if !config.is_null() {
            references.push(descriptor(config, false).ok_or(ManifestError::Invalid("config"))?);
        }
    }
    for (name, child_manifest) in [("layers", false), ("manifests", true)] {
        let Some(list) = field(name)? else { continue };
        if list.is_null() {
            continue;
        }
        let items = list.as_array().ok_or(ManifestError::Invalid(name))?;
        for item in items {
            references.push(descriptor(item, child_manifest).ok_or(ManifestError::Invalid(name))?);
        }
    }
    Ok(references)
}

/// A descriptor's digest and size; `None` when either is missing or out of range (Go's
/// `int64`, and never negative).
fn descriptor(value: &serde_json::Value, child_manifest: bool) -> Option<Reference> {
    let object = value.as_object()?;
    let get = |name: &str| {
        object
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    };
    let digest = get("digest")?.as_str()?.to_string();
    let size = get("size")?
        .as_u64()
        .filter(|n| i64::try_from(*n).is_ok())?;
    Some(Reference {
        digest,
        size,
        child_manifest,
    })
}

/// The digest of a manifest body as the registry computes it (SHA-256 of the bytes).
pub(super) fn digest_of(body: &[u8]) -> String {
    let hash = ring::digest::digest(&ring::digest::SHA256, body);
    format!("sha256:{}", data_encoding::HEXLOWER.encode(hash.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(body: &[u8]) -> Vec<(u64, bool)> {
        references(body)
            .unwrap()
            .iter()
            .map(|r| (r.size, r.child_manifest))
            .collect()
    }

    #[test]
    fn image_manifests_and_indexes_list_their_descriptors() {
        let image =
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{"mediaType":"x","digest":"sha256:c","size":7},
            "layers":[{"mediaType":"y","digest":"sha256:l1","size":100},
                      {"mediaType":"y","digest":"sha256:l2","size":200}]}"#;
        assert_eq!(sizes(image), [(7, false), (100, false), (200, false)]);
        let index = br#"{"schemaVersion":2,"manifests":[
            {"digest":"sha256:m1","size":500,"platform":{"os":"linux"}}]}"#;
        assert_eq!(sizes(index), [(500, true)]);
        let schema1 = br#"{"schemaVersion":1,"fsLayers":[{"blobSum":"sha256:a"}]}"#;
        assert!(references(schema1).unwrap().is_empty());
        // Keys in any case, as Go matches them; unknown fields of any type ignored.
        let shouted = br#"{"Layers":[{"Digest":"sha256:l","SIZE":9}],"blobs":0,"subject":1}"#;
        assert_eq!(sizes(shouted), [(9, false)]);
    }

    #[test]
    fn bodies_that_are_not_countable_manifests_are_errors() {
        for body in [
            &b"not json"[..],
            b"[1]",
            br#"{"layers":[{"digest":"x"}]}"#,
            br#"{"layers":[{"digest":"x","size":-1}]}"#,
            br#"{"layers":[{"digest":"x","size":18446744073709551615}]}"#,
            br#"{"layers":{"digest":"x","size":1}}"#,
            br#"{"config":{"digest":"x","size":1},"CONFIG":{"digest":"y","size":1}}"#,
        ] {
            assert!(
                references(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
