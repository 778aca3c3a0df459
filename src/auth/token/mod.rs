//! Registry bearer tokens: signing what an unmodified distribution registry accepts,
//! and verifying what clients present at the edge.
//!
//! Header: `alg` RS256 or ES256 (raw r‖s), `typ: JWT`, `kid` = libtrust key ID and
//! `x5c` = the signing chain — `kid` is what distribution 2.8 looks up, `x5c` what 3.x
//! needs (`registry-auth.md` §2). Verification accepts only the configured algorithm
//! and our own key, so `alg: none`, HS* and foreign keys all fail.
//!
//! - `keys`: the signing key, its certificate chain, `kid` and `x5c`.
//! - `claims`: the claims and `access` entries, what they allow, why a token is refused.
//! - `authority`: issuing and verifying for one service (audience).
//! - `cache`: tokens already verified, so a repeat costs a hash and a lookup.
//! - `trusted`: verifying tokens another service issues (`auth.trusted_issuers`).
//! - `jwt_crypto`: the jsonwebtoken crypto provider on ring.

pub mod authority;
pub mod cache;
pub mod claims;
pub mod jwt_crypto;
pub mod keys;
pub(crate) mod reuse;
pub mod trusted;

pub use authority::{Issued, TokenAuthority};
pub use claims::Claims;
pub(crate) use claims::TokenError;
pub(crate) use keys::KeyError;
pub use keys::{libtrust_key_id, SigningKeys};
pub use trusted::TrustedIssuers;
