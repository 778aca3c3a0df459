//! Answers to the CA's challenges while an order is being validated: key
//! authorizations for http-01 (served by the plain-HTTP listeners) and self-signed
//! `acmeIdentifier` certificates for tls-alpn-01 (served by the TLS resolver).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use pingora::tls::sign::CertifiedKey;
use rcgen::{CertificateParams, CustomExtension, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// Why a tls-alpn-01 answer certificate could not be made (same text as the cause).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ChallengeCertError {
    #[error("{0}")]
    Generate(#[from] rcgen::Error),
    #[error("{0}")]
    Key(#[from] rustls::Error),
}

pub(crate) use crate::tls::ACME_TLS_ALPN;

/// Where http-01 tokens are fetched (RFC 8555 §8.3).
pub(crate) const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// Challenge answers in force; empty outside an order.
#[derive(Default)]
pub(crate) struct Challenges {
    /// token → key authorization.
    http01: RwLock<HashMap<String, String>>,
    /// DNS name → validation certificate.
    tls_alpn01: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for Challenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenges").finish_non_exhaustive()
    }
}

impl Challenges {
    /// The body to answer `path` with, when it asks for a pending http-01 token.
    pub(crate) fn http01_answer(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(HTTP01_PREFIX)?;
        read(&self.http01).get(token).cloned()
    }

    /// The validation certificate for `name`, when a tls-alpn-01 challenge is pending.
    pub(crate) fn tls_alpn01_certificate(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        read(&self.tls_alpn01)
            .get(&name.to_ascii_lowercase())
            .cloned()
    }

    pub(super) fn add_http01(&self, token: &str, key_authorization: &str) {
        write(&self.http01).insert(token.to_string(), key_authorization.to_string());
    }

    /// Builds the certificate RFC 8737 §3 describes: `name` as its only SAN and the
    /// SHA-256 of the key authorization in a critical `acmeIdentifier` extension.
    pub(super) fn add_tls_alpn01(
        &self,
        name: &str,
        digest: &[u8],
    ) -> Result<(), ChallengeCertError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(vec![name.to_string()])?;
        params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest)];
        let cert = params.self_signed(&key)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        // Not `tls::certified_key`: its key check parses the certificate with webpki,
        // which refuses the critical acmeIdentifier extension.
        let signing_key = rustls::crypto::ring::default_provider()
            .key_provider
            .load_private_key(key_der)?;
        let certified = CertifiedKey::new(vec![cert.der().clone()], signing_key);
        write(&self.tls_alpn01).insert(name.to_ascii_lowercase(), Arc::new(certified));
        Ok(())
    }

    /// Forgets every answer (the order is over, whatever its outcome).
    pub(super) fn clear(&self) {
        write(&self.http01).clear();
        write(&self.tls_alpn01).clear();
    }
}

// A panic while holding one of these locks cannot leave a map half-updated.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl crate::tls::ValidationCertificates for Challenges {
    fn for_name(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.tls_alpn01_certificate(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http01_answers_only_pending_tokens() {
        let c = Challenges::default();
        c.add_http01("tok-1", "tok-1.thumb");
        assert_eq!(
            c.http01_answer("/.well-known/acme-challenge/tok-1")
                .as_deref(),
            Some("tok-1.thumb")
        );
        assert_eq!(c.http01_answer("/.well-known/acme-challenge/tok-2"), None);
        assert_eq!(c.http01_answer("/tok-1"), None);
        c.clear();
        assert_eq!(c.http01_answer("/.well-known/acme-challenge/tok-1"), None);
    }

    #[test]
    fn tls_alpn01_certificate_carries_the_digest() {
        let c = Challenges::default();
        let digest = [7u8; 32];
        c.add_tls_alpn01("Registry.Test", &digest).unwrap();
        let cert = c.tls_alpn01_certificate("registry.test").expect("pending");
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert.cert[0]).unwrap();
        let ext = parsed
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier extension");
        assert!(ext.critical);
        // DER OCTET STRING of 32 bytes: 04 20 <digest>.
        assert_eq!(&ext.value[..2], &[0x04, 0x20]);
        assert_eq!(&ext.value[2..], &digest);
        assert!(c.tls_alpn01_certificate("other.test").is_none());
    }
}
