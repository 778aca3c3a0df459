//! Access-token secrets: made from 256 random bits, shown once, kept only as a keyed hash.
//!
//! The secret has the entropy of a key, so a fast keyed hash (HMAC-SHA-256, ring) is as
//! strong as bcrypt would be and costs microseconds per login; the key is the store's own
//! (made at its first use), so a copied list of hashes alone cannot be checked against
//! guesses.

use data_encoding::{BASE64URL_NOPAD, HEXLOWER};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// Every secret starts with this, so a secret is told from a password at a glance (and by
/// secret scanners), and the realm sends it to the token store, not the login backends.
pub const PREFIX: &str = "rgt_";

/// Random bytes in a secret: 256 bits.
const SECRET_BYTES: usize = 32;

/// Why randomness could not be had (the OS refused).
#[derive(Debug, thiserror::Error)]
#[error("the system's random number generator failed")]
pub struct RandomError;

/// `n` random bytes from the OS.
pub(crate) fn random_bytes(n: usize) -> Result<Vec<u8>, RandomError> {
    let mut bytes = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| RandomError)?;
    Ok(bytes)
}

/// A new secret: `rgt_` and 43 base64url characters.
pub(crate) fn new_secret() -> Result<String, RandomError> {
    Ok(format!(
        "{PREFIX}{}",
        BASE64URL_NOPAD.encode(&random_bytes(SECRET_BYTES)?)
    ))
}

/// A new token id: 16 hex characters (not secret; names the token in lists and revokes).
pub(crate) fn new_id() -> Result<String, RandomError> {
    Ok(HEXLOWER.encode(&random_bytes(8)?))
}

/// A new hash key for a store: 32 random bytes, hex.
pub(crate) fn new_hash_key() -> Result<String, RandomError> {
    Ok(HEXLOWER.encode(&random_bytes(32)?))
}

/// The HMAC key of a store's hash key (its text, as stored).
pub(crate) fn hmac_key(key: &[u8]) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, key)
}

/// The keyed hash of `secret` under the store's `key` (hex), as stored.
pub(crate) fn hash(key: &hmac::Key, secret: &str) -> String {
    HEXLOWER.encode(hmac::sign(key, secret.as_bytes()).as_ref())
}

/// Whether `secret` hashes to `stored`, compared in constant time.
pub(crate) fn matches(key: &hmac::Key, secret: &str, stored: &str) -> bool {
    let Ok(expected) = HEXLOWER.decode(stored.as_bytes()) else {
        return false;
    };
    hmac::verify(key, secret.as_bytes(), &expected).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_distinct_and_checked_by_their_hash() {
        let (a, b) = (new_secret().unwrap(), new_secret().unwrap());
        assert!(a.starts_with(PREFIX) && a.len() == PREFIX.len() + 43, "{a}");
        assert_ne!(a, b);
        let key = hmac_key(b"0123456789abcdef0123456789abcdef");
        let stored = hash(&key, &a);
        assert!(!stored.contains(&a[PREFIX.len()..]));
        assert!(matches(&key, &a, &stored));
        assert!(!matches(&key, &b, &stored));
        assert!(!matches(&hmac_key(b"another key"), &a, &stored));
        assert!(!matches(&key, &a, "not hex"));
    }
}
