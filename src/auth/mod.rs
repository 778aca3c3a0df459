//! Token authentication at the edge: the realm endpoint that issues registry tokens,
//! and the check that keeps unauthenticated or under-scoped requests off the nodes.
//!
//! - `acl`: the access policy (first matching rule wins; `from:` networks).
//! - `access_tokens/`: tokens for machines (`registry-edge token …`): the store, the
//!   login with one, what a token grants.
//! - `glob`: the name globs of ACL rules and token scopes.
//! - `access`: what a registry request needs (as distribution decides it).
//! - `token/`: keys, claims, issuing and verifying (RS256/ES256, kid + x5c), the verified cache.
//! - `identity`: who a login proved to be (account, groups, claims, backend).
//! - `users/`: the login backends (htpasswd, LDAP, OIDC, http) and the credential cache.
//! - `endpoint`: the token endpoint (GET and OAuth2 POST).
//! - `check`: bearer-token check and the 401 challenge.
//!
//! Failed logins are throttled by `limits::logins` (shared with the other limits' core).

pub mod access;
pub mod access_tokens;
pub mod acl;
pub mod check;
pub mod endpoint;
pub(crate) mod glob;
pub mod identity;
pub mod token;
pub mod users;

use std::sync::Arc;

use crate::config::AuthSettings;
use crate::limits::LoginThrottle;
use access_tokens::AccessTokens;
use acl::Acl;
use token::{KeyError, SigningKeys, TokenAuthority};
use users::{Directory, UsersError};

/// Everything the edge needs to answer and check tokens.
pub struct Auth {
    pub realm_path: String,
    pub tokens: TokenAuthority,
    /// Refresh tokens: same key, their own audience, so they never pass as access tokens.
    pub refresh: TokenAuthority,
    pub users: Directory,
    pub acl: Acl,
    /// Failed-login limits; replaced by `Settings::new` with one that shares state (or
    /// survives the reload).
    pub throttle: Arc<LoginThrottle>,
    /// `auth.access_tokens`: the token store (SQLite here; `Settings::new` puts it in Redis
    /// when `shared_state.redis` is set).
    pub access_tokens: Option<Arc<AccessTokens>>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthLoadError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Users(#[from] UsersError),
    #[error(transparent)]
    AccessTokens(#[from] access_tokens::store::StoreError),
}

impl AuthLoadError {
    /// The config key the problem belongs to: the file that could not be read, or the
    /// signing key for a key that cannot be used.
    pub(crate) fn key(&self, settings: &AuthSettings) -> String {
        match self {
            AuthLoadError::Key(KeyError::File { path, .. }) if *path != settings.signing_key => {
                "auth.token.certificate"
            }
            AuthLoadError::Key(_) => "auth.token.signing_key",
            AuthLoadError::Users(e) => return e.key(),
            AuthLoadError::AccessTokens(_) => "auth.access_tokens.state_dir",
        }
        .into()
    }
}

impl Auth {
    pub fn load(settings: &AuthSettings) -> Result<Auth, AuthLoadError> {
        let keys = SigningKeys::load(&settings.signing_key, &settings.certificate)?;
        let refresh_audience = format!("{}/refresh", settings.service);
        Ok(Auth {
            realm_path: settings.realm_path.clone(),
            refresh: TokenAuthority::new(
                keys.clone(),
                settings.issuer.clone(),
                refresh_audience,
                settings.refresh_expiration,
            ),
            tokens: TokenAuthority::new(
                keys,
                settings.issuer.clone(),
                settings.service.clone(),
                settings.expiration,
            ),
            users: Directory::load(&settings.users)?,
            acl: Acl {
                rules: settings.acl.clone(),
            },
            access_tokens: match &settings.access_tokens {
                Some(dir) => Some(Arc::new(AccessTokens::open_local(dir)?)),
                None => None,
            },
            throttle: Arc::new(LoginThrottle::new(
                settings.failed_logins_per_ip,
                settings.failed_logins_per_account,
                None,
            )),
        })
    }
}
