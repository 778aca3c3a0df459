//! What a manifest references, from its descriptors.
//!
//! OCI image manifests and Docker v2 schema 2 manifests list a `config` and `layers`; OCI
//! indexes and Docker manifest lists list child `manifests`; OCI artifacts may add a
//! `subject` and `blobs`. Each descriptor carries `digest` and `size` (OCI image-spec
//! `descriptor.md`), which is all usage needs. Docker schema 1 manifests (`fsLayers`
//! without sizes) reference nothing countable.

use serde::Deserialize;

/// Largest manifest body read before it is forwarded: the registry's own limit
/// (distribution's `maxManifestBodySize`, 4 MiB).
pub const MAX_MANIFEST: usize = 4 << 20;

/// One referenced blob or child manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `sha256:…` (or another algorithm, as written).
    pub digest: String,
    /// Bytes.
    pub size: u64,
}

/// Why a body is not a manifest the edge can count; the registry is left to refuse it.
#[derive(Debug, thiserror::Error)]
#[error("not a manifest: {0}")]
pub struct ManifestError(#[from] serde_json::Error);

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
    size: u64,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
    #[serde(default)]
    blobs: Vec<Descriptor>,
}

/// The blobs and child manifests `body` references, in order, repeats kept.
pub fn references(body: &[u8]) -> Result<Vec<Reference>, ManifestError> {
    let manifest: Manifest = serde_json::from_slice(body)?;
    Ok(manifest
        .config
        .into_iter()
        .chain(manifest.layers)
        .chain(manifest.manifests)
        .chain(manifest.blobs)
        .map(|d| Reference {
            digest: d.digest,
            size: d.size,
        })
        .collect())
}

/// The digest of a manifest body as the registry computes it (SHA-256 of the bytes).
pub fn digest_of(body: &[u8]) -> String {
    let hash = ring::digest::digest(&ring::digest::SHA256, body);
    format!("sha256:{}", data_encoding::HEXLOWER.encode(hash.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_manifests_and_indexes_list_their_descriptors() {
        let image =
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{"mediaType":"x","digest":"sha256:c","size":7},
            "layers":[{"mediaType":"y","digest":"sha256:l1","size":100},
                      {"mediaType":"y","digest":"sha256:l2","size":200}]}"#;
        let sizes: Vec<u64> = references(image).unwrap().iter().map(|r| r.size).collect();
        assert_eq!(sizes, [7, 100, 200]);
        let index = br#"{"schemaVersion":2,"manifests":[
            {"digest":"sha256:m1","size":500,"platform":{"os":"linux"}}]}"#;
        assert_eq!(
            references(index).unwrap(),
            [Reference {
                digest: "sha256:m1".into(),
                size: 500
            }]
        );
        let schema1 = br#"{"schemaVersion":1,"fsLayers":[{"blobSum":"sha256:a"}]}"#;
        assert!(references(schema1).unwrap().is_empty());
    }

    #[test]
    fn bodies_that_are_not_manifests_are_errors() {
        for body in [
            &b"not json"[..],
            br#"{"layers":[{"digest":"x"}]}"#,
            br#"{"layers":[{"digest":"x","size":-1}]}"#,
        ] {
            assert!(
                references(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
