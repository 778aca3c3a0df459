//! Bytes admitted into a namespace and not yet recorded: a manifest PUT holds its share
//! from the quota check until the registry answered, so two PUTs checked at once cannot
//! both pass on the same room. Per instance: instances sharing Redis each reserve for
//! their own requests only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The reservations of one edge instance.
#[derive(Default)]
pub(crate) struct Reservations {
    /// Held while a quota check and its reservation are made.
    pub(crate) checking: tokio::sync::Mutex<()>,
    pending: Arc<Mutex<HashMap<String, u64>>>,
}

impl Reservations {
    /// Bytes reserved in `namespace` now.
    pub(crate) fn pending(&self, namespace: &str) -> u64 {
        lock(&self.pending).get(namespace).copied().unwrap_or(0)
    }

    /// Reserves `bytes` in `namespace` until the returned guard is dropped.
    pub(crate) fn take(&self, namespace: &str, bytes: u64) -> Reservation {
        let mut pending = lock(&self.pending);
        let held = pending.entry(namespace.to_string()).or_insert(0);
        *held = held.saturating_add(bytes);
        Reservation {
            pending: Arc::clone(&self.pending),
            namespace: namespace.to_string(),
            bytes,
        }
    }
}

/// Bytes reserved for one request; released on drop (after the usage was recorded, or
/// when the request failed).
pub(crate) struct Reservation {
    pending: Arc<Mutex<HashMap<String, u64>>>,
    namespace: String,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut pending = lock(&self.pending);
        if let Some(held) = pending.get_mut(&self.namespace) {
            *held = held.saturating_sub(self.bytes);
            if *held == 0 {
                pending.remove(&self.namespace);
            }
        }
    }
}

/// A lock whose holder panicked still guards plain numbers: go on with them.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_holds_until_dropped() {
        let reservations = Reservations::default();
        let first = reservations.take("team", 10);
        let second = reservations.take("team", 5);
        assert_eq!(reservations.pending("team"), 15);
        drop(first);
        assert_eq!(reservations.pending("team"), 5);
        drop(second);
        assert_eq!(reservations.pending("team"), 0);
    }
}
