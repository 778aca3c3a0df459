//! Container images made without a network: uncompressed tar layers of pseudo-random
//! bytes (any size, written as a stream), an OCI image layout over them, and a
//! `docker-archive` of that layout for `docker load`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Pseudo-random bytes (xorshift64*): incompressible enough that no layer shrinks to
/// nothing on the way, and different per seed so two layers never share a digest.
struct Noise {
    state: u64,
    left: u64,
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.left as usize) / 8 * 8;
        let n = if n == 0 {
            buf.len().min(self.left as usize)
        } else {
            n
        };
        for chunk in buf[..n].chunks_mut(8) {
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            let word = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// A tar layer at `path` holding one file `name` of `size` pseudo-random bytes. Seeds
/// differing only in their lowest bit give the same bytes.
pub fn noise_layer(path: &Path, name: &str, size: u64, seed: u64) {
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut tar = tar::Builder::new(file);
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_cksum();
    let noise = Noise {
        state: seed | 1,
        left: size,
    };
    tar.append_data(&mut header, name, noise).unwrap();
    tar.into_inner().unwrap().flush().unwrap();
}

/// `sha256:<hex>` and size of a file, read as a stream.
pub fn file_digest(path: &Path) -> (String, u64) {
    let mut file = std::fs::File::open(path).unwrap();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    (format!("sha256:{}", hex::encode(hasher.finalize())), size)
}

/// An OCI image layout in `dir` whose image `tag` has `layers` (tar files, moved into the
/// layout) in that order; returns the skopeo reference `oci:DIR:TAG`.
pub fn oci_layout(dir: &Path, tag: &str, layers: &[PathBuf]) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let store = |bytes: &[u8]| {
        let hex = hex::encode(Sha256::digest(bytes));
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let mut descriptors = Vec::new();
    for layer in layers {
        let (digest, size) = file_digest(layer);
        std::fs::rename(layer, blobs.join(&digest["sha256:".len()..])).unwrap();
        descriptors.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": size
        }));
    }
    // Uncompressed layers: each layer's diff ID is its digest.
    let diff_ids: Vec<_> = descriptors.iter().map(|d| d["digest"].clone()).collect();
    let config = serde_json::json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids}, "config": {"Cmd": ["/data"]}});
    let (config_digest, config_size) = store(&serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": descriptors});
    let (manifest_digest, manifest_size) = store(&serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest, "size": manifest_size,
        "annotations": {"org.opencontainers.image.ref.name": tag}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    format!("oci:{}:{tag}", dir.display())
}

/// A one-image layout under `dir` with one noise layer of `size` bytes; returns its
/// skopeo reference.
pub fn noise_image(dir: &Path, tag: &str, size: u64, seed: u64) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let layer = dir.join("layer.tar");
    noise_layer(&layer, "data", size, seed);
    oci_layout(dir, tag, &[layer])
}

/// `skopeo copy` of an OCI layout into a `docker-archive` file named `name` (`repo:tag`),
/// what `docker load -i FILE` reads.
pub fn docker_archive(oci_ref: &str, file: &Path, name: &str) {
    let target = format!("docker-archive:{}:{name}", file.display());
    let out = super::skopeo(&["copy", "--quiet", oci_ref, &target]);
    assert!(
        out.status.success(),
        "skopeo copy to docker-archive: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
