//! jsonwebtoken's signatures computed with `ring`, the library rustls already uses here.
//!
//! jsonwebtoken ships RustCrypto and aws-lc backends; RustCrypto's P-256 took ~460 µs
//! per token on the reference machine (issue 6), ring takes a fraction of that and adds
//! no new C build. Only what registry and OpenID tokens use is provided: ES256, ES384,
//! RS256, RS384, RS512, PS256 and the HS family (HS* is refused at
//! verification by the algorithm pin, but tests sign with it to prove that). RSA keys may
//! be DER or, from a JWK, a modulus and exponent.

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind, Result};
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::rand::SystemRandom;
use ring::{hmac, signature as ring_sig};

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils::new_unimplemented(),
};

/// Makes this the process's jsonwebtoken backend. Idempotent; call before the first
/// `encode`/`decode` (loading signing keys does).
pub fn install() {
    // Err only means a provider is installed already, which can only be this one:
    // the crate is built without jsonwebtoken's own backends.
    let _ = PROVIDER.install_default();
}

struct RingSigner {
    algorithm: Algorithm,
    key: SigningKey,
}

enum SigningKey {
    Ecdsa(ring_sig::EcdsaKeyPair),
    Rsa(ring_sig::RsaKeyPair, &'static dyn ring_sig::RsaEncoding),
    Hmac(hmac::Key),
}

fn new_signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    if key.family() != family_of(algorithm)? {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    let key = match algorithm {
        Algorithm::ES256 | Algorithm::ES384 => {
            let alg = if *algorithm == Algorithm::ES256 {
                &ring_sig::ECDSA_P256_SHA256_FIXED_SIGNING
            } else {
                &ring_sig::ECDSA_P384_SHA384_FIXED_SIGNING
            };
            let pair =
                ring_sig::EcdsaKeyPair::from_pkcs8(alg, key.as_bytes(), &SystemRandom::new())
                    .map_err(|_| Error::from(ErrorKind::InvalidEcdsaKey))?;
            SigningKey::Ecdsa(pair)
        }
        Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS256 => {
            let encoding: &'static dyn ring_sig::RsaEncoding = match algorithm {
                Algorithm::RS256 => &ring_sig::RSA_PKCS1_SHA256,
                Algorithm::PS256 => &ring_sig::RSA_PSS_SHA256,
                Algorithm::RS384 => &ring_sig::RSA_PKCS1_SHA384,
                _ => &ring_sig::RSA_PKCS1_SHA512,
            };
            let pair = ring_sig::RsaKeyPair::from_der(key.as_bytes())
                .map_err(|e| Error::from(ErrorKind::InvalidRsaKey(e.to_string())))?;
            SigningKey::Rsa(pair, encoding)
        }
        _ => SigningKey::Hmac(hmac::Key::new(hmac_algorithm(algorithm), key.as_bytes())),
    };
    Ok(Box::new(RingSigner {
        algorithm: *algorithm,
        key,
    }))
}

/// The key family an algorithm needs; the algorithms this provider does not offer are errors.
fn family_of(algorithm: &Algorithm) -> Result<AlgorithmFamily> {
    Ok(match algorithm {
        Algorithm::ES256 | Algorithm::ES384 => AlgorithmFamily::Ec,
        Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS256 => {
            AlgorithmFamily::Rsa
        }
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => AlgorithmFamily::Hmac,
        _ => return Err(ErrorKind::InvalidAlgorithm.into()),
    })
}

fn hmac_algorithm(algorithm: &Algorithm) -> hmac::Algorithm {
    match algorithm {
        Algorithm::HS384 => hmac::HMAC_SHA384,
        Algorithm::HS512 => hmac::HMAC_SHA512,
        _ => hmac::HMAC_SHA256,
    }
}

impl Signer<Vec<u8>> for RingSigner {
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        let rng = SystemRandom::new();
        match &self.key {
            SigningKey::Ecdsa(pair) => pair
                .sign(&rng, msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| signature::Error::new()),
            SigningKey::Rsa(pair, encoding) => {
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(*encoding, &rng, msg, &mut sig)
                    .map_err(|_| signature::Error::new())?;
                Ok(sig)
            }
            SigningKey::Hmac(key) => Ok(hmac::sign(key, msg).as_ref().to_vec()),
        }
    }
}

impl JwtSigner for RingSigner {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

struct RingVerifier {
    algorithm: Algorithm,
    key: VerifyingKey,
}

enum VerifyingKey {
    Public(&'static dyn ring_sig::VerificationAlgorithm, Vec<u8>),
    /// An RSA key given as modulus and exponent (a JWK), big-endian bytes.
    RsaComponents(&'static ring_sig::RsaParameters, Vec<u8>, Vec<u8>),
    Hmac(hmac::Key),
}

fn new_verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    if key.family() != family_of(algorithm)? {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    if let DecodingKeyKind::RsaModulusExponent { n, e } = key.kind() {
        let params = rsa_parameters(algorithm).ok_or(ErrorKind::InvalidKeyFormat)?;
        return Ok(Box::new(RingVerifier {
            algorithm: *algorithm,
            key: VerifyingKey::RsaComponents(params, n.clone(), e.clone()),
        }));
    }
    let bytes = key.try_get_as_bytes()?.to_vec();
    let key = match algorithm {
        Algorithm::ES256 => VerifyingKey::Public(&ring_sig::ECDSA_P256_SHA256_FIXED, bytes),
        Algorithm::ES384 => VerifyingKey::Public(&ring_sig::ECDSA_P384_SHA384_FIXED, bytes),
        Algorithm::RS256 => VerifyingKey::Public(&ring_sig::RSA_PKCS1_2048_8192_SHA256, bytes),
        Algorithm::RS384 => VerifyingKey::Public(&ring_sig::RSA_PKCS1_2048_8192_SHA384, bytes),
        Algorithm::RS512 => VerifyingKey::Public(&ring_sig::RSA_PKCS1_2048_8192_SHA512, bytes),
        Algorithm::PS256 => VerifyingKey::Public(&ring_sig::RSA_PSS_2048_8192_SHA256, bytes),
        _ => VerifyingKey::Hmac(hmac::Key::new(hmac_algorithm(algorithm), &bytes)),
    };
    Ok(Box::new(RingVerifier {
        algorithm: *algorithm,
        key,
    }))
}

/// ring's RSA verification for an algorithm, keys of 2048 to 8192 bits.
fn rsa_parameters(algorithm: &Algorithm) -> Option<&'static ring_sig::RsaParameters> {
    Some(match algorithm {
        Algorithm::RS256 => &ring_sig::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &ring_sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &ring_sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &ring_sig::RSA_PSS_2048_8192_SHA256,
        _ => return None,
    })
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        match &self.key {
            VerifyingKey::Public(alg, public) => ring_sig::UnparsedPublicKey::new(*alg, public)
                .verify(msg, sig)
                .map_err(|_| signature::Error::new()),
            VerifyingKey::RsaComponents(params, n, e) => ring_sig::RsaPublicKeyComponents { n, e }
                .verify(params, msg, sig)
                .map_err(|_| signature::Error::new()),
            VerifyingKey::Hmac(key) => {
                hmac::verify(key, msg, sig).map_err(|_| signature::Error::new())
            }
        }
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}
