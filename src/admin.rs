//! The admin listener (`admin.listen`, plain HTTP, never a public port): `/metrics` in
//! Prometheus text format, `/healthz` (the process answers) and `/readyz` (at least one
//! registry node passes its health check: what a load balancer should route on).

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::metrics::metrics;
use crate::upstream::NodePool;

pub struct AdminApp {
    pool: Arc<NodePool>,
}

impl AdminApp {
    pub fn new(pool: Arc<NodePool>) -> Self {
        AdminApp { pool }
    }

    /// Publishes node health as gauges; true when any node is healthy.
    fn refresh_node_health(&self) -> bool {
        let health = self.pool.health();
        let gauge = &metrics().node_healthy;
        for (node, healthy) in &health {
            gauge
                .with_label_values(&[&node.to_string()])
                .set(i64::from(*healthy));
        }
        health.iter().any(|(_, healthy)| *healthy)
    }
}

fn answer(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("Content-Type", content_type)
        .header("Content-Length", body.len())
        .header("Cache-Control", "no-store")
        .body(body)
        .expect("a valid response")
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let text = "text/plain; charset=utf-8";
        match session.req_header().uri.path() {
            "/metrics" => {
                self.refresh_node_health();
                answer(200, "text/plain; version=0.0.4", metrics().render())
            }
            "/healthz" => answer(200, text, b"ok\n".to_vec()),
            "/readyz" if self.refresh_node_health() => answer(200, text, b"ready\n".to_vec()),
            "/readyz" => answer(503, text, b"no healthy registry node\n".to_vec()),
            _ => answer(404, text, b"/metrics, /healthz, /readyz\n".to_vec()),
        }
    }
}
