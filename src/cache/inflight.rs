//! One registry fetch per digest when many clients pull it cold at once (a CI fleet
//! starting together): the first GET becomes the leader and goes to the registry; the
//! others wait until its fill is committed (or fails) and are then answered from the
//! cache. A leader that fills nothing (a 404, a 307, a body over `max_object`, a client
//! gone) releases the others, who then ask the registry themselves.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::shared::Cache;

/// Held by the leader's request, then by its fill; dropping it releases the waiters.
pub(crate) struct Leader {
    cache: Arc<Cache>,
    digest: String,
    done: watch::Sender<bool>,
}

/// What a request for `digest` should do.
pub(crate) enum Role {
    /// Fetch it from the registry; hold this until the fill ends.
    Lead(Leader),
    /// Another request is fetching it: wait on this.
    Follow(watch::Receiver<bool>),
}

/// Leads the fetch of `digest`, or follows the request already leading it.
pub(crate) fn join(cache: &Arc<Cache>, digest: &str) -> Role {
    let mut map = cache.inflight.lock();
    if let Some(receiver) = map.get(digest) {
        return Role::Follow(receiver.clone());
    }
    let (done, receiver) = watch::channel(false);
    map.insert(digest.to_string(), receiver);
    Role::Lead(Leader {
        cache: Arc::clone(cache),
        digest: digest.to_string(),
        done,
    })
}

/// Waits until the leader is done, at most `limit`.
pub(crate) async fn wait(mut receiver: watch::Receiver<bool>, limit: Duration) {
    let _ = tokio::time::timeout(limit, receiver.wait_for(|done| *done)).await;
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.cache.inflight.lock().remove(&self.digest);
        let _ = self.done.send(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_wait_for_the_leader_and_the_next_request_leads_again() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(Cache::for_tests(dir.path()));
        let Role::Lead(leader) = join(&cache, "sha256:a") else {
            panic!("the first request must lead");
        };
        let Role::Follow(follower) = join(&cache, "sha256:a") else {
            panic!("the second request must follow");
        };
        assert!(
            matches!(join(&cache, "sha256:b"), Role::Lead(_)),
            "another digest"
        );
        let waiting = tokio::spawn(wait(follower, Duration::from_secs(10)));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(leader);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the follower was released")
            .unwrap();
        assert!(matches!(join(&cache, "sha256:a"), Role::Lead(_)));
    }
}
