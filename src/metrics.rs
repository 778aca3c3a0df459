//! Prometheus metrics (the `prometheus` crate), served by the admin listener (`admin`).
//!
//! One process-wide set: the proxy, the listeners and the token endpoint count into it
//! wherever the event happens. Names carry the `registry_edge_` prefix.

use std::sync::{LazyLock, OnceLock};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The route classes request metrics are labelled with (`proxy::checks::route_class`).
const CLASSES: [&str; 4] = ["pull", "push", "auth", "other"];

/// One route class's request series, each resolved on first use and then reused:
/// `with_label_values` hashes the labels, takes a lock and (for the status) formats a
/// string on every request. Lazily, so a series appears in `/metrics` only once it counted.
struct ClassSeries {
    /// By status code, 0 (no response) to 599.
    requests: Box<[OnceLock<IntCounter>]>,
    seconds: OnceLock<Histogram>,
    upstream: OnceLock<Histogram>,
}

impl ClassSeries {
    fn new() -> ClassSeries {
        ClassSeries {
            requests: (0..600).map(|_| OnceLock::new()).collect(),
            seconds: OnceLock::new(),
            upstream: OnceLock::new(),
        }
    }
}

/// Request latency buckets (seconds): small registry calls up to multi-minute uploads.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

pub(crate) struct Metrics {
    registry: Registry,
    /// Requests by route class (`pull`, `push`, `auth`, `other`) and status.
    pub requests: IntCounterVec,
    /// Whole-request time by route class.
    pub request_seconds: HistogramVec,
    /// Time from choosing a node to its response header, by route class.
    pub upstream_seconds: HistogramVec,
    /// Resolved handles of the three above, per class in [`CLASSES`] order.
    series: [ClassSeries; 4],
    pub bytes_received: IntCounter,
    pub bytes_sent: IntCounter,
    pub tokens_issued: IntCounter,
    pub failed_logins: IntCounter,
    /// Logins answered 503 because their backend could not answer, by backend (`ldap`,
    /// `oidc`, `http`).
    pub login_backend_unavailable: IntCounterVec,
    /// Requests refused by a limit: `push` or `failed_logins`.
    pub rate_limited: IntCounterVec,
    /// 1 while a registry node passes its health check.
    pub node_healthy: IntGaugeVec,
    pub active_connections: IntGauge,
    /// TLS handshakes by result (`ok`, `failed`, `timeout`).
    pub tls_handshakes: IntCounterVec,
    /// Connections refused on a PROXY-protocol listener, by reason (`untrusted_peer`,
    /// `invalid_header`, `timeout`).
    pub proxy_protocol_refused: IntCounterVec,
    /// ACME orders by result (`ok`, `failed`).
    pub acme_orders: IntCounterVec,
    /// Failed ACME orders since the last success (0 while all is well).
    pub acme_consecutive_failures: IntGauge,
    /// `notAfter` (Unix seconds) of the ACME certificate in force, per name.
    pub acme_certificate_expiry: IntGaugeVec,
    /// 1 while `shared_state.redis` answers.
    pub shared_state_up: IntGauge,
    /// Limit checks done without Redis because it was unavailable, by limit.
    pub shared_state_fallbacks: IntCounterVec,
    /// Cache events (`cache`): `hit`, `miss`, `fill`, `eviction`, `mismatch`, `error`.
    pub cache_events: IntCounterVec,
    /// Body bytes answered from the cache.
    pub cache_served_bytes: IntCounter,
    /// Bytes the cache holds on disk.
    pub cache_size: IntGauge,
    /// `policy`: bytes a namespace holds, as the edge counts them.
    pub policy_usage: IntGaugeVec,
    /// `policy`: a namespace's quota in bytes (listed namespaces and those seen).
    pub policy_quota: IntGaugeVec,
    /// `policy`: refusals by reason (`quota`, `immutable`, `invalid`, `unavailable`).
    pub policy_refusals: IntCounterVec,
    /// Manifests by tag answered from a remembered tag while the route's pool failed.
    pub route_stale_answers: IntCounterVec,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Applies `apply` to the series held in `slot` (looked up on first use), or to one looked
/// up now when there is no slot (a class or status outside the table).
fn with_series<M>(slot: Option<&OnceLock<M>>, lookup: impl FnOnce() -> M, apply: impl FnOnce(&M)) {
    match slot {
        Some(slot) => apply(slot.get_or_init(lookup)),
        None => apply(&lookup()),
    }
}

/// Registers `metric` (a handle sharing its values) and returns it.
fn registered<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: M,
) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

/// The process's metrics.
pub(crate) fn metrics() -> &'static Metrics {
    &METRICS
}

/// Registers metrics of every kind in one registry; a name registered twice is a bug
/// caught by the first `/metrics` test, never input.
struct Registrar<'a>(&'a Registry);

impl Registrar<'_> {
    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
        registered(self.0, metric)
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        registered(self.0, IntCounter::new(name, help).expect("valid metric"))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        registered(self.0, IntGauge::new(name, help).expect("valid metric"))
    }

    fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
        registered(self.0, metric)
    }

    /// Latency by route class and route.
    fn histogram(&self, name: &str, help: &str) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
        registered(
            self.0,
            HistogramVec::new(opts, &["class", "route"]).expect("valid metric"),
        )
    }

    /// `acme_*`: orders, consecutive failures, certificate expiry.
    fn acme(&self) -> (IntCounterVec, IntGauge, IntGaugeVec) {
        (
            self.counter_vec("acme_orders_total", "ACME orders by result", &["result"]),
            self.gauge(
                "acme_consecutive_failures",
                "Failed ACME orders since the last success",
            ),
            self.gauge_vec(
                "acme_certificate_expiry_timestamp_seconds",
                "Expiry (notAfter, Unix seconds) of the ACME certificate in force, per name",
                &["name"],
            ),
        )
    }

    /// `shared_state_*`: whether Redis answers, and checks done without it.
    fn shared_state(&self) -> (IntGauge, IntCounterVec) {
        (
            self.gauge(
                "shared_state_up",
                "1 while shared_state.redis answers; 0 while it does not or is not configured",
            ),
            self.counter_vec(
                "shared_state_fallbacks_total",
                "Limit checks done without Redis while it was unavailable",
                &["limit"],
            ),
        )
    }

    /// `cache_*`: events, bytes served, size on disk.
    fn cache(&self) -> (IntCounterVec, IntCounter, IntGauge) {
        (
            self.counter_vec(
                "cache_events_total",
                "Cache hits, misses, fills, verifications on read, evictions, digest mismatches and I/O errors",
                &["event"],
            ),
            self.counter(
                "cache_served_bytes_total",
                "Body bytes answered from the cache",
            ),
            self.gauge("cache_size_bytes", "Bytes the cache holds on disk"),
        )
    }

    /// `policy_*`: (usage, quota, refusals).
    fn policy(&self) -> (IntGaugeVec, IntGaugeVec, IntCounterVec) {
        (
            self.gauge_vec(
                "policy_usage_bytes",
                "Bytes a namespace holds (distinct blobs its manifests reference)",
                &["namespace"],
            ),
            self.gauge_vec(
                "policy_quota_bytes",
                "A namespace's storage quota in bytes",
                &["namespace"],
            ),
            self.counter_vec(
                "policy_refusals_total",
                "Pushes and deletes refused by policy, by reason (quota, immutable, invalid, unavailable)",
                &["reason"],
            ),
        )
    }
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new_custom(Some("registry_edge".into()), None)
            .expect("a valid metrics prefix");
        let r = Registrar(&registry);
        let (acme_orders, acme_consecutive_failures, acme_certificate_expiry) = r.acme();
        let (shared_state_up, shared_state_fallbacks) = r.shared_state();
        let (cache_events, cache_served_bytes, cache_size) = r.cache();
        let (policy_usage, policy_quota, policy_refusals) = r.policy();
        Metrics {
            requests: r.counter_vec(
                "requests_total",
                "Requests by route class, route and status",
                &["class", "route", "status"],
            ),
            request_seconds: r.histogram(
                "request_duration_seconds",
                "Request time by route class and route",
            ),
            upstream_seconds: r.histogram(
                "upstream_duration_seconds",
                "Time to the registry node's response header, by route class and route",
            ),
            bytes_received: r.counter("received_bytes_total", "Request body bytes received"),
            bytes_sent: r.counter("sent_bytes_total", "Response body bytes sent"),
            tokens_issued: r.counter("tokens_issued_total", "Registry tokens issued"),
            failed_logins: r.counter("failed_logins_total", "Logins refused at the token realm"),
            login_backend_unavailable: r.counter_vec(
                "login_backend_unavailable_total",
                "Logins answered 503 because their backend could not answer, by backend",
                &["backend"],
            ),
            rate_limited: r.counter_vec(
                "rate_limited_total",
                "Requests refused by a limit",
                &["limit"],
            ),
            tls_handshakes: r.counter_vec(
                "tls_handshakes_total",
                "TLS handshakes by result",
                &["result"],
            ),
            proxy_protocol_refused: r.counter_vec(
                "proxy_protocol_refused_total",
                "Connections refused on a PROXY-protocol listener, by reason",
                &["reason"],
            ),
            acme_orders,
            acme_consecutive_failures,
            acme_certificate_expiry,
            shared_state_up,
            shared_state_fallbacks,
            cache_events,
            cache_served_bytes,
            cache_size,
            policy_usage,
            policy_quota,
            policy_refusals,
            route_stale_answers: r.counter_vec(
                "route_stale_answers_total",
                "Manifests by tag answered stale (a remembered tag) while the route's pool failed",
                &["route"],
            ),
            node_healthy: r.gauge_vec(
                "upstream_node_healthy",
                "1 while the registry node passes its health check, by node and route",
                &["node", "route"],
            ),
            active_connections: r.gauge("active_connections", "Client connections open now"),
            series: [(); 4].map(|()| ClassSeries::new()),
            registry,
        }
    }

    /// Counts a finished request of route `class` on `route` (`routes[].name`, `default`)
    /// with `status` (0: no response) that took `seconds`.
    pub(crate) fn count_request(&self, class: &str, route: &str, status: u16, seconds: f64) {
        let series = self.series_of(class, route);
        with_series(
            series.and_then(|s| s.requests.get(usize::from(status))),
            || {
                self.requests
                    .with_label_values(&[class, route, &status.to_string()])
            },
            |counter| counter.inc(),
        );
        with_series(
            series.map(|s| &s.seconds),
            || self.request_seconds.with_label_values(&[class, route]),
            |histogram| histogram.observe(seconds),
        );
    }

    /// Records the time a node of route `class` on `route` took to its response header.
    pub(crate) fn observe_upstream(&self, class: &str, route: &str, seconds: f64) {
        with_series(
            self.series_of(class, route).map(|s| &s.upstream),
            || self.upstream_seconds.with_label_values(&[class, route]),
            |histogram| histogram.observe(seconds),
        );
    }

    /// The resolved series of the default pool's requests; a route's are looked up per
    /// request (routes come and go with reloads).
    fn series_of(&self, class: &str, route: &str) -> Option<&ClassSeries> {
        if route != crate::config::DEFAULT_ROUTE {
            return None;
        }
        let index = CLASSES.iter().position(|c| *c == class)?;
        Some(&self.series[index])
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding metrics into memory");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolved_series_count_into_the_labelled_ones() {
        let m = metrics();
        let value = |class: &str, route: &str, status: &str| {
            m.requests.with_label_values(&[class, route, status]).get()
        };
        let cases = [
            ("pull", "default", 200, "200"),
            ("auth", "default", 0, "0"),
            ("unlisted", "default", 404, "404"),
            ("push", "default", 999, "999"),
            ("pull", "hub", 200, "200"),
        ];
        for (class, route, status, label) in cases {
            let before = value(class, route, label);
            m.count_request(class, route, status, 0.01);
            m.count_request(class, route, status, 0.02);
            assert_eq!(value(class, route, label), before + 2, "{class} {status}");
        }
        for route in ["default", "hub"] {
            let seconds = m.request_seconds.with_label_values(&["pull", route]);
            let before = seconds.get_sample_count();
            m.count_request("pull", route, 201, 0.5);
            assert_eq!(seconds.get_sample_count(), before + 1);
            let upstream = m.upstream_seconds.with_label_values(&["other", route]);
            let before = upstream.get_sample_count();
            m.observe_upstream("other", route, 0.1);
            assert_eq!(upstream.get_sample_count(), before + 1);
        }
    }
}
