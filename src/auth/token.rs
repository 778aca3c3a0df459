//! Registry bearer tokens: signing what an unmodified distribution registry accepts,
//! and verifying what clients present at the edge.
//!
//! Header: `alg` RS256 or ES256 (raw r‖s), `typ: JWT`, `kid` = libtrust key ID and
//! `x5c` = the signing chain — `kid` is what distribution 2.8 looks up, `x5c` what 3.x
//! needs (`registry-auth.md` §2). Verification accepts only the configured algorithm
//! and our own key, so `alg: none`, HS* and foreign keys all fail.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::registry::Scope;
use super::token_cache::{self, VerifiedTokens};

/// `nbf` is set this far in the past, as GitLab does, to absorb small clock skew.
const NOT_BEFORE_SKEW: u64 = 5;
/// Tolerance for `exp`/`nbf` when the edge verifies (the registry allows 60 s).
const VERIFY_LEEWAY: u64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("{}: unsupported key: {reason}", path.display())]
    Unsupported { path: PathBuf, reason: String },
    #[error("{}: signing key does not match the certificate {}", key.display(), cert.display())]
    Mismatch { key: PathBuf, cert: PathBuf },
}

/// Why a presented token was refused. Never carries the token itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed or not signed by this registry's key")]
    Invalid,
    #[error("token has expired")]
    Expired,
    #[error("token was issued for another service or by another issuer")]
    WrongAudience,
}

/// One `access` entry of a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    /// A string, not an array: distribution 2.8 fails to parse an array.
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    #[serde(default)]
    pub access: Vec<AccessEntry>,
}

impl Claims {
    /// Whether these claims grant every action of `needed`.
    pub fn allows(&self, needed: &Scope) -> bool {
        needed.actions.iter().all(|action| {
            self.access.iter().any(|entry| {
                entry.kind == needed.kind
                    && entry.name == needed.name
                    && entry.actions.iter().any(|a| a == action || a == "*")
            })
        })
    }
}

/// The signing key, its certificate chain and the derived header fields.
#[derive(Clone)]
pub struct SigningKeys {
    algorithm: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    x5c: Vec<String>,
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
        let (_, cert) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| file_err(cert_path, format!("invalid certificate: {e}")))?;
        let spki = cert.public_key();
        let key_pem = std::fs::read(key_path).map_err(|e| file_err(key_path, e.to_string()))?;
        let public_pem = pem_block("PUBLIC KEY", spki.raw);

        let algorithm = match spki.algorithm.algorithm.to_id_string().as_str() {
            "1.2.840.113549.1.1.1" => Algorithm::RS256,
            "1.2.840.10045.2.1" => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|o| o.to_id_string());
                if curve.as_deref() != Some("1.2.840.10045.3.1.7") {
                    return Err(KeyError::Unsupported {
                        path: cert_path.to_path_buf(),
                        reason: "EC keys must use P-256 (ES256)".into(),
                    });
                }
                Algorithm::ES256
            }
            other => {
                return Err(KeyError::Unsupported {
                    path: cert_path.to_path_buf(),
                    reason: format!("public key algorithm {other}; use RSA or EC P-256"),
                })
            }
        };
        let unsupported = |path: &Path, e: jsonwebtoken::errors::Error| KeyError::Unsupported {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let (encoding, decoding) = match algorithm {
            Algorithm::RS256 => (
                EncodingKey::from_rsa_pem(&key_pem).map_err(|e| unsupported(key_path, e))?,
                DecodingKey::from_rsa_pem(public_pem.as_bytes())
                    .map_err(|e| unsupported(cert_path, e))?,
            ),
            _ => (
                EncodingKey::from_ec_pem(&key_pem).map_err(|e| unsupported(key_path, e))?,
                DecodingKey::from_ec_pem(public_pem.as_bytes())
                    .map_err(|e| unsupported(cert_path, e))?,
            ),
        };
        let b64 = base64::engine::general_purpose::STANDARD;
        let keys = SigningKeys {
            algorithm,
            encoding,
            decoding,
            kid: libtrust_key_id(spki.raw),
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
    fn names_this_key(&self, header: &Header) -> bool {
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

    pub fn kid(&self) -> &str {
        &self.kid
    }
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

/// A freshly issued token and what the reply needs to say about it.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    pub expires_in: u64,
    pub issued_at: SystemTime,
}

/// Issues and verifies tokens for one service.
#[derive(Debug)]
pub struct TokenAuthority {
    keys: SigningKeys,
    issuer: String,
    service: String,
    expiration: Duration,
    verified: VerifiedTokens,
}

/// How many verified tokens the edge remembers (about 200 bytes each).
const VERIFIED_CAPACITY: usize = 8192;

impl TokenAuthority {
    pub fn new(
        keys: SigningKeys,
        issuer: String,
        service: String,
        expiration: Duration,
    ) -> TokenAuthority {
        TokenAuthority {
            keys,
            issuer,
            service,
            expiration,
            verified: VerifiedTokens::new(VERIFIED_CAPACITY),
        }
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Signs a token for `subject` (`""` = anonymous) granting `access`.
    pub fn issue(&self, subject: &str, access: &[Scope], now: SystemTime) -> Issued {
        let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let expires_in = self.expiration.as_secs().max(60);
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: subject.to_string(),
            aud: self.service.clone(),
            exp: iat + expires_in,
            nbf: iat.saturating_sub(NOT_BEFORE_SKEW),
            iat,
            jti: crate::request::random_id(),
            access: access
                .iter()
                .map(|s| AccessEntry {
                    kind: s.kind.clone(),
                    name: s.name.clone(),
                    actions: s.actions.iter().cloned().collect(),
                })
                .collect(),
        };
        let mut header = Header::new(self.keys.algorithm);
        header.typ = Some("JWT".into());
        header.kid = Some(self.keys.kid.clone());
        header.x5c = Some(self.keys.x5c.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.keys.encoding)
            .expect("signing with a key validated at load cannot fail");
        Issued {
            token,
            expires_in,
            issued_at: now,
        }
    }

    /// Verifies signature, algorithm, issuer, audience and validity period. A token
    /// verified before skips the signature check; its validity period is checked again.
    pub fn verify(&self, token: &str) -> Result<Arc<Claims>, TokenError> {
        let key = token_cache::key(token);
        if let Some(claims) = self.verified.get(&key) {
            return still_valid(&claims, SystemTime::now()).map(|()| claims);
        }
        let claims = Arc::new(self.verify_signed(token)?);
        self.verified.insert(key, claims.clone());
        Ok(claims)
    }

    fn verify_signed(&self, token: &str) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(self.keys.algorithm);
        validation.leeway = VERIFY_LEEWAY;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.service]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.keys.decoding, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature
                | jsonwebtoken::errors::ErrorKind::ImmatureSignature => TokenError::Expired,
                jsonwebtoken::errors::ErrorKind::InvalidAudience
                | jsonwebtoken::errors::ErrorKind::InvalidIssuer => TokenError::WrongAudience,
                _ => TokenError::Invalid,
            })?;
        if !self.keys.names_this_key(&data.header) {
            return Err(TokenError::Invalid);
        }
        Ok(data.claims)
    }
}

/// The time checks jsonwebtoken applies at first verification, for cached tokens.
fn still_valid(claims: &Claims, now: SystemTime) -> Result<(), TokenError> {
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    if claims.exp.saturating_add(VERIFY_LEEWAY) < now || claims.nbf > now + VERIFY_LEEWAY {
        return Err(TokenError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authority(dir: &Path) -> TokenAuthority {
        crate::certgen::generate(dir, &["t".into()]).unwrap();
        let keys = SigningKeys::load(
            &dir.join("registry-auth.key"),
            &dir.join("registry-auth.crt"),
        )
        .unwrap();
        TokenAuthority::new(
            keys,
            "issuer".into(),
            "svc".into(),
            Duration::from_secs(300),
        )
    }

    #[test]
    fn issued_tokens_verify_and_carry_registry_fields() {
        let dir = tempfile::tempdir().unwrap();
        let auth = authority(dir.path());
        let scope = Scope::repository("alice/app", &["pull", "push"]);
        let issued = auth.issue("alice", std::slice::from_ref(&scope), SystemTime::now());
        let claims = auth.verify(&issued.token).unwrap();
        assert_eq!(
            (
                claims.sub.as_str(),
                claims.aud.as_str(),
                claims.iss.as_str()
            ),
            ("alice", "svc", "issuer")
        );
        assert!(claims.allows(&scope));
        assert!(!claims.allows(&Scope::repository("alice/app", &["delete"])));
        assert_eq!(claims.exp - claims.iat, 300);
        assert_eq!(claims.iat - claims.nbf, 5);
        let header = jsonwebtoken::decode_header(&issued.token).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        let kid = header.kid.unwrap();
        assert_eq!(kid.len(), 59, "12 groups of 4 and 11 colons: {kid}");
        assert_eq!(header.x5c.unwrap().len(), 1);
        // ES256 signatures are raw r||s (64 bytes), which libtrust expects.
        let sig = issued.token.rsplit('.').next().unwrap();
        assert_eq!(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(sig)
                .unwrap()
                .len(),
            64
        );
        assert_ne!(
            auth.issue("alice", &[], SystemTime::now()).token,
            issued.token,
            "jti differs"
        );
    }

    #[test]
    fn verified_tokens_are_remembered_but_still_expire() {
        let dir = tempfile::tempdir().unwrap();
        let auth = authority(dir.path());
        let token = auth.issue("a", &[], SystemTime::now()).token;
        assert!(auth.verified.is_empty());
        let first = auth.verify(&token).unwrap();
        assert_eq!(auth.verified.len(), 1);
        let again = auth.verify(&token).unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "second check comes from the cache"
        );
        // A tampered copy of a cached token is a different key: full check, refused.
        let mut bytes = token.clone().into_bytes();
        let last = bytes.len() - 3;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            auth.verify(&String::from_utf8(bytes).unwrap()),
            Err(TokenError::Invalid)
        );
        assert_eq!(auth.verified.len(), 1, "refused tokens are not cached");
        // The cached claims still expire: checked against the clock on every use.
        let expiry = UNIX_EPOCH + Duration::from_secs(first.exp);
        assert_eq!(still_valid(&first, expiry), Ok(()));
        assert_eq!(
            still_valid(&first, expiry + Duration::from_secs(VERIFY_LEEWAY + 1)),
            Err(TokenError::Expired)
        );
        let not_before = UNIX_EPOCH + Duration::from_secs(first.nbf);
        assert_eq!(
            still_valid(&first, not_before - Duration::from_secs(VERIFY_LEEWAY + 1)),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn expired_foreign_and_tampered_tokens_fail() {
        let dir = tempfile::tempdir().unwrap();
        let auth = authority(dir.path());
        let old = auth.issue("a", &[], SystemTime::now() - Duration::from_secs(3600));
        assert_eq!(auth.verify(&old.token), Err(TokenError::Expired));
        let other = authority(&dir.path().join("other"));
        assert_eq!(
            auth.verify(&other.issue("a", &[], SystemTime::now()).token),
            Err(TokenError::Invalid)
        );
        let fresh = auth.issue("a", &[], SystemTime::now()).token;
        let mut bytes = fresh.into_bytes();
        let last = bytes.len() - 3;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            auth.verify(&String::from_utf8(bytes).unwrap()),
            Err(TokenError::Invalid)
        );
        let keys = SigningKeys::load(
            &dir.path().join("registry-auth.key"),
            &dir.path().join("registry-auth.crt"),
        )
        .unwrap();
        let wrong_aud = TokenAuthority::new(
            keys,
            "issuer".into(),
            "other".into(),
            Duration::from_secs(60),
        );
        assert_eq!(
            auth.verify(&wrong_aud.issue("a", &[], SystemTime::now()).token),
            Err(TokenError::WrongAudience)
        );
    }

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
