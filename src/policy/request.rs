//! The policy's state for one request ([`RequestState`]), and its hooks after admission:
//! [`new_attempt`] (a retry starts the held body again) and [`upstream_response`] (what a
//! 2xx from the registry records).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;

use super::gauges::set_gauges;
use super::manifest::Reference;
use super::reserve::Reservation;
use super::usage::Policy;
use crate::hooks::RequestFacts;
use crate::metrics::metrics;
use crate::upstream::registry_api::RegistryApi;

/// What the policy follows of one request (opaque outside the policy).
pub(crate) struct RequestState(pub(super) Follow);

/// What the policy follows, by endpoint.
pub(super) enum Follow {
    /// A blob upload bounded by what remains of its namespace's quota.
    Upload(UploadRoom),
    /// A manifest `PUT` held for its body.
    ManifestPut(Box<ManifestPut>),
    /// A manifest `DELETE` whose 2xx the policy records.
    ManifestDelete { repository: String, digest: String },
}

/// Where and how the edge asks the registry about a repository: the node and the
/// `Authorization` to send.
#[derive(Clone)]
pub(super) struct Lookup {
    pub(super) node: SocketAddr,
    /// The repository as that node names it (a route's pool: without the prefix).
    pub(super) repository: String,
    pub(super) authorization: Option<String>,
    pub(super) timeout: Duration,
}

impl Lookup {
    pub(super) fn api<'a>(&self, policy: &'a Policy) -> RegistryApi<'a> {
        let authorization = self.authorization.clone();
        policy.registry().at(self.node, authorization, self.timeout)
    }
}

/// A manifest `PUT` being held for its body.
pub(super) struct ManifestPut {
    pub(super) repository: String,
    pub(super) namespace: String,
    pub(super) reference: String,
    /// The namespace's quota, unless the account is exempt or there is none.
    pub(super) quota: Option<u64>,
    /// The digest a protected tag points to now (`None`: not protected, or new).
    pub(super) protected: Option<String>,
    /// For the sizes of the blobs it adds (set when a quota applies).
    pub(super) lookup: Option<Lookup>,
    pub(super) body: BytesMut,
    /// Set once the body was let through: what to record on the registry's 2xx.
    pub(super) commit: Option<Commit>,
}

/// A manifest let through, recorded once the registry stored it.
pub(super) struct Commit {
    pub(super) digest: String,
    pub(super) references: Arc<Vec<Reference>>,
    /// Bytes it adds to its namespace.
    pub(super) added: u64,
    /// Held until the usage is recorded (dropped with the request otherwise).
    pub(super) reservation: Option<Reservation>,
}

/// A blob upload's room: what remains of its namespace's quota when it was admitted.
pub(super) struct UploadRoom {
    pub(super) namespace: String,
    pub(super) usage: u64,
    pub(super) quota: u64,
}

/// Counts a refusal in `registry_edge_policy_refusals_total` by `reason` (`quota`,
/// `immutable`, `invalid`, `unavailable`).
pub(super) fn count_refusal(reason: &str) {
    metrics().policy_refusals.with_label_values(&[reason]).inc();
}

/// `upstream_peer`: a new attempt at the registry (Pingora retries an idempotent PUT and
/// replays the body from its own buffer of the raw chunks): a body not yet decided starts
/// again.
pub(crate) fn new_attempt(state: &mut Option<RequestState>) {
    if let Some(RequestState(Follow::ManifestPut(put))) = state {
        if put.commit.is_none() {
            put.body.clear();
        }
    }
}

/// `upstream_response_filter`: records what the registry's answer confirmed, a stored
/// manifest or a deleted one (any 2xx). Informational answers (`100 Continue`) change
/// nothing.
pub(crate) async fn upstream_response(
    policy: &Policy,
    status: u16,
    request: &RequestFacts,
    state: &mut Option<RequestState>,
) {
    if !(200..300).contains(&status) {
        return;
    }
    match state.take() {
        Some(RequestState(Follow::ManifestPut(put))) => record_put(policy, request, *put).await,
        Some(RequestState(Follow::ManifestDelete { repository, digest })) => {
            record_delete(policy, request, &repository, &digest).await
        }
        other => *state = other,
    }
}

async fn record_put(policy: &Policy, request: &RequestFacts, put: ManifestPut) {
    let Some(commit) = put.commit else {
        return;
    };
    let (namespace, repository) = (&put.namespace, &put.repository);
    let recorded = policy
        .put(
            namespace,
            repository,
            &commit.digest,
            commit.references,
            commit.added,
        )
        .await;
    match (recorded, &request.settings.policy) {
        (Ok(usage), Some(rules)) => set_gauges(namespace, usage, rules),
        (Ok(_), None) => {}
        (Err(e), _) => {
            tracing::error!(
                "policy: {} of {repository} not recorded: {}",
                commit.digest,
                crate::report::chain(&e)
            )
        }
    }
    // The reservation ends only now that the usage includes the manifest.
    drop(commit.reservation);
}

async fn record_delete(policy: &Policy, request: &RequestFacts, repository: &str, digest: &str) {
    let namespace = policy.namespace_of(repository);
    match (
        policy.delete(namespace, repository, digest).await,
        &request.settings.policy,
    ) {
        (Ok(Some(usage)), Some(rules)) => set_gauges(namespace, usage, rules),
        (Ok(_), _) => {}
        (Err(e), _) => tracing::error!(
            "policy: deletion of {digest} not recorded: {}",
            crate::report::chain(&e)
        ),
    }
}
