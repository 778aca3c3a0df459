//! Tokens another token service issues for the same registry (`auth.trusted_issuers`):
//! GitLab's `/jwt/auth`, docker_auth, Harbor. The edge verifies them as distribution does
//! (`registry-auth.md` §2), so a token that passes the edge passes the registry too:
//!
//! - the signing key is found by the header's `x5c` (its first certificate must be one of the
//!   bundle's; an `x5c` that names another fails outright, as in distribution 3.x) or, without
//!   `x5c`, by `kid` = the libtrust key ID of a bundle certificate's key (GitLab sends only
//!   `kid`); a header with neither is refused;
//! - RS256 for RSA keys, ES256 for P-256 keys, nothing else (`alg: none` and HS* fail);
//! - `iss` and `aud` must be the issuer's, `exp` is required, and `exp`/`nbf` get the
//!   registry's 60 s leeway (the issuer's clock is not the edge's).
//!
//! Limitation: an `x5c` chain is matched by its first certificate only; one that reaches a
//! bundle certificate through intermediates is refused (GitLab, Harbor and docker_auth sign
//! with a certificate that is itself in the bundle).

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Header};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::cache::{self, VerifiedTokens};
use super::claims::{self, Claims, TokenError, LEEWAY};
use super::keys::{verifying_key, CertKeyError, KeyError, VerifyingKey};
use crate::config::TrustedIssuer as TrustedIssuerSettings;

/// Verified tokens remembered per issuer (about 200 bytes each).
const VERIFIED_CAPACITY: usize = 8192;

/// One certificate of an issuer's bundle.
struct TrustedKey {
    /// The certificate's DER bytes, compared with an `x5c` header's first entry.
    certificate: Vec<u8>,
    algorithm: Algorithm,
    decoding: DecodingKey,
    kid: String,
}

/// A token service whose tokens the edge accepts.
pub(crate) struct TrustedIssuer {
    issuer: String,
    service: String,
    realm: String,
    keys: Vec<TrustedKey>,
    verified: VerifiedTokens,
}

impl std::fmt::Debug for TrustedIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedIssuer")
            .field("issuer", &self.issuer)
            .field("service", &self.service)
            .field("realm", &self.realm)
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl TrustedIssuer {
    /// Reads the issuer's certificate bundle. Errors name the file: unreadable, no
    /// certificate, or a certificate whose key cannot sign registry tokens.
    pub(crate) fn load(settings: &TrustedIssuerSettings) -> Result<TrustedIssuer, KeyError> {
        super::jwt_crypto::install();
        let path = settings.certificates.as_path();
        let file_err = |reason: String| KeyError::File {
            path: path.to_path_buf(),
            reason,
        };
        let bundle: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<_, _>>())
            .map_err(|e| {
                file_err(format!(
                    "cannot read certificates: {}",
                    crate::tls::pem_reason(e)
                ))
            })?;
        if bundle.is_empty() {
            return Err(file_err("no CERTIFICATE block found".into()));
        }
        let keys = bundle
            .iter()
            .map(|cert| trusted_key(path, cert))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustedIssuer {
            issuer: settings.issuer.clone(),
            service: settings.service.clone(),
            realm: settings.realm.clone(),
            keys,
            verified: VerifiedTokens::new(VERIFIED_CAPACITY),
        })
    }

    /// The absolute URL of the issuer's token endpoint.
    pub(crate) fn realm(&self) -> &str {
        &self.realm
    }

    pub(crate) fn service(&self) -> &str {
        &self.service
    }

    /// Verifies a token whose header names `signing` (one of this issuer's keys) and
    /// remembers it under `key`.
    fn verify_signed(
        &self,
        token: &str,
        key: cache::TokenKey,
        signing: &TrustedKey,
    ) -> Result<Arc<Claims>, TokenError> {
        let identity = (self.issuer.as_str(), self.service.as_str());
        let data = claims::decode(
            token,
            &signing.decoding,
            signing.algorithm,
            identity,
            LEEWAY,
        )?;
        let claims = Arc::new(data.claims);
        self.verified.insert(key, claims.clone());
        Ok(claims)
    }

    /// The bundle key `header` names: by `x5c` when present (its first certificate must be
    /// in the bundle), else by `kid`. `None` when it names none of them.
    fn key_named_by(&self, header: &Header) -> Option<&TrustedKey> {
        if let Some(chain) = &header.x5c {
            let der = base64::engine::general_purpose::STANDARD
                .decode(chain.first()?)
                .ok()?;
            return self.keys.iter().find(|k| k.certificate == der);
        }
        let kid = header.kid.as_deref()?;
        self.keys.iter().find(|k| k.kid == kid)
    }
}

fn trusted_key(path: &Path, cert: &CertificateDer<'_>) -> Result<TrustedKey, KeyError> {
    let VerifyingKey {
        algorithm,
        decoding,
        kid,
    } = verifying_key(cert).map_err(|e| match e {
        CertKeyError::Certificate(reason) => KeyError::File {
            path: path.to_path_buf(),
            reason,
        },
        CertKeyError::Unsupported(reason) => KeyError::Unsupported {
            path: path.to_path_buf(),
            reason,
        },
    })?;
    Ok(TrustedKey {
        certificate: cert.to_vec(),
        algorithm,
        decoding,
        kid,
    })
}

/// Every trusted issuer; empty when none are configured.
#[derive(Debug, Default)]
pub struct TrustedIssuers(Vec<TrustedIssuer>);

impl TrustedIssuers {
    /// Loads every entry of `auth.trusted_issuers`; the error carries the entry's index.
    pub fn load(settings: &[TrustedIssuerSettings]) -> Result<TrustedIssuers, (usize, KeyError)> {
        settings
            .iter()
            .enumerate()
            .map(|(i, s)| TrustedIssuer::load(s).map_err(|e| (i, e)))
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedIssuers)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The issuer named in challenges when the edge has no realm of its own: the first.
    pub(crate) fn first(&self) -> Option<&TrustedIssuer> {
        self.0.first()
    }

    /// Verifies `token` with the issuer whose key its header names (see the module); `None`
    /// when it names no trusted issuer's key (the token is someone else's to judge). A token
    /// verified before skips the signature check; its validity period is checked again.
    pub fn verify(&self, token: &str) -> Option<Result<Arc<Claims>, TokenError>> {
        if self.0.is_empty() {
            return None;
        }
        let key = cache::key(token);
        for issuer in &self.0 {
            if let Some(claims) = issuer.verified.get(&key) {
                let valid = claims::still_valid(&claims, SystemTime::now(), LEEWAY);
                return Some(valid.map(|()| claims));
            }
        }
        let header = jsonwebtoken::decode_header(token).ok()?;
        self.0.iter().find_map(|issuer| {
            let signing = issuer.key_named_by(&header)?;
            Some(issuer.verify_signed(token, key, signing))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::token::{SigningKeys, TokenAuthority};
    use crate::registry::Scope;
    use std::path::PathBuf;
    use std::time::Duration;

    /// A signing pair made by `gen-certs` in `dir/name`: (keys, certificate path).
    fn pair(dir: &Path, name: &str) -> (SigningKeys, PathBuf) {
        let dir = dir.join(name);
        crate::certgen::generate(&dir, &["issuer.test".into()]).unwrap();
        let cert = dir.join("registry-auth.crt");
        let keys = SigningKeys::load(&dir.join("registry-auth.key"), &cert).unwrap();
        (keys, cert)
    }

    fn token(keys: SigningKeys, issuer: &str) -> String {
        let authority = TokenAuthority::new(
            keys,
            issuer.into(),
            "registry".into(),
            Duration::from_secs(300),
        );
        let access = [Scope::repository("alice/app", &["pull"])];
        authority.issue("alice", &access, SystemTime::now()).token
    }

    #[test]
    fn tokens_are_judged_by_the_issuer_whose_key_they_name() {
        let dir = tempfile::tempdir().unwrap();
        let (keys, certificates) = pair(dir.path(), "gitlab");
        let (other, _) = pair(dir.path(), "other");
        let trusted = TrustedIssuers::load(&[TrustedIssuerSettings {
            issuer: "gitlab".into(),
            service: "registry".into(),
            certificates,
            realm: "https://gitlab.test/jwt/auth".into(),
        }])
        .unwrap();
        let good = token(keys.clone(), "gitlab");
        for _ in 0..2 {
            // The second time from the cache.
            let claims = trusted.verify(&good).expect("names the key").unwrap();
            assert_eq!(claims.sub, "alice");
        }
        assert!(
            trusted.verify(&token(other, "gitlab")).is_none(),
            "a token naming another key is not this issuer's to judge"
        );
        assert_eq!(
            trusted.verify(&token(keys, "someone")).map(|r| r.err()),
            Some(Some(TokenError::WrongAudience))
        );
        assert!(TrustedIssuers::default().verify(&good).is_none());
    }
}
