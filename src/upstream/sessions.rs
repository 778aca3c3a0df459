//! Upload sessions pinned to the node that started them.
//!
//! An upload is several requests (POST, PATCHes, PUT) and, with node-local storage, only
//! the node that answered the POST knows the session. Repository hashing normally keeps
//! them together, but a changed node list moves repositories between nodes; pinning by
//! `Docker-Upload-UUID` lets a session started before a reload finish where it began —
//! also on a node just removed from the list and left running to drain.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an idle session stays pinned (refreshed by each request of the session).
const SESSION_TTL: Duration = Duration::from_secs(24 * 3600);
/// Most sessions remembered; past it, expired ones go, then all (hashing still applies).
const CAPACITY: usize = 100_000;

#[derive(Default)]
pub(crate) struct UploadSessions {
    pinned: Mutex<HashMap<String, (SocketAddr, Instant)>>,
}

impl UploadSessions {
    /// Records the node that answered an upload start with `uuid`.
    pub(crate) fn remember(&self, uuid: &str, node: SocketAddr) {
        let now = Instant::now();
        let mut pinned = self.pinned.lock().expect("sessions lock");
        if pinned.len() >= CAPACITY && !pinned.contains_key(uuid) {
            pinned.retain(|_, (_, expires)| *expires > now);
            if pinned.len() >= CAPACITY {
                pinned.clear();
            }
        }
        pinned.insert(uuid.to_string(), (node, now + SESSION_TTL));
    }

    /// The node holding `uuid`, refreshing its pin.
    pub(crate) fn node_for(&self, uuid: &str) -> Option<SocketAddr> {
        let now = Instant::now();
        let mut pinned = self.pinned.lock().expect("sessions lock");
        match pinned.get_mut(uuid) {
            Some((node, expires)) if *expires > now => {
                *expires = now + SESSION_TTL;
                Some(*node)
            }
            Some(_) => {
                pinned.remove(uuid);
                None
            }
            None => None,
        }
    }

    /// Drops a finished (or cancelled) session.
    pub(crate) fn forget(&self, uuid: &str) {
        self.pinned.lock().expect("sessions lock").remove(uuid);
    }

    /// Sessions pinned now (the unit test's bound check).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.pinned.lock().expect("sessions lock").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_forgets_and_stays_bounded() {
        let sessions = UploadSessions::default();
        let a: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        sessions.remember("u1", a);
        assert_eq!(sessions.node_for("u1"), Some(a));
        sessions.forget("u1");
        assert_eq!(sessions.node_for("u1"), None);
        for i in 0..CAPACITY + 10 {
            sessions.remember(&format!("s{i}"), a);
        }
        assert!(sessions.len() <= CAPACITY, "bounded: {}", sessions.len());
    }
}
