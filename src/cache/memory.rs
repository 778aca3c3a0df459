//! Small hot objects (manifests, image configs) also kept in memory (`cache.memory`), so a
//! hot pull of them reads no file. Only content already verified goes in: a fill whose
//! digest matched, or an entry read whole from the disk whose digest matched. Least
//! recently used objects leave first once the budget (bytes, live on reload) is spent.

use std::sync::Mutex;

use bytes::Bytes;
use lru::LruCache;

/// Objects larger than this stay on disk only (layers are streamed, not held).
pub(crate) const MAX_MEMORY_OBJECT: u64 = 1 << 20;

struct Objects {
    entries: LruCache<String, Bytes>,
    bytes: u64,
}

pub(crate) struct Memory(Mutex<Objects>);

impl Default for Memory {
    fn default() -> Self {
        Memory(Mutex::new(Objects {
            entries: LruCache::unbounded(),
            bytes: 0,
        }))
    }
}

impl Memory {
    /// Whether an object of `size` bytes is kept in memory under a `budget`.
    pub(crate) fn wants(size: u64, budget: u64) -> bool {
        size <= MAX_MEMORY_OBJECT && size <= budget
    }

    pub(crate) fn get(&self, digest: &str) -> Option<Bytes> {
        self.lock().entries.get(digest).cloned()
    }

    /// Keeps `content` (already verified against `digest`), then drops least recently used
    /// objects over `budget` bytes.
    pub(crate) fn put(&self, digest: &str, content: Bytes, budget: u64) {
        if !Self::wants(content.len() as u64, budget) {
            return;
        }
        let mut objects = self.lock();
        objects.bytes += content.len() as u64;
        if let Some(old) = objects.entries.put(digest.to_string(), content) {
            objects.bytes -= old.len() as u64;
        }
        while objects.bytes > budget {
            let Some((_, old)) = objects.entries.pop_lru() else {
                break;
            };
            objects.bytes -= old.len() as u64;
        }
    }

    pub(crate) fn remove(&self, digest: &str) {
        let mut objects = self.lock();
        if let Some(old) = objects.entries.pop(digest) {
            objects.bytes -= old.len() as u64;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Objects> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_holds_and_large_objects_stay_out() {
        let memory = Memory::default();
        memory.put("a", Bytes::from(vec![1u8; 400]), 1000);
        memory.put("b", Bytes::from(vec![2u8; 400]), 1000);
        memory.get("a");
        memory.put("c", Bytes::from(vec![3u8; 400]), 1000);
        assert!(memory.get("b").is_none(), "the least recently used left");
        assert!(memory.get("a").is_some() && memory.get("c").is_some());
        memory.put("big", Bytes::from(vec![0u8; 2000]), 1 << 30);
        assert!(memory.get("big").is_some(), "under 1 MiB and the budget");
        memory.put(
            "huge",
            Bytes::from(vec![0u8; (MAX_MEMORY_OBJECT + 1) as usize]),
            1 << 30,
        );
        assert!(memory.get("huge").is_none());
        memory.remove("a");
        assert!(memory.get("a").is_none());
    }
}
