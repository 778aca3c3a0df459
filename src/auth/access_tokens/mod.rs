//! Access tokens (`auth.access_tokens`): credentials for machines that are not a person's
//! password — scoped, expiring, revocable one by one, showing when they were last used
//! (Harbor's robot accounts, GitLab's deploy and personal access tokens).
//!
//! - `secret`: the secrets (`rgt_` + 256 random bits) and their keyed hash.
//! - `record`: a token as stored and as `token list --json` shows it.
//! - `scopes`: `--scope team/app/**:pull,push` and the grant a token makes with the ACL.
//! - `store`: SQLite in `state_dir`, or Redis with `shared_state.redis` (`sqlite`, `redis`).
//! - `login`: the realm's login and refresh with a token.
//! - `error`: why the store could not answer.
//!
//! The `token` commands are `token_command`'s.
//!
//! The edge asks the store at every login and refresh (SQLite answers from memory while no
//! other process wrote, `sqlite`), so a revoke by the `token` command holds at the next
//! one, on every instance sharing the store.

mod error;
pub(crate) mod login;
pub mod record;
mod redis;
pub mod scopes;
pub mod secret;
mod sqlite;
pub mod store;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::OnceCell;

use crate::auth::acl::in_networks;
use crate::shared_state::SharedState;
use record::{unix, TokenRecord};
use store::{Store, StoreError};

/// After the first use (recorded at once), a token's last use is written at most this
/// often per instance, so a busy CI token costs no write per login.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// What the store says of a login with a token.
#[derive(Debug)]
pub(crate) enum TokenCheck {
    Valid(Arc<TokenRecord>),
    /// Unknown name, wrong secret, revoked, expired, or from an address it may not log in
    /// from; the reason is for the log (never the secret).
    Refused(&'static str),
    Unavailable(StoreError),
}

/// The token store and what the edge keeps beside it.
pub struct AccessTokens {
    store: Store,
    /// The store's hash key, read once.
    key: OnceCell<ring::hmac::Key>,
    /// When this instance last wrote each token's last use.
    touched: Mutex<HashMap<String, Instant>>,
}

impl AccessTokens {
    /// The embedded store in `dir` (created private); reads nothing else.
    pub fn open_local(dir: &Path) -> Result<AccessTokens, StoreError> {
        let store = Store::Local(Arc::new(sqlite::SqliteTokens::open(dir)?));
        Ok(Self::with_store(store))
    }

    /// The store in Redis (`shared_state.redis`).
    pub fn shared(shared: Arc<SharedState>) -> AccessTokens {
        Self::with_store(Store::shared(shared))
    }

    fn with_store(store: Store) -> AccessTokens {
        AccessTokens {
            store,
            key: OnceCell::new(),
            touched: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The hash key, made by the first instance or command that needs one.
    pub(crate) async fn hash_key(&self) -> Result<&ring::hmac::Key, StoreError> {
        self.key
            .get_or_try_init(|| async {
                let hex = self.store.hash_key(secret::new_hash_key()?).await?;
                Ok::<_, StoreError>(secret::hmac_key(hex.as_bytes()))
            })
            .await
    }

    /// Checks a login as `name` with `secret` from `client` at `now`.
    pub(crate) async fn check(
        &self,
        name: &str,
        secret: &str,
        client: IpAddr,
        now: SystemTime,
    ) -> TokenCheck {
        let (key, record) = match (self.hash_key().await, self.store.get(name).await) {
            (Ok(key), Ok(record)) => (key, record),
            (Err(e), _) | (_, Err(e)) => return TokenCheck::Unavailable(e),
        };
        let Some(record) = record else {
            return TokenCheck::Refused("no such token");
        };
        if !secret::matches(key, secret, &record.hash) {
            return TokenCheck::Refused("wrong secret");
        }
        still_good(record, client, now)
    }

    /// Checks that the token named `name` with id `id` (what a refresh token names) is
    /// still good for `client` at `now`: a revoke or expiry ends its refresh tokens too.
    pub(crate) async fn recheck(
        &self,
        name: &str,
        id: &str,
        client: IpAddr,
        now: SystemTime,
    ) -> TokenCheck {
        match self.store.get(name).await {
            Err(e) => TokenCheck::Unavailable(e),
            Ok(Some(record)) if record.id == id => still_good(record, client, now),
            Ok(_) => TokenCheck::Refused("no such token"),
        }
    }

    /// Records a use of `record` from `client`: the first at once, later ones at most once
    /// per [`TOUCH_EVERY`] (in the background). A failed write is logged, never refused.
    pub(crate) async fn used(&self, record: &TokenRecord, client: IpAddr, now: SystemTime) {
        let at = unix(now);
        {
            let mut touched = self.touched.lock().unwrap_or_else(|e| e.into_inner());
            let recent = touched
                .get(&record.id)
                .is_some_and(|last| last.elapsed() < TOUCH_EVERY);
            let stored_recently = record
                .last_used_at
                .is_some_and(|last| at < last + TOUCH_EVERY.as_secs());
            if recent || stored_recently {
                return;
            }
            touched.insert(record.id.clone(), Instant::now());
        }
        let (store, name, from) = (self.store.clone(), record.name.clone(), client.to_string());
        let write = async move {
            if let Err(e) = store.touch(&name, at, &from).await {
                tracing::warn!(token = %name, error = %crate::report::chain(&e), "cannot record the access token's last use");
            }
        };
        match record.last_used_at {
            None => write.await,
            Some(_) => {
                tokio::spawn(write);
            }
        }
    }
}

/// A record the secret matched: still good unless revoked, expired or used from an
/// address outside its `--from`.
fn still_good(record: Arc<TokenRecord>, client: IpAddr, now: SystemTime) -> TokenCheck {
    if record.revoked {
        return TokenCheck::Refused("revoked");
    }
    if record.expired(now) {
        return TokenCheck::Refused("expired");
    }
    if !record.from.is_empty() {
        let networks: Vec<ipnet::IpNet> =
            record.from.iter().filter_map(|n| n.parse().ok()).collect();
        if !in_networks(&networks, client) {
            return TokenCheck::Refused("used from an address outside its --from networks");
        }
    }
    TokenCheck::Valid(record)
}
