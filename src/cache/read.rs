//! Reading an entry's file for an answer: verified once, then trusted while unchanged.
//!
//! An entry is hashed when it is filled and, after that, on its first read after a start
//! or after its file changed. What identifies the file's content on disk is kept per entry
//! ([`FileId`]: device, inode, size, modification and change times); every answer checks
//! it with one `fstat` of the open file. Any write to the file (even one that restores the
//! modification time, as `touch -d` does) changes its change time, so it is hashed again,
//! and a file that no longer matches its digest is never answered as complete: the answer
//! is cut short and the entry dropped. Not covered: a write to the block device under the
//! file system, which changes no inode (the same holds for any cache that trusts its files).
//!
//! A trusted read sends only the part asked for, and its last chunk only once a second
//! `fstat` found the file unchanged (a write during the read); a verifying read reads the
//! whole file and holds its last chunk back until the digest matched.

use std::io::SeekFrom;

use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::Session;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::disk::hashes_to;
use super::entry::FileId;
use super::shared::Cache;
use crate::metrics::metrics;

/// Bytes read from the disk at a time: each read is a hop to Tokio's blocking pool, so
/// fewer, larger reads cost less CPU.
const CHUNK: usize = 512 * 1024;

/// An entry's file, open, with what `fstat` said of it.
pub(super) struct Opened {
    file: tokio::fs::File,
    id: FileId,
    /// The file is the one last verified: sent without hashing.
    trusted: bool,
}

/// Opens `digest`'s file (named by the digest itself, never by what an index entry says).
pub(super) async fn open(cache: &Cache, digest: &str) -> std::io::Result<Opened> {
    let path = cache
        .store
        .content_file(digest)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "not a sha256 digest"))?;
    let file = tokio::fs::File::open(path).await?;
    let id = FileId::of(&file.metadata().await?);
    let trusted = cache.store.verified(digest) == Some(id);
    Ok(Opened { file, id, trusted })
}

impl Opened {
    /// Whether a read of this file, `size` bytes as indexed, hashes it whole.
    pub(super) fn verifies(&self, size: u64) -> bool {
        !(self.trusted && self.id.size() == size)
    }
}

/// One read of an entry: bytes `start..end` are sent; `keep` (the memory budget) keeps the
/// whole content in memory afterwards (only a read of the whole entry).
pub(super) struct Read<'a> {
    pub digest: &'a str,
    /// The entry's size as indexed: the file must be exactly this long.
    pub size: u64,
    pub start: u64,
    pub end: u64,
    pub keep: Option<u64>,
}

/// Sends bytes `start..end` of the entry: straight from the file when trusted, else from
/// a read of the whole file that is hashed, its last chunk sent once the digest matched.
pub(super) async fn stream(
    session: &mut Session,
    cache: &Cache,
    opened: Opened,
    read: Read<'_>,
) -> Result<()> {
    match opened.verifies(read.size) {
        false => send_trusted(session, cache, opened, read).await,
        true => send_verified(session, cache, opened, read).await,
    }
}

async fn send_trusted(
    session: &mut Session,
    cache: &Cache,
    opened: Opened,
    read: Read<'_>,
) -> Result<()> {
    let Opened { mut file, id, .. } = opened;
    let whole = read.start == 0 && read.end == read.size;
    let mut kept = Vec::new();
    if read.start > 0 {
        if let Err(e) = file.seek(SeekFrom::Start(read.start)).await {
            return Err(dropped(
                cache,
                read.digest,
                &format!("cannot be read ({e})"),
            ));
        }
    }
    let mut left = read.end - read.start;
    while left > 0 {
        let chunk = next_chunk(&mut file, left, cache, read.digest).await?;
        left -= chunk.len() as u64;
        if whole && read.keep.is_some() {
            kept.extend_from_slice(&chunk);
        }
        // A write while the file was read changes its identity: the last chunk goes only
        // if the file is still the one verified.
        if left == 0 && !file.metadata().await.is_ok_and(|m| FileId::of(&m) == id) {
            return Err(dropped(cache, read.digest, "changed while it was read"));
        }
        metrics().cache_served_bytes.inc_by(chunk.len() as u64);
        session.write_response_body(Some(chunk), left == 0).await?;
    }
    if let (Some(budget), true) = (read.keep, whole) {
        cache.memory.put(read.digest, Bytes::from(kept), budget);
    }
    if read.end == read.start {
        session.write_response_body(None, true).await?;
    }
    Ok(())
}

/// Reads up to `CHUNK` (at most `left`) bytes; an early end of the file cuts the answer.
async fn next_chunk(
    file: &mut tokio::fs::File,
    left: u64,
    cache: &Cache,
    digest: &str,
) -> Result<Bytes> {
    // A fresh buffer per read: its bytes go out as they are, without a copy; read into its
    // spare capacity, so it is never zeroed first (a memset of every byte served).
    let want = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
    let mut buf = bytes::BytesMut::with_capacity(want);
    match file.read_buf(&mut buf).await {
        Ok(0) => Err(dropped(cache, digest, "is shorter than its entry")),
        Ok(_) => Ok(buf.freeze()),
        Err(e) => Err(dropped(cache, digest, &format!("cannot be read ({e})"))),
    }
}

async fn send_verified(
    session: &mut Session,
    cache: &Cache,
    opened: Opened,
    read: Read<'_>,
) -> Result<()> {
    let Opened { mut file, id, .. } = opened;
    let Read {
        digest,
        size,
        start,
        end,
        keep,
    } = read;
    metrics().cache_events.with_label_values(&["verify"]).inc();
    let mut hasher = Sha256::new();
    let mut kept = Vec::new();
    let mut offset = 0u64;
    let mut held: Option<Bytes> = None;
    while offset < size {
        let chunk = next_chunk(&mut file, size - offset, cache, digest).await?;
        hasher.update(&chunk);
        if keep.is_some() {
            kept.extend_from_slice(&chunk);
        }
        let (chunk_start, chunk_end) = (offset, offset + chunk.len() as u64);
        offset = chunk_end;
        let (from, to) = (start.max(chunk_start), end.min(chunk_end));
        if from < to {
            let part = chunk.slice((from - chunk_start) as usize..(to - chunk_start) as usize);
            if let Some(previous) = held.replace(part) {
                metrics().cache_served_bytes.inc_by(previous.len() as u64);
                session.write_response_body(Some(previous), false).await?;
            }
        }
    }
    let matched = hashes_to(hasher, digest);
    // The file must also have been the same file from the `fstat` at open to the end.
    let unchanged = file.metadata().await.is_ok_and(|m| FileId::of(&m) == id);
    if !matched || id.size() != size {
        return Err(dropped(cache, digest, "does not match its digest"));
    }
    if unchanged {
        cache.store.mark_verified(digest, id);
    }
    if let Some(budget) = keep {
        cache.memory.put(digest, Bytes::from(kept), budget);
    }
    if let Some(last) = &held {
        metrics().cache_served_bytes.inc_by(last.len() as u64);
    }
    session.write_response_body(held, true).await
}

/// Drops a damaged entry and returns the error that cuts the answer short.
fn dropped(cache: &Cache, digest: &str, problem: &str) -> Box<Error> {
    metrics()
        .cache_events
        .with_label_values(&["mismatch"])
        .inc();
    tracing::error!("cache: {digest} {problem}; entry dropped, the answer cut short");
    cache.store.remove(digest);
    cache.memory.remove(digest);
    Error::explain(ErrorType::InternalError, "cached entry failed verification")
}
