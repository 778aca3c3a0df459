//! Usage shared by several edge instances through Redis (`shared_state.redis` with
//! `policy:`), in place of the embedded store.
//!
//! Keys (under `shared_state.redis.key_prefix`):
//! - `policy:manifest:<repository>@<digest>`: the blob digests a stored manifest
//!   references, space-separated;
//! - `policy:blobs:<namespace>`: hash digest → number of manifests referencing it;
//! - `policy:sizes:<namespace>`: hash digest → size in bytes;
//! - `policy:usage:<namespace>`: the sum of those sizes.
//!
//! A PUT and a DELETE are each one Lua script, so concurrent instances never count a blob
//! twice or free it early. While Redis does not answer, the caller falls back
//! (`shared_state.redis.on_unavailable`): see `Policy`.

use std::sync::Arc;

use super::manifest::Reference;
use crate::shared_state::SharedState;

/// Records a stored manifest. KEYS: manifest, blobs, sizes, usage. ARGV: the manifest's
/// record, then digest and size of each distinct reference. Returns the usage after it.
const PUT: &str = r"
if redis.call('SETNX', KEYS[1], ARGV[1]) == 1 then
  for i = 2, #ARGV, 2 do
    if redis.call('HINCRBY', KEYS[2], ARGV[i], 1) == 1 then
      redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
      redis.call('INCRBY', KEYS[4], ARGV[i + 1])
    end
  end
end
return tonumber(redis.call('GET', KEYS[4]) or '0')
";

/// Records a deleted manifest. KEYS as for [`PUT`]. Returns the usage after it, or -1
/// when the manifest was not known.
const DELETE: &str = r"
local record = redis.call('GET', KEYS[1])
if not record then return -1 end
redis.call('DEL', KEYS[1])
for digest in string.gmatch(record, '%S+') do
  if redis.call('HINCRBY', KEYS[2], digest, -1) <= 0 then
    local size = redis.call('HGET', KEYS[3], digest) or '0'
    redis.call('HDEL', KEYS[2], digest)
    redis.call('HDEL', KEYS[3], digest)
    redis.call('DECRBY', KEYS[4], size)
  end
end
return tonumber(redis.call('GET', KEYS[4]) or '0')
";

/// The usage store in Redis. Every call is `None` while Redis does not answer.
pub(crate) struct RedisUsage {
    shared: Arc<SharedState>,
    put: redis::Script,
    delete: redis::Script,
}

impl RedisUsage {
    pub(crate) fn new(shared: Arc<SharedState>) -> RedisUsage {
        RedisUsage {
            shared,
            put: redis::Script::new(PUT),
            delete: redis::Script::new(DELETE),
        }
    }

    pub(crate) fn shared(&self) -> &SharedState {
        &self.shared
    }

    fn keys(&self, namespace: &str) -> [String; 3] {
        ["blobs", "sizes", "usage"]
            .map(|kind| self.shared.key(&format!("policy:{kind}:{namespace}")))
    }

    fn manifest_key(&self, repository: &str, digest: &str) -> String {
        self.shared
            .key(&format!("policy:manifest:{repository}@{digest}"))
    }

    /// Bytes `namespace` holds.
    pub(crate) async fn usage(&self, namespace: &str) -> Option<u64> {
        let [_, _, usage] = self.keys(namespace);
        let mut get = redis::cmd("GET");
        get.arg(usage);
        let value: Option<i64> = self.shared.command(get).await?;
        Some(value.unwrap_or(0).max(0) as u64)
    }

    /// (usage, the references it does not hold yet) for `namespace`, in one round trip.
    pub(crate) async fn usage_and_unheld(
        &self,
        namespace: &str,
        references: &[Reference],
    ) -> Option<(u64, Vec<Reference>)> {
        let distinct = super::store::distinct(references)
            .cloned()
            .collect::<Vec<_>>();
        let [blobs, _, usage] = self.keys(namespace);
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(usage);
        if !distinct.is_empty() {
            let mut hmget = redis::cmd("HMGET");
            hmget.arg(blobs);
            for reference in &distinct {
                hmget.arg(&reference.digest);
            }
            pipe.add_command(hmget);
        }
        let (usage, held): (Option<i64>, Vec<Option<i64>>) = match distinct.is_empty() {
            true => {
                let (usage,): (Option<i64>,) = self.shared.pipeline(pipe).await?;
                (usage, Vec::new())
            }
            false => self.shared.pipeline(pipe).await?,
        };
        let unheld = distinct
            .into_iter()
            .zip(held.into_iter().chain(std::iter::repeat(None)))
            .filter(|(_, refs)| refs.unwrap_or(0) <= 0)
            .map(|(r, _)| r)
            .collect();
        Some((usage.unwrap_or(0).max(0) as u64, unheld))
    }

    /// Records a stored manifest; the namespace's usage after it.
    pub(crate) async fn put(
        &self,
        namespace: &str,
        repository: &str,
        digest: &str,
        references: &[Reference],
    ) -> Option<u64> {
        let distinct = super::store::distinct(references)
            .cloned()
            .collect::<Vec<_>>();
        let record = distinct
            .iter()
            .map(|r| r.digest.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let [blobs, sizes, usage] = self.keys(namespace);
        let mut invocation = self.put.key(self.manifest_key(repository, digest));
        invocation.key(blobs).key(sizes).key(usage).arg(record);
        for reference in &distinct {
            invocation.arg(&reference.digest).arg(reference.size);
        }
        let after: i64 = self
            .shared
            .exchange(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        Some(after.max(0) as u64)
    }

    /// Records a deleted manifest of `namespace`; `Some(None)` when it was not known.
    pub(crate) async fn delete(
        &self,
        namespace: &str,
        repository: &str,
        digest: &str,
    ) -> Option<Option<u64>> {
        let [blobs, sizes, usage] = self.keys(namespace);
        let mut invocation = self.delete.key(self.manifest_key(repository, digest));
        invocation.key(blobs).key(sizes).key(usage);
        let after: i64 = self
            .shared
            .exchange(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        Some((after >= 0).then_some(after as u64))
    }

    /// Every namespace's usage, by name.
    pub(crate) async fn all(&self) -> Option<Vec<(String, u64)>> {
        let prefix = self.shared.key("policy:usage:");
        let keys = self.scan(&format!("{prefix}*")).await?;
        let mut all = Vec::new();
        for key in keys {
            let Some(namespace) = key.strip_prefix(&prefix).map(str::to_string) else {
                continue;
            };
            all.push((namespace.clone(), self.usage(&namespace).await?));
        }
        all.sort();
        Some(all)
    }

    /// Deletes every policy key (before `usage scan` records what the registry holds).
    pub(crate) async fn clear(&self) -> Option<()> {
        for key in self.scan(&self.shared.key("policy:*")).await? {
            self.shared
                .exchange(|mut c| async move {
                    redis::cmd("DEL").arg(key).query_async::<i64>(&mut c).await
                })
                .await?;
        }
        Some(())
    }

    async fn scan(&self, pattern: &str) -> Option<Vec<String>> {
        let mut keys = Vec::new();
        let mut cursor = 0u64;
        loop {
            let pattern = pattern.to_string();
            let (next, page): (u64, Vec<String>) = self
                .shared
                .exchange(|mut c| async move {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            keys.extend(page);
            if next == 0 {
                return Some(keys);
            }
            cursor = next;
        }
    }
}
