//! The token store in Redis (`shared_state.redis`), so every instance of a fleet reads the
//! same tokens and a revoke holds everywhere at the next login.
//!
//! Keys, after `shared_state.redis.key_prefix`: `tokens:hash-key` (the store's hash key),
//! `tokens:names` (a set of names) and `tokens:name:{name}`, a hash whose `record` field
//! holds the immutable part as JSON (written with `HSETNX`, so two creates of one name
//! cannot both win) and whose `revoked`, `last_used_at` and `last_used_from` fields change.

use std::collections::HashMap;
use std::sync::Arc;

use super::error::StoreError;
use super::record::TokenRecord;
use crate::shared_state::SharedState;

/// Tokens in Redis.
pub(crate) struct RedisTokens {
    shared: Arc<SharedState>,
}

impl RedisTokens {
    pub(crate) fn new(shared: Arc<SharedState>) -> RedisTokens {
        RedisTokens { shared }
    }

    fn name_key(&self, name: &str) -> String {
        self.shared.key(&format!("tokens:name:{name}"))
    }

    fn names_key(&self) -> String {
        self.shared.key("tokens:names")
    }

    async fn command<T: redis::FromRedisValue>(
        &self,
        command: redis::Cmd,
    ) -> Result<T, StoreError> {
        (self.shared.command(command).await).ok_or(StoreError::Unavailable)
    }

    async fn pipeline<T: redis::FromRedisValue>(
        &self,
        pipeline: redis::Pipeline,
    ) -> Result<T, StoreError> {
        (self.shared.pipeline(pipeline).await).ok_or(StoreError::Unavailable)
    }

    /// The store's hash key (hex), made by whoever asks first.
    pub(crate) async fn hash_key(&self, fresh: &str) -> Result<String, StoreError> {
        let key = self.shared.key("tokens:hash-key");
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(&key).arg(fresh).arg("NX").ignore();
        pipe.cmd("GET").arg(&key);
        let (value,): (String,) = self.pipeline(pipe).await?;
        Ok(value)
    }

    /// Adds `record`; `false` when its name is taken. One script, so the record and the
    /// name set never disagree.
    pub(crate) async fn insert(&self, record: &TokenRecord) -> Result<bool, StoreError> {
        const INSERT: &str = "if redis.call('HSETNX', KEYS[1], 'record', ARGV[1]) == 1 then \
                              redis.call('SADD', KEYS[2], ARGV[2]) return 1 else return 0 end";
        let json = serde_json::to_string(record).map_err(StoreError::Record)?;
        let (key, names) = (self.name_key(&record.name), self.names_key());
        let name = record.name.clone();
        let added: i64 = self
            .shared
            .exchange(|mut c| async move {
                let script = redis::Script::new(INSERT);
                let mut invocation = script.prepare_invoke();
                invocation.key(key).key(names).arg(json).arg(name);
                invocation.invoke_async(&mut c).await
            })
            .await
            .ok_or(StoreError::Unavailable)?;
        Ok(added == 1)
    }

    /// The token named `name`.
    pub(crate) async fn get(&self, name: &str) -> Result<Option<Arc<TokenRecord>>, StoreError> {
        let mut hgetall = redis::cmd("HGETALL");
        hgetall.arg(self.name_key(name));
        let fields: HashMap<String, String> = self.command(hgetall).await?;
        Ok(into_record(fields)?.map(Arc::new))
    }

    /// Every token, by name.
    pub(crate) async fn all(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let mut smembers = redis::cmd("SMEMBERS");
        smembers.arg(self.names_key());
        let mut names: Vec<String> = self.command(smembers).await?;
        names.sort();
        let mut pipe = redis::pipe();
        for name in &names {
            pipe.cmd("HGETALL").arg(self.name_key(name));
        }
        let all: Vec<HashMap<String, String>> = match names.is_empty() {
            true => Vec::new(),
            false => self.pipeline(pipe).await?,
        };
        let mut records = Vec::new();
        for fields in all {
            records.extend(into_record(fields)?);
        }
        Ok(records)
    }

    /// Marks the token with this id or name revoked; its name, `None` when there is none.
    pub(crate) async fn revoke(&self, id_or_name: &str) -> Result<Option<String>, StoreError> {
        let all = self.all().await?;
        let found = all
            .iter()
            .find(|r| r.id == id_or_name)
            .or_else(|| all.iter().find(|r| r.name == id_or_name));
        let Some(record) = found else {
            return Ok(None);
        };
        let mut hset = redis::cmd("HSET");
        hset.arg(self.name_key(&record.name)).arg("revoked").arg(1);
        let _: i64 = self.command(hset).await?;
        Ok(Some(record.name.clone()))
    }

    /// Records a use of the token named `name` at `at` from `from`.
    pub(crate) async fn touch(&self, name: &str, at: u64, from: &str) -> Result<(), StoreError> {
        let mut hset = redis::cmd("HSET");
        hset.arg(self.name_key(name));
        hset.arg("last_used_at")
            .arg(at)
            .arg("last_used_from")
            .arg(from);
        let _: i64 = self.command(hset).await?;
        Ok(())
    }
}

/// A token's hash as `HGETALL` gives it; `None` for a missing key.
fn into_record(mut fields: HashMap<String, String>) -> Result<Option<TokenRecord>, StoreError> {
    let Some(json) = fields.remove("record") else {
        return Ok(None);
    };
    let mut record: TokenRecord = serde_json::from_str(&json).map_err(StoreError::Record)?;
    record.revoked = fields.get("revoked").is_some_and(|v| v != "0");
    record.last_used_at = fields.get("last_used_at").and_then(|v| v.parse().ok());
    record.last_used_from = fields.remove("last_used_from");
    Ok(Some(record))
}
