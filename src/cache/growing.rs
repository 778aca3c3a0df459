//! Answering from a fetch's file while it grows (`fetch`): each answer reads what has been
//! written, at its own pace (from the fetch's recent bytes in memory while it keeps up,
//! `window`, else from the file), and waits for more; its last chunk goes only once the fetch
//! is complete (length and SHA-256 matched) and the committed file is still the one
//! written. An answer whose fetch fails, or has sent nothing for [`STALL`], is finished
//! from the registry (`resume`), as the registry alone would have answered; one whose
//! fetch found bytes that do not match the digest, or whose committed file changed, is cut
//! short.

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use pingora::prelude::*;
use pingora::proxy::Session;

use super::entry::FileId;
use super::fetch::{Fetch, Stage};
use super::resume::{resume, Origin};
use super::shared::Cache;
use crate::metrics::metrics;

/// Longest an answer waits for a fetch's next bytes (at most `upstream.read_timeout`)
/// before finishing from the registry: a fetch waits `read_timeout` (900 s by default)
/// before giving up on a hung connection, and every client of the digest would wait with it.
const STALL: std::time::Duration = std::time::Duration::from_secs(10);

/// Bytes read from the file at a time (as `read`'s chunk).
const CHUNK: usize = 512 * 1024;

/// Sends bytes `start..end` of the content `fetch` is writing.
pub(super) async fn stream(
    session: &mut Session,
    cache: &Cache,
    (fetch, origin): (&Fetch, &Origin),
    start: u64,
    end: u64,
) -> Result<()> {
    let arrived = fetch
        .arrived_now()
        .ok_or_else(|| cut("the fetch has no body"))?;
    let mut progress = fetch.progress();
    let mut offset = start;
    loop {
        let now = *progress.borrow_and_update();
        match now.stage {
            Stage::Failed => return resume(session, cache, origin, offset, end).await,
            Stage::Mismatched => return Err(cut("the registry's body did not match its digest")),
            _ => {}
        }
        let complete = now.stage == Stage::Complete;
        let available = now.written.min(end);
        let want = available.saturating_sub(offset).min(CHUNK as u64);
        // The last chunk (or an empty answer) waits for the fetch to complete.
        let to_end = offset + want == end;
        if (want == 0 && !to_end) || (to_end && !complete) {
            // A fetch that stalled (its registry connection hung) holds no answer: after
            // `STALL` without a byte, the rest is asked of the registry on a new connection.
            let stall = origin.read_timeout.min(STALL);
            match tokio::time::timeout(stall, progress.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(cut("the fetch ended")),
                Err(_) => return resume(session, cache, origin, offset, end).await,
            }
        }
        // Keeping up: the buffers as they came from the registry; else the file.
        let chunk = match fetch.window.slice(offset, offset + want) {
            Some(recent) => Some(recent),
            None if want == 0 => None,
            None => Some(read_at(&arrived.file, offset, want as usize).await?),
        };
        let last = offset + chunk.as_ref().map_or(0, |c| c.len() as u64) == end;
        if last && !unchanged(&arrived.file, arrived.committed.get()).await {
            return Err(cut("the entry's file changed"));
        }
        if let Some(chunk) = &chunk {
            offset += chunk.len() as u64;
            metrics().cache_served_bytes.inc_by(chunk.len() as u64);
        }
        session.write_response_body(chunk, last).await?;
        if last {
            return Ok(());
        }
    }
}

/// `len` bytes of `file` from `offset`, read on the blocking pool into a fresh buffer that
/// goes out as it is.
async fn read_at(file: &Arc<std::fs::File>, offset: u64, len: usize) -> Result<Bytes> {
    let file = Arc::clone(file);
    let read = move || -> std::io::Result<Bytes> {
        let mut buf = BytesMut::zeroed(len);
        let mut filled = 0;
        while filled < len {
            match file.read_at(&mut buf[filled..], offset + filled as u64)? {
                0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                n => filled += n,
            }
        }
        Ok(buf.freeze())
    };
    match tokio::task::spawn_blocking(read).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => Err(cut(&format!("the entry's file cannot be read ({e})"))),
        Err(e) => Err(cut(&e.to_string())),
    }
}

/// Whether `file` is still the file committed as `committed`.
async fn unchanged(file: &Arc<std::fs::File>, committed: Option<&FileId>) -> bool {
    let Some(committed) = committed.copied() else {
        return false;
    };
    let file = Arc::clone(file);
    let now = tokio::task::spawn_blocking(move || file.metadata().map(|m| FileId::of(&m))).await;
    matches!(now, Ok(Ok(id)) if id == committed)
}

fn cut(problem: &str) -> Box<Error> {
    tracing::warn!("cache: an answer from a fill was cut short: {problem}");
    Error::explain(ErrorType::InternalError, "cache fill failed")
}
