//! The signing key and its certificate chain, with the header fields derived from them:
//! `kid` (libtrust key ID, what distribution 2.8 looks up) and `x5c` (what 3.x needs).

use std::path::{Path, PathBuf};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("{}: unsupported key: {reason}", path.display())]
    Unsupported { path: PathBuf, reason: String },
    #[error("{}: signing key does not match the certificate {}", key.display(), cert.display())]
    Mismatch { key: PathBuf, cert: PathBuf },
}

/// The signing key, its certificate chain and the derived header fields.
#[derive(Clone)]
pub struct SigningKeys {
    algorithm: Algorithm,
    pub(super) encoding: EncodingKey,
    pub(super) decoding: DecodingKey,
    kid: String,
    pub(super) x5c: Vec<String>,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("SigningKeys")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .finish()
    }
}

impl SigningKeys {
    /// Loads a PEM private key and its PEM certificate chain (signing certificate first).
    pub fn load(key_path: &Path, cert_path: &Path) -> Result<SigningKeys, KeyError> {
        super::jwt_crypto::install();
        let file_err = |path: &Path, reason: String| KeyError::File {
            path: path.to_path_buf(),
            reason,
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
            .map_err(|e| file_err(cert_path, format!("cannot read certificate: {e:?}")))?
            .collect::<Result<_, _>>()
            .map_err(|e| file_err(cert_path, format!("cannot read certificate: {e:?}")))?;
        let leaf = chain
            .first()
            .ok_or_else(|| file_err(cert_path, "no CERTIFICATE block found".into()))?;
        let verifying = verifying_key(leaf).map_err(|e| match e {
            CertKeyError::Certificate(reason) => file_err(cert_path, reason),
            CertKeyError::Unsupported(reason) => KeyError::Unsupported {
                path: cert_path.to_path_buf(),
                reason,
            },
        })?;
        let key_pem = std::fs::read(key_path).map_err(|e| file_err(key_path, e.to_string()))?;
        let unsupported = |e: jsonwebtoken::errors::Error| KeyError::Unsupported {
            path: key_path.to_path_buf(),
            reason: e.to_string(),
        };
        let encoding = match verifying.algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&key_pem).map_err(unsupported)?,
            _ => EncodingKey::from_ec_pem(&key_pem).map_err(unsupported)?,
        };
        let VerifyingKey {
            algorithm,
            decoding,
            kid,
        } = verifying;
        let b64 = base64::engine::general_purpose::STANDARD;
        let keys = SigningKeys {
            algorithm,
            encoding,
            decoding,
            kid,
            x5c: chain.iter().map(|c| b64.encode(c.as_ref())).collect(),
        };
        keys.check_pair(key_path, cert_path)?;
        Ok(keys)
    }

    /// Signs and verifies a probe token: the key must match the certificate.
    fn check_pair(&self, key_path: &Path, cert_path: &Path) -> Result<(), KeyError> {
        let mismatch = || KeyError::Mismatch {
            key: key_path.to_path_buf(),
            cert: cert_path.to_path_buf(),
        };
        let probe = jsonwebtoken::encode(
            &Header::new(self.algorithm),
            &serde_json::json!({"probe": 1}),
            &self.encoding,
        )
        .map_err(|_| mismatch())?;
        let mut validation = Validation::new(self.algorithm);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_aud = false;
        jsonwebtoken::decode::<serde_json::Value>(&probe, &self.decoding, &validation)
            .map_err(|_| mismatch())?;
        Ok(())
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Whether a header's key hints point at this key. The registry picks its key by
    /// `x5c` chain or by `kid`; a token whose hints name another key would pass the edge's
    /// signature check and then fail at the registry, so the edge refuses it first.
    /// At least one hint must be present: the registry refuses tokens with neither.
    pub(super) fn names_this_key(&self, header: &Header) -> bool {
        let kid_ok = header.kid.as_deref().map(|kid| kid == self.kid);
        let x5c_ok = header
            .x5c
            .as_ref()
            .map(|chain| chain.first() == self.x5c.first());
        match (kid_ok, x5c_ok) {
            (None, None) => false,
            (kid, x5c) => kid.unwrap_or(true) && x5c.unwrap_or(true),
        }
    }

    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }
}

/// RSA key sizes ring verifies (`ring::signature::RSA_PKCS1_2048_8192_SHA256`).
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;

/// What verifying a token signed by a certificate's key needs.
pub(super) struct VerifyingKey {
    /// RS256 for an RSA key, ES256 for an EC P-256 key (what distribution's libtrust takes).
    pub algorithm: Algorithm,
    pub decoding: DecodingKey,
    /// The libtrust key ID of the certificate's public key.
    pub kid: String,
}

/// Why a certificate's key cannot verify tokens.
pub(super) enum CertKeyError {
    /// Not a readable X.509 certificate.
    Certificate(String),
    /// A key type tokens are not signed with.
    Unsupported(String),
}

/// The verifying key of the DER certificate `cert`.
pub(super) fn verifying_key(cert: &[u8]) -> Result<VerifyingKey, CertKeyError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| CertKeyError::Certificate(format!("invalid certificate: {e}")))?;
    let spki = cert.public_key();
    let public_pem = pem_block("PUBLIC KEY", spki.raw);
    let algorithm = match spki.algorithm.algorithm.to_id_string().as_str() {
        "1.2.840.113549.1.1.1" => {
            // ring verifies RSA signatures of 2048 to 8192 bits only: a key outside would load
            // and then refuse every token.
            let bits = match spki.parsed() {
                Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => rsa.key_size(),
                _ => 0,
            };
            if !RSA_BITS.contains(&bits) {
                return Err(CertKeyError::Unsupported(format!(
                    "an RSA key of {bits} bits; RS256 keys must have {} to {} bits",
                    RSA_BITS.start(),
                    RSA_BITS.end()
                )));
            }
            Algorithm::RS256
        }
        "1.2.840.10045.2.1" => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            if curve.as_deref() != Some("1.2.840.10045.3.1.7") {
                return Err(CertKeyError::Unsupported(
                    "EC keys must use P-256 (ES256)".into(),
                ));
            }
            Algorithm::ES256
        }
        other => {
            return Err(CertKeyError::Unsupported(format!(
                "public key algorithm {other}; use RSA or EC P-256"
            )))
        }
    };
    let decoding = match algorithm {
        Algorithm::RS256 => DecodingKey::from_rsa_pem(public_pem.as_bytes()),
        _ => DecodingKey::from_ec_pem(public_pem.as_bytes()),
    }
    .map_err(|e| CertKeyError::Unsupported(e.to_string()))?;
    Ok(VerifyingKey {
        algorithm,
        decoding,
        kid: libtrust_key_id(spki.raw),
    })
}

fn pem_block(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// libtrust key ID: SHA-256 of the DER SubjectPublicKeyInfo, first 240 bits, base32
/// without padding, in 12 groups of 4 joined by `:`.
pub fn libtrust_key_id(spki_der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, spki_der);
    let encoded = data_encoding::BASE32_NOPAD.encode(&digest.as_ref()[..30]);
    encoded
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mismatched_pair_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        crate::certgen::generate(&dir.path().join("a"), &["t".into()]).unwrap();
        crate::certgen::generate(&dir.path().join("b"), &["t".into()]).unwrap();
        let err = SigningKeys::load(
            &dir.path().join("a/registry-auth.key"),
            &dir.path().join("b/registry-auth.crt"),
        )
        .unwrap_err();
        assert!(matches!(err, KeyError::Mismatch { .. }), "{err}");
    }

    #[test]
    fn libtrust_kid_format() {
        let kid = libtrust_key_id(b"any spki bytes");
        let groups: Vec<&str> = kid.split(':').collect();
        assert_eq!(groups.len(), 12);
        assert!(groups.iter().all(|g| g.len() == 4
            && g.bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))));
    }
}
