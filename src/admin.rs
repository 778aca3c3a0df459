//! The admin listener (`admin.listen`, plain HTTP, never a public port): `/metrics` in
//! Prometheus text format, `/healthz` (the process answers) and `/readyz` (at least one
//! registry node of the default pool passes its health check and the process is not
//! stopping: what a load balancer should route on).

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::config::DEFAULT_ROUTE;
use crate::drain::Drain;
use crate::metrics::metrics;
use crate::settings::SharedSettings;
use crate::upstream::NodePool;

pub(crate) struct AdminApp {
    pool: Arc<NodePool>,
    /// The routes in force, whose pools' nodes are published too.
    settings: SharedSettings,
    /// While draining (SIGTERM) `/readyz` says 503, so balancers stop sending new clients.
    drain: Arc<Drain>,
}

impl AdminApp {
    pub(crate) fn new(pool: Arc<NodePool>, settings: SharedSettings, drain: Arc<Drain>) -> Self {
        AdminApp {
            pool,
            settings,
            drain,
        }
    }

    /// Publishes node health as gauges (by node and route: nodes of routes a reload removed
    /// disappear); true when any node of the default pool is healthy (`/readyz`: a route's
    /// pool being down is answered per request, stale or 503).
    fn refresh_node_health(&self) -> bool {
        let gauge = &metrics().node_healthy;
        gauge.reset();
        let health = self.pool.health();
        for (node, healthy) in &health {
            gauge
                .with_label_values(&[&node.to_string(), DEFAULT_ROUTE])
                .set(i64::from(*healthy));
        }
        for route in self.settings.load().routes.iter() {
            for (node, healthy) in route.pool.health() {
                gauge
                    .with_label_values(&[&node.to_string(), &route.settings.name])
                    .set(i64::from(healthy));
            }
        }
        health.iter().any(|(_, healthy)| *healthy)
    }
}

/// An admin answer; HEAD gets the headers only (with the GET body's length).
fn answer(status: u16, content_type: &str, body: Vec<u8>, head: bool) -> Response<Vec<u8>> {
    let length = body.len();
    let mut response = Response::new(if head { Vec::new() } else { body });
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    if let Ok(value) = http::HeaderValue::from_str(content_type) {
        headers.insert(http::header::CONTENT_TYPE, value);
    }
    headers.insert(http::header::CONTENT_LENGTH, length.into());
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    response
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        // As on the other listeners: requests written back to back are answered in order.
        session.set_pipelining_enabled(true);
        let text = "text/plain; charset=utf-8";
        let head = session.req_header().method == http::Method::HEAD;
        let answer =
            |status, content_type, body: &[u8]| answer(status, content_type, body.to_vec(), head);
        match session.req_header().uri.path() {
            "/metrics" => {
                self.refresh_node_health();
                let body = metrics().render();
                answer(200, "text/plain; version=0.0.4", &body)
            }
            "/healthz" => answer(200, text, b"ok\n"),
            "/readyz" if self.drain.is_draining() => answer(503, text, b"stopping\n"),
            "/readyz" if self.refresh_node_health() => answer(200, text, b"ready\n"),
            "/readyz" => answer(503, text, b"no healthy registry node\n"),
            _ => answer(404, text, b"/metrics, /healthz, /readyz\n"),
        }
    }
}
