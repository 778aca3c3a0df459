//! One registry fetch per cold digest, at the registry's pace.
//!
//! The first cold `GET` of a digest starts a [`Fetch`]: a task of its own asks the registry
//! node (with that client's `Authorization`, `Accept` and forwarding headers), and, on a
//! `200` the cache can keep, writes the body to a temporary file in the cache folder while
//! hashing it. Every client asking for the digest meanwhile, the first included, is
//! answered from that file as it grows (`growing`), each at its own pace: the fetch waits
//! for no client, so a slow or vanished client holds no one, and a fetch whose every client
//! left finishes (bounded by `cache.max_object`) so the next pull is warm. The only pace
//! the fetch keeps is the disk's: it reads the next part of the body once the previous one
//! is written (at most [`BATCH`] waiting), so where the disk is slower than the registry
//! the fill, not the clients, is slowed, and memory per fetch stays bounded.
//!
//! The file becomes the entry only when its length and SHA-256 match; until then no answer
//! from it completes (each holds its last chunk back; one whose fetch fails finishes from
//! the registry, `resume`). Anything else the registry answers
//! (a 404, a 307 to the storage, a body too large, no `Content-Length`) fills nothing: the
//! requests go to the registry as before, which answers them itself.

use std::fs::File;
use std::io::Write;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use sha2::{Digest, Sha256};
use tempfile::TempPath;

use super::commit::{self, Bounds};
use super::disk::hashes_to;
use super::entry::{Entry, Kind};
use super::fetch::{Arrived, Fetch, Stage};
use super::memory::Memory;
use super::resume::Origin;
use super::shared::Cache;
use crate::metrics::metrics;

/// Bytes gathered from the network before one write: each write is a hop to Tokio's
/// blocking pool, so the body's small chunks are written together.
const BATCH: usize = 1 << 20;

/// Why a fetch's body did not become an entry.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("the registry's body failed: {0}")]
    Body(#[source] reqwest::Error),
    #[error("no byte from the registry in {0:?}")]
    Stalled(Duration),
    #[error("the registry's body ({0} bytes) did not match its digest or length; not cached")]
    Mismatch(u64),
    #[error("cannot write the entry: {0}")]
    Disk(#[source] std::io::Error),
    #[error("cannot commit the entry: {0}")]
    Commit(#[source] commit::CommitError),
    #[error("{0}")]
    Task(String),
}

/// What a fetch asks and where its entry goes.
pub(super) struct FetchRequest {
    /// The repository whose pull starts the fetch (its `200` confirms the pair).
    pub repository: String,
    pub digest: String,
    pub kind: Kind,
    /// The node, path and credentials of the request that starts it.
    pub origin: Origin,
    /// `cache.max_object`: a larger body is not fetched for the cache.
    pub max_object: u64,
    pub bounds: Bounds,
}

/// The running fetch of `request.digest`, or a new one started for `request`; `true` when
/// this call started it.
/// `None` when the digest was committed meanwhile (the request then goes on as a miss).
pub(super) fn join(cache: &Arc<Cache>, request: FetchRequest) -> Option<(Arc<Fetch>, bool)> {
    let cached = || cache.store.contains(&request.digest);
    let (fetch, started) = cache.fetches.join(&request.digest, request.kind, cached)?;
    if started {
        let ending = Ending {
            cache: Arc::clone(cache),
            fetch: Arc::clone(&fetch),
            stage: Stage::Failed,
        };
        tokio::spawn(run(ending, request));
    }
    Some((fetch, started))
}

/// A fetch's end, whatever ends it (a panic, the runtime shutting down): it leaves the
/// running fetches, then its readers learn its last stage (`Failed` unless `run` set
/// another), so no reader waits forever and no later request joins a dead fetch.
struct Ending {
    cache: Arc<Cache>,
    fetch: Arc<Fetch>,
    stage: Stage,
}

impl Drop for Ending {
    fn drop(&mut self) {
        self.cache.fetches.end(&self.fetch);
        self.fetch.set(self.stage);
    }
}

/// The fetch's task: ask, write, commit; then leave the running fetches (`Ending`).
async fn run(mut ending: Ending, request: FetchRequest) {
    let (cache, fetch) = (Arc::clone(&ending.cache), Arc::clone(&ending.fetch));
    ending.stage = match ask(&cache, &fetch, &request).await {
        Some((response, temp)) => match fill(&cache, &fetch, &request, response, temp).await {
            Ok(()) => Stage::Complete,
            Err(FetchError::Disk(e)) => {
                cache.fail("cannot write an entry", &e);
                Stage::Failed
            }
            Err(FetchError::Commit(e)) => {
                cache.fail("cannot commit an entry", &e);
                Stage::Failed
            }
            Err(problem @ FetchError::Mismatch(_)) => {
                tracing::warn!("cache: the fetch of {} failed: {problem}", fetch.digest);
                Stage::Mismatched
            }
            Err(problem) => {
                tracing::warn!("cache: the fetch of {} failed: {problem}", fetch.digest);
                Stage::Failed
            }
        },
        None => Stage::NotFilled,
    };
}

/// Asks the registry; on a `200` the cache keeps, records what arrived (confirming the
/// pair) and returns the answer and the temporary file it goes to.
async fn ask(
    cache: &Cache,
    fetch: &Fetch,
    request: &FetchRequest,
) -> Option<(reqwest::Response, TempPath)> {
    let response = match request.origin.get(cache, None).await {
        Ok(response) => response,
        Err(e) => {
            tracing::warn!("cache: cannot fetch {}: {e}", fetch.digest);
            return None;
        }
    };
    let (size, content_type) = keepable(&response, request)?;
    cache
        .confirmed
        .confirm(&request.repository, &request.digest, request.kind);
    let (file, temp) = match commit::temporary(cache.store.dir()) {
        Ok(opened) => opened,
        Err(e) => {
            cache.fail("cannot start an entry", &e);
            return None;
        }
    };
    let arrived = Arrived {
        size,
        content_type,
        file: Arc::new(file),
        committed: OnceLock::new(),
    };
    if !fetch.arrive(arrived) {
        return None;
    }
    fetch.set(Stage::Arriving);
    Some((response, temp))
}

/// The size and content type of a `200` whose body the cache keeps: a `Content-Length`
/// within `cache.max_object`, no `Content-Encoding`, any `Docker-Content-Digest` equal to
/// the digest asked for.
fn keepable(response: &reqwest::Response, request: &FetchRequest) -> Option<(u64, String)> {
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok());
    let size = header("content-length").and_then(|v| v.parse::<u64>().ok())?;
    let same_digest = header("docker-content-digest").is_none_or(|d| d == request.digest);
    let fits = size <= request.max_object && header("content-encoding").is_none();
    if response.status() != reqwest::StatusCode::OK || !same_digest || !fits {
        return None;
    }
    let content_type = header("content-type").unwrap_or("application/octet-stream");
    Some((size, content_type.to_string()))
}

/// The body's state as it is written: the open file, the hash so far, and (for a small
/// object) a copy for the memory tier.
struct Writer {
    fetch: Arc<Fetch>,
    hasher: Sha256,
    written: u64,
    kept: Option<Vec<u8>>,
}

impl Writer {
    /// Hashes and writes `batch`, then tells the readers; blocking file work.
    fn write(mut self, file: &File, batch: Vec<Bytes>) -> Result<Writer, FetchError> {
        let mut file = file;
        for chunk in batch {
            self.hasher.update(&chunk);
            file.write_all(&chunk).map_err(FetchError::Disk)?;
            if let Some(kept) = &mut self.kept {
                kept.extend_from_slice(&chunk);
            }
            let offset = self.written;
            self.written += chunk.len() as u64;
            self.fetch.window.push(offset, chunk);
        }
        self.fetch.wrote(self.written);
        Ok(self)
    }
}

/// Writes the body to the file as it arrives, then commits it if it matched.
async fn fill(
    cache: &Arc<Cache>,
    fetch: &Arc<Fetch>,
    request: &FetchRequest,
    mut response: reqwest::Response,
    temp: TempPath,
) -> Result<(), FetchError> {
    let arrived = (fetch.arrived_now()).ok_or(FetchError::Task("nothing arrived".into()))?;
    let size = arrived.size;
    let keep = Memory::wants(size, request.bounds.memory);
    let mut idle = Some(Writer {
        fetch: Arc::clone(fetch),
        hasher: Sha256::new(),
        written: 0,
        kept: keep.then(|| Vec::with_capacity(size as usize)),
    });
    // The next batch is read from the network while the previous one is written.
    let mut writing: Option<Writing> = None;
    let mut received = 0u64;
    loop {
        let next = next_batch(&mut response, request.origin.read_timeout).await;
        let (batch, ended) = match next {
            Ok(next) => next,
            // A write error (a full disk) counts before the network's.
            Err(e) => {
                return Err(done_writing(writing.take(), &mut idle)
                    .await
                    .err()
                    .unwrap_or(e))
            }
        };
        received += batch.iter().map(|b| b.len() as u64).sum::<u64>();
        if received > size {
            return Err(FetchError::Mismatch(received));
        }
        let writer = done_writing(writing.take(), &mut idle).await?;
        let file = Arc::clone(&arrived.file);
        writing = Some(tokio::task::spawn_blocking(move || {
            writer.write(&file, batch)
        }));
        if ended {
            break;
        }
    }
    let writer = done_writing(writing.take(), &mut idle).await?;
    finish(cache, fetch, request, writer, temp).await
}

/// A batch being written on the blocking pool.
type Writing = tokio::task::JoinHandle<Result<Writer, FetchError>>;

/// The writer once `writing` is done, or the idle one.
async fn done_writing(
    writing: Option<Writing>,
    idle: &mut Option<Writer>,
) -> Result<Writer, FetchError> {
    match writing {
        Some(writing) => writing.await.map_err(|e| FetchError::Task(e.to_string()))?,
        None => idle.take().ok_or(FetchError::Task("no writer".into())),
    }
}

/// Up to [`BATCH`] bytes of the body: waits (at most `read_timeout`) for the next chunk,
/// then takes what else has already arrived; `true` at the end of the body.
async fn next_batch(
    response: &mut reqwest::Response,
    read_timeout: Duration,
) -> Result<(Vec<Bytes>, bool), FetchError> {
    let failed = FetchError::Body;
    let first = tokio::time::timeout(read_timeout, response.chunk())
        .await
        .map_err(|_| FetchError::Stalled(read_timeout))?
        .map_err(failed)?;
    let Some(first) = first else {
        return Ok((Vec::new(), true));
    };
    let mut gathered = first.len();
    let mut batch = vec![first];
    while gathered < BATCH {
        // `chunk` only polls the body: a pending one dropped here loses nothing.
        match response.chunk().now_or_never() {
            None => break,
            Some(Ok(Some(chunk))) => {
                gathered += chunk.len();
                batch.push(chunk);
            }
            Some(Ok(None)) => return Ok((batch, true)),
            Some(Err(e)) => return Err(failed(e)),
        }
    }
    Ok((batch, false))
}

/// Commits the written file when its length and SHA-256 match the digest.
async fn finish(
    cache: &Arc<Cache>,
    fetch: &Arc<Fetch>,
    request: &FetchRequest,
    writer: Writer,
    temp: TempPath,
) -> Result<(), FetchError> {
    let arrived = (fetch.arrived_now()).ok_or(FetchError::Task("nothing arrived".into()))?;
    if writer.written != arrived.size || !hashes_to(writer.hasher, &request.digest) {
        metrics()
            .cache_events
            .with_label_values(&["mismatch"])
            .inc();
        return Err(FetchError::Mismatch(writer.written));
    }
    let entry = Entry::new(arrived.size, request.kind, &arrived.content_type);
    let (dir, digest, file) = (
        cache.store.dir().to_path_buf(),
        request.digest.clone(),
        Arc::clone(&arrived.file),
    );
    let committing = {
        let entry = entry.clone();
        move || commit::commit_file(&dir, &digest, &entry, &file, temp)
    };
    let id = match tokio::task::spawn_blocking(committing).await {
        Ok(Ok(id)) => id,
        Ok(Err(e)) => return Err(FetchError::Commit(e)),
        Err(e) => return Err(FetchError::Task(e.to_string())),
    };
    let _ = arrived.committed.set(id);
    let kept = writer.kept.map(Bytes::from);
    commit::index(cache, &request.digest, entry, id, kept, request.bounds);
    Ok(())
}
