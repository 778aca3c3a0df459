//! Filling the cache while the registry's answer streams to the client.
//!
//! Pingora's body filters are synchronous, so each chunk is handed to a task that writes it
//! to a `cacache` writer; the writer checks size and SHA-256 against the digest on commit,
//! and only then is the entry added to the index. A fill the client abandoned (the
//! [`Fill`] dropped before [`Fill::finish`]), a digest mismatch, or a writer more than
//! [`MAX_QUEUED`] behind the network leaves nothing behind: `cacache` writes into a
//! temporary file that is deleted unless committed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::disk::sha256_hex;
use super::inflight::Leader;
use super::memory::Memory;
use super::shared::Cache;
#[cfg(test)]
use super::store::Store;
use super::store::{Entry, FileId, Kind};
use crate::metrics::metrics;

/// Bytes a fill may have queued for the disk before it is given up.
const MAX_QUEUED: u64 = 64 << 20;

/// Above this backlog the client's answer is paced (a millisecond per chunk) so the disk
/// catches up, rather than giving the fill up: the cost of a cold pull is bounded by the
/// disk's speed only when the disk is the slower side.
pub(crate) const PACE_ABOVE: u64 = 32 << 20;

/// Bytes gathered before one write: each write is a hop to Tokio's blocking pool
/// (`cacache` writes through `spawn_blocking`), so body chunks of a few KiB are coalesced.
const WRITE_SIZE: usize = 1 << 20;

enum Message {
    Chunk(Bytes),
    End,
}

/// One entry being written; feed it the body, then [`Fill::finish`].
pub(crate) struct Fill {
    sender: mpsc::UnboundedSender<Message>,
    queued: Arc<AtomicU64>,
    cache: Arc<Cache>,
}

/// What a fill is for: the digest, its size (`Content-Length`), the endpoint and the
/// registry's `Content-Type` there.
pub(crate) struct FillRequest {
    pub digest: String,
    pub kind: Kind,
    /// The leading request's hold on the digest: released when the fill ends, so the
    /// requests waiting for it then find the entry.
    pub leader: Option<Leader>,
    pub size: u64,
    pub content_type: String,
    /// `cache.max_size` of the request's settings: the bound eviction keeps to.
    pub max_size: u64,
    /// `cache.memory` of the request's settings: small objects are kept in memory too.
    pub memory: u64,
}

impl Fill {
    /// Starts a fill, unless caching stopped, the digest is cached or being filled already,
    /// or it is not a SHA-256 digest. Must be called inside the Tokio runtime.
    pub(crate) fn start(cache: &Arc<Cache>, request: FillRequest) -> Option<Fill> {
        let hex = sha256_hex(&request.digest)?;
        let integrity = cacache::Integrity::from_hex(hex, cacache::Algorithm::Sha256).ok()?;
        if !cache.writable() || cache.store.contains(&request.digest) {
            return None;
        }
        if !cache.filling.claim(&request.digest) {
            return None;
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicU64::new(0));
        let task = Writer {
            cache: Arc::clone(cache),
            integrity,
            request,
            queued: Arc::clone(&queued),
        };
        tokio::spawn(task.run(receiver));
        Some(Fill {
            sender,
            queued,
            cache: Arc::clone(cache),
        })
    }

    /// Hands one body chunk to the writer; `false` when the fill was given up (the caller
    /// drops it).
    pub(crate) fn push(&self, chunk: &Bytes) -> bool {
        let len = chunk.len() as u64;
        let mine = self.queued.fetch_add(len, Ordering::Relaxed) + len;
        let all = self.cache.fill_backlog.fetch_add(len, Ordering::Relaxed) + len;
        if mine > MAX_QUEUED
            || all > self.cache.fill_budget
            || self.sender.send(Message::Chunk(chunk.clone())).is_err()
        {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            self.cache.fill_backlog.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Bytes handed over and not yet written.
    pub(crate) fn backlog(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// The body ended: commit if size and digest match.
    pub(crate) fn finish(self) {
        let _ = self.sender.send(Message::End);
    }
}

struct Writer {
    cache: Arc<Cache>,
    integrity: cacache::Integrity,
    request: FillRequest,
    queued: Arc<AtomicU64>,
}

impl Writer {
    async fn run(self, mut receiver: mpsc::UnboundedReceiver<Message>) {
        let committed = self.write(&mut receiver).await;
        // Chunks still queued (a fill given up) leave the shared backlog too.
        receiver.close();
        while let Some(message) = receiver.recv().await {
            if let Message::Chunk(chunk) = message {
                self.consumed(chunk.len());
            }
        }
        self.cache.filling.release(&self.request.digest);
        if committed {
            metrics().cache_events.with_label_values(&["fill"]).inc();
        }
        // The requests waiting for this digest look for the entry only now.
        drop(self.request.leader);
    }

    /// Writes until the end of the body; `true` once the entry is committed and indexed.
    async fn write(&self, receiver: &mut mpsc::UnboundedReceiver<Message>) -> bool {
        let Ok(size) = usize::try_from(self.request.size) else {
            return false;
        };
        let opts = cacache::WriteOpts::new()
            .algorithm(cacache::Algorithm::Sha256)
            .integrity(self.integrity.clone())
            .size(size)
            .metadata(self.entry().metadata());
        let dir = self.cache.store.dir();
        // A small object is also kept in memory once its digest matched.
        let keep = Memory::wants(self.request.size, self.request.memory);
        let mut kept = Vec::with_capacity(if keep { size } else { 0 });
        let mut writer = match opts.open(dir, &self.request.digest).await {
            Ok(writer) => writer,
            Err(e) => {
                self.cache.fail("cannot start an entry", &e);
                return false;
            }
        };
        let mut pending = Vec::with_capacity(WRITE_SIZE.min(size));
        while let Some(message) = receiver.recv().await {
            match message {
                Message::Chunk(chunk) => {
                    self.consumed(chunk.len());
                    if keep {
                        kept.extend_from_slice(&chunk);
                    }
                    pending.extend_from_slice(&chunk);
                    if pending.len() >= WRITE_SIZE
                        && !self.write_out(&mut writer, &mut pending).await
                    {
                        return false;
                    }
                }
                Message::End => {
                    if !self.write_out(&mut writer, &mut pending).await {
                        return false;
                    }
                    let committed = self.commit(writer).await;
                    if committed && keep {
                        let (digest, budget) = (&self.request.digest, self.request.memory);
                        self.cache.memory.put(digest, Bytes::from(kept), budget);
                    }
                    return committed;
                }
            }
        }
        // The client went away (or the fill fell behind): the temporary file is dropped.
        false
    }

    /// The index entry the fill makes.
    fn entry(&self) -> Entry {
        let request = &self.request;
        Entry::new(request.size, request.kind, &request.content_type)
    }

    /// Takes `len` bytes off this fill's and the shared backlog.
    fn consumed(&self, len: usize) {
        self.queued.fetch_sub(len as u64, Ordering::Relaxed);
        self.cache
            .fill_backlog
            .fetch_sub(len as u64, Ordering::Relaxed);
    }

    /// Writes what was gathered; `false` after an I/O error (caching stops).
    async fn write_out(&self, writer: &mut cacache::Writer, pending: &mut Vec<u8>) -> bool {
        if let Err(e) = writer.write_all(pending).await {
            self.cache.fail("cannot write an entry", &e);
            return false;
        }
        pending.clear();
        true
    }

    async fn commit(&self, writer: cacache::Writer) -> bool {
        match writer.commit().await {
            Ok(_) => {
                let entry = self.entry();
                let digest = self.request.digest.clone();
                let store = &self.cache.store;
                store.insert(digest.clone(), entry, self.request.max_size);
                // Hashed on its way in: trusted while its file stays as committed.
                if let Some(path) = store.content_file(&digest) {
                    if let Ok(meta) = tokio::fs::metadata(path).await {
                        store.mark_verified(&digest, FileId::of(&meta));
                    }
                }
                true
            }
            Err(cacache::Error::IntegrityError(_) | cacache::Error::SizeMismatch(..)) => {
                metrics()
                    .cache_events
                    .with_label_values(&["mismatch"])
                    .inc();
                tracing::warn!(
                    "cache: the registry's {} did not match its digest or length; not cached",
                    self.request.digest
                );
                false
            }
            Err(e) => {
                self.cache.fail("cannot commit an entry", &e);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(dir: &std::path::Path) -> Arc<Cache> {
        Arc::new(Cache::for_tests(dir))
    }

    fn request(bytes: &[u8]) -> FillRequest {
        use sha2::Digest;
        FillRequest {
            leader: None,
            kind: Kind::Blob,
            digest: format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes))),
            size: bytes.len() as u64,
            content_type: "application/octet-stream".into(),
            max_size: 1 << 20,
            memory: 1 << 20,
        }
    }

    /// Waits until no fill is running (each releases its digest when done).
    async fn settled(cache: &Cache) {
        for _ in 0..200 {
            if cache.filling.lock().is_empty() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("a fill did not end");
    }

    #[tokio::test]
    async fn a_matching_body_becomes_an_entry_once_finished() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache(dir.path());
        let body = b"layer bytes".repeat(1000);
        let fill = Fill::start(&cache, request(&body)).unwrap();
        assert!(
            Fill::start(&cache, request(&body)).is_none(),
            "one fill per digest"
        );
        for chunk in body.chunks(4096) {
            assert!(fill.push(&Bytes::copy_from_slice(chunk)));
        }
        fill.finish();
        settled(&cache).await;
        assert_eq!(
            cache.store.get(&request(&body).digest).map(|e| e.size),
            Some(11_000)
        );
    }

    #[tokio::test]
    async fn fills_together_stay_within_the_shared_budget() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = Cache::for_tests(dir.path());
        cache.fill_budget = 1000;
        let cache = Arc::new(cache);
        let (a, b) = (vec![1u8; 4000], vec![2u8; 4000]);
        let first = Fill::start(&cache, request(&a)).unwrap();
        let second = Fill::start(&cache, request(&b)).unwrap();
        assert!(
            !first.push(&Bytes::from(vec![1u8; 1500])),
            "over the shared budget"
        );
        assert_eq!(
            cache.fill_backlog.load(Ordering::Relaxed),
            0,
            "a refused chunk still counted"
        );
        assert!(first.push(&Bytes::from(vec![1u8; 500])));
        assert!(second.push(&Bytes::from(vec![2u8; 400])));
        drop((first, second));
        settled(&cache).await;
        assert_eq!(
            cache.fill_backlog.load(Ordering::Relaxed),
            0,
            "abandoned fills left bytes counted"
        );
    }

    #[tokio::test]
    async fn a_mismatch_or_an_abandoned_fill_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache(dir.path());
        let body = b"the real content".to_vec();
        let mut claimed = request(&body);
        claimed.digest = request(b"other content!!!").digest;
        let fill = Fill::start(&cache, claimed).unwrap();
        fill.push(&Bytes::from(body.clone()));
        fill.finish();
        let abandoned = Fill::start(&cache, request(&body)).unwrap();
        abandoned.push(&Bytes::from_static(b"the real"));
        drop(abandoned);
        settled(&cache).await;
        assert_eq!(cache.store.len(), 0);
        let reopened = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(reopened.len(), 0, "nothing committed on disk");
        let leftovers = std::fs::read_dir(dir.path().join("tmp"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(leftovers, 0, "temporary files removed");
    }
}
