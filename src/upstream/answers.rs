//! Passive health: when each node last answered a proxied request.
//!
//! Active checks can miss a node that is serving: on a saturated machine three checks in a
//! row may time out while the node keeps answering the requests it is sent (the soak saw a
//! single node taken out for seconds that way, every request refused with 503 meanwhile).
//! Like nginx, whose health is entirely passive, the pool keeps a node that answered within
//! the last few check intervals; a node that stopped answering (refused connections, a
//! silent node whose requests time out) records nothing and leaves as the checks say.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

/// Per node, the time of its last answer in milliseconds since `epoch` (0: never).
pub(crate) struct RecentAnswers {
    epoch: Instant,
    window: Duration,
    nodes: ArcSwap<Vec<(SocketAddr, Arc<AtomicU64>)>>,
}

impl RecentAnswers {
    /// Answers count for `window` after they arrive.
    pub(crate) fn new(window: Duration) -> RecentAnswers {
        RecentAnswers {
            epoch: Instant::now(),
            window,
            nodes: ArcSwap::from_pointee(Vec::new()),
        }
    }

    fn now_ms(&self) -> u64 {
        // +1 so that an answer in the first millisecond is not "never".
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX) + 1
    }

    /// Records that `node` answered a request (any status below 500).
    pub(crate) fn record(&self, node: SocketAddr) {
        let now = self.now_ms();
        let nodes = self.nodes.load();
        if let Some((_, at)) = nodes.iter().find(|(addr, _)| *addr == node) {
            // Stored at most once per millisecond: the line stays shared between threads.
            if at.load(Ordering::Relaxed) != now {
                at.store(now, Ordering::Relaxed);
            }
            return;
        }
        drop(nodes);
        // A node seen for the first time (at start or after a reload): rare.
        self.nodes.rcu(|nodes| {
            let mut nodes = Vec::clone(nodes);
            if !nodes.iter().any(|(addr, _)| *addr == node) {
                nodes.push((node, Arc::new(AtomicU64::new(now))));
            }
            nodes
        });
    }

    /// Whether `node` answered a request within the window.
    pub(crate) fn answered_recently(&self, node: SocketAddr) -> bool {
        let window = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX);
        let now = self.now_ms();
        self.nodes
            .load()
            .iter()
            .find(|(addr, _)| *addr == node)
            .map(|(_, at)| at.load(Ordering::Relaxed))
            .is_some_and(|at| at != 0 && now.saturating_sub(at) <= window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_counts_for_the_window_only() {
        let node: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let other: SocketAddr = "127.0.0.1:5001".parse().unwrap();
        let answers = RecentAnswers::new(Duration::from_secs(60));
        assert!(!answers.answered_recently(node));
        answers.record(node);
        assert!(answers.answered_recently(node));
        assert!(!answers.answered_recently(other));

        let expired = RecentAnswers::new(Duration::ZERO);
        expired.record(node);
        let deadline = Instant::now() + Duration::from_secs(5);
        while expired.answered_recently(node) {
            assert!(Instant::now() < deadline, "a zero window never expired");
            std::thread::yield_now();
        }
    }
}
