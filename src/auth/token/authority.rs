//! Issuing and verifying tokens for one service (the token's audience).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::Header;

use super::cache::{self, VerifiedTokens};
use super::claims::{self, AccessEntry, Claims, TokenError, LEEWAY};
use super::keys::SigningKeys;
use super::reuse::ReusedTokens;
use crate::registry::Scope;

/// `nbf` is set this far in the past, as GitLab does, to absorb small clock skew.
const NOT_BEFORE_SKEW: u64 = 5;

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
    /// The edge's own tokens, reused ([`TokenAuthority::issue_reused`]).
    reused: ReusedTokens,
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
            reused: ReusedTokens::default(),
        }
    }

    pub(crate) fn service(&self) -> &str {
        &self.service
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Signs a token for `subject` (`""` = anonymous) granting `access`.
    pub fn issue(&self, subject: &str, access: &[Scope], now: SystemTime) -> Issued {
        let access = access.iter().map(|s| AccessEntry::new(s, &[])).collect();
        self.issue_with(subject, access, None, None, now)
    }

    /// A token the edge signs for itself (`subject`), the same one while more than half of
    /// its lifetime is left ([`ReusedTokens`]).
    pub(crate) fn issue_reused(&self, subject: &str, access: &[Scope], now: SystemTime) -> String {
        let scopes: Vec<String> = access.iter().map(Scope::to_string).collect();
        let key = format!("{subject} {}", scopes.join(" "));
        let lifetime = self.expiration.max(Duration::from_secs(60));
        self.reused.get_or_sign(key, lifetime, now, || {
            self.issue(subject, access, now).token
        })
    }

    /// Like [`TokenAuthority::issue`] with access entries as given (their `from:`
    /// networks), ending at `not_after` (seconds since the epoch) when that comes first.
    pub(crate) fn issue_until(
        &self,
        subject: &str,
        access: Vec<AccessEntry>,
        not_after: Option<u64>,
        now: SystemTime,
    ) -> Issued {
        self.issue_with(subject, access, None, not_after, now)
    }

    /// A refresh token for `identity`, ending at `not_after` (seconds since the epoch)
    /// when that comes before the configured expiration.
    pub(crate) fn issue_refresh(
        &self,
        identity: &crate::auth::identity::Identity,
        not_after: Option<u64>,
        now: SystemTime,
    ) -> Issued {
        self.issue_with(
            &identity.account,
            Vec::new(),
            Some(identity.clone()),
            not_after,
            now,
        )
    }

    fn issue_with(
        &self,
        subject: &str,
        access: Vec<AccessEntry>,
        identity: Option<crate::auth::identity::Identity>,
        not_after: Option<u64>,
        now: SystemTime,
    ) -> Issued {
        let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let mut expires_in = self.expiration.as_secs().max(60);
        if let Some(end) = not_after {
            expires_in = expires_in.min(end.saturating_sub(iat));
        }
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: subject.to_string(),
            aud: self.service.clone(),
            exp: iat + expires_in,
            nbf: iat.saturating_sub(NOT_BEFORE_SKEW),
            iat,
            jti: crate::request::random_id(),
            access,
            identity,
        };
        let mut header = Header::new(self.keys.algorithm());
        header.typ = Some("JWT".into());
        header.kid = Some(self.keys.kid().to_string());
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
        let key = cache::key(token);
        if let Some(claims) = self.verified.get(&key) {
            return claims::still_valid(&claims, SystemTime::now(), LEEWAY).map(|()| claims);
        }
        let claims = Arc::new(self.verify_signed(token)?);
        self.verified.insert(key, claims.clone());
        Ok(claims)
    }

    fn verify_signed(&self, token: &str) -> Result<Claims, TokenError> {
        let identity = (self.issuer.as_str(), self.service.as_str());
        let data = claims::decode(
            token,
            &self.keys.decoding,
            self.keys.algorithm(),
            identity,
            LEEWAY,
        )?;
        if !self.keys.names_this_key(&data.header) {
            return Err(TokenError::Invalid);
        }
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use jsonwebtoken::Algorithm;
    use std::path::Path;

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
        assert!(claims.allows(&scope, None));
        assert!(!claims.allows(&Scope::repository("alice/app", &["delete"]), None));
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
        assert_eq!(claims::still_valid(&first, expiry, LEEWAY), Ok(()));
        assert_eq!(
            claims::still_valid(&first, expiry + Duration::from_secs(LEEWAY + 1), LEEWAY),
            Err(TokenError::Expired)
        );
        let not_before = UNIX_EPOCH + Duration::from_secs(first.nbf);
        assert_eq!(
            claims::still_valid(&first, not_before - Duration::from_secs(LEEWAY + 1), LEEWAY),
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
}
