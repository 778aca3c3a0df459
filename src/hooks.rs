//! What the proxy's phases and the features (`cache`, `policy`) share: what a feature sees
//! of a request ([`RequestFacts`]) and what its admission hook can decide ([`Outcome`],
//! [`Refusal`]).
//!
//! A feature is one folder that owns its per-request state and offers a hook per phase it
//! cares about (each feature's `mod.rs` lists them); `proxy::features` calls the hooks in
//! order. The shape is Pingora's `HttpModule` and river's `RequestFilterMod`, with static
//! calls instead of boxed trait objects: the request context holds `Option<feature::
//! RequestState>` values and the proxy holds `Option<Arc<Feature>>`, so a request no feature
//! takes part in allocates nothing and costs one branch per phase.

use std::sync::Arc;
use std::time::Instant;

use crate::error::RegistryError;
use crate::registry::Route;
use crate::request::client::ClientAddress;
use crate::request::origin::{PublicOrigin, Source};
use crate::routes::Routed;
use crate::settings::Settings;

/// What admission learned about a request, read by the proxy's phases and every feature.
pub(crate) struct RequestFacts {
    pub started: Instant,
    /// The configuration snapshot this request runs under, from start to end.
    pub settings: Arc<Settings>,
    pub client: Option<ClientAddress>,
    /// The request path as the registry will route it (percent-decoded).
    pub path: String,
    pub route: Route,
    /// The token subject (or the account a token was issued to); `""` = anonymous.
    pub subject: Option<String>,
    /// `X-Request-Id` (the client's or a new one).
    pub request_id: String,
    /// The metrics' route class (`pull`, `push`, `auth`, `other`).
    pub class: &'static str,
    /// Where clients reach the registry (realm URLs, forwarded host and proto).
    pub origin: PublicOrigin,
    /// Request body bytes seen so far.
    pub body_bytes: u64,
    /// The route (`routes:`) that takes the request; `None` = the default pool. The
    /// repository in `route` is then the name at the edge.
    pub routed: Option<Routed>,
    /// Headers every answer to this request carries, the registry's or the edge's own
    /// (a counted pull's `RateLimit-*`).
    pub answer_headers: Vec<(&'static str, String)>,
}

impl RequestFacts {
    /// A request nothing is known of yet, under `settings`.
    pub(crate) fn new(settings: Arc<Settings>) -> Self {
        RequestFacts {
            started: Instant::now(),
            settings,
            client: None,
            path: String::new(),
            route: Route::outside(),
            subject: None,
            request_id: String::new(),
            class: "other",
            origin: PublicOrigin {
                scheme: "https",
                authority: "localhost".into(),
                source: Source::Listener,
            },
            body_bytes: 0,
            routed: None,
            answer_headers: Vec::new(),
        }
    }

    /// The path the registry node that takes the request is asked for (the default pool's:
    /// decoded; a route's pool's: its own name, the rest as sent).
    pub(crate) fn registry_path(&self) -> &str {
        self.routed.as_ref().map_or(&self.path, |r| &r.pool_path)
    }

    /// The repository as the registry node names it.
    pub(crate) fn registry_repository(&self) -> Option<&str> {
        match &self.routed {
            Some(routed) => Some(&routed.pool_repository),
            None => self.route.repository.as_deref(),
        }
    }

    /// `Authorization` towards the node for a request the edge routed to a pool and checked
    /// the token of: a token the edge signs for the pool's name with `actions`; `None` for
    /// any other request (the client's own header goes).
    pub(crate) fn pool_authorization(&self, actions: &[&str]) -> Option<String> {
        let (routed, auth) = (self.routed.as_ref()?, self.settings.auth.as_ref()?);
        let scope = crate::registry::Scope::repository(&routed.pool_repository, actions);
        Some(crate::upstream::registry_api::edge_token(
            &auth.tokens,
            &[scope],
        ))
    }

    /// How long the node may go silent (`upstream.read_timeout`, or the route's).
    pub(crate) fn read_timeout(&self) -> std::time::Duration {
        match &self.routed {
            Some(routed) => routed.route.settings.pool.read_timeout,
            None => self.settings.read_timeout,
        }
    }

    /// The route's label in metrics and the access log (`default`: the `upstream` pool).
    pub(crate) fn route_name(&self) -> &str {
        self.routed
            .as_ref()
            .map_or(crate::config::DEFAULT_ROUTE, |r| &r.route.settings.name)
    }
}

/// What one admission step (or a feature's admission hook) decided.
pub(crate) enum Outcome {
    /// Go on with the next step (after the last: proxy the request).
    Next,
    /// Answer with this error and stop.
    Refuse(Refusal),
    /// The step wrote the whole answer itself.
    Answered,
}

impl From<Option<RegistryError>> for Outcome {
    fn from(error: Option<RegistryError>) -> Outcome {
        error.map_or(Outcome::Next, |e| Outcome::Refuse(e.into()))
    }
}

/// An error answer the edge gives instead of proxying: the registry error and any headers
/// it needs (`WWW-Authenticate`, `Retry-After`, `RateLimit-*`).
pub(crate) struct Refusal {
    pub error: RegistryError,
    pub headers: Vec<(&'static str, String)>,
}

impl From<RegistryError> for Refusal {
    fn from(error: RegistryError) -> Refusal {
        Refusal {
            error,
            headers: Vec::new(),
        }
    }
}
