//! The most recent bytes a fetch wrote, kept in memory for the answers that keep up with
//! it: they send these buffers as they came from the network (no read of the file, no
//! copy); an answer further behind reads the file.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;

/// Bytes kept per fetch: a few batches (a batch is about 1 MiB), enough for the answers
/// that keep up; more only raises the edge's memory during a cold pull (C1's peak RSS).
const KEPT: u64 = 4 << 20;

/// A fetch's recent chunks, each with the offset it starts at; at most [`KEPT`] bytes.
#[derive(Default)]
pub(super) struct Window(Mutex<Chunks>);

#[derive(Default)]
struct Chunks {
    chunks: VecDeque<(u64, Bytes)>,
    bytes: u64,
}

impl Window {
    fn lock(&self) -> MutexGuard<'_, Chunks> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `chunk`, written at `offset`, dropping the oldest past the bound.
    pub(super) fn push(&self, offset: u64, chunk: Bytes) {
        let mut window = self.lock();
        window.bytes += chunk.len() as u64;
        window.chunks.push_back((offset, chunk));
        while window.bytes > KEPT {
            match window.chunks.pop_front() {
                Some((_, old)) => window.bytes -= old.len() as u64,
                None => break,
            }
        }
    }

    /// Bytes from `offset` (to at most `end`) out of the one kept chunk holding `offset`;
    /// `None` when it is no longer (or not yet) kept.
    pub(super) fn slice(&self, offset: u64, end: u64) -> Option<Bytes> {
        let window = self.lock();
        let index = window
            .chunks
            .partition_point(|(start, chunk)| start + chunk.len() as u64 <= offset);
        let (start, chunk) = window.chunks.get(index)?;
        if *start > offset {
            return None;
        }
        let from = (offset - start) as usize;
        let to = chunk.len().min((end - start) as usize);
        (from < to).then(|| chunk.slice(from..to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_bytes_are_found_by_offset_and_old_ones_dropped() {
        let window = Window::default();
        window.push(0, Bytes::from_static(b"abcd"));
        window.push(4, Bytes::from_static(b"efgh"));
        assert_eq!(window.slice(2, 100).unwrap(), "cd");
        assert_eq!(window.slice(5, 7).unwrap(), "fg");
        assert_eq!(window.slice(8, 100), None, "not yet written");
        window.push(8, Bytes::from(vec![0u8; KEPT as usize]));
        assert_eq!(window.slice(2, 100), None, "dropped past the bound");
        assert_eq!(window.slice(8, 10).unwrap().len(), 2);
    }
}
