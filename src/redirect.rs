//! The plain-HTTP listeners: every request is redirected to https.
//!
//! GET/HEAD get 301, other methods 308 (which keeps method and body). The target is
//! `https://<host>[:<https port> unless 443]<path>?<query>`, with `external_url`'s
//! authority when configured. (The docs' nginx line
//! `return 301 https://$http_host:$request_uri;` yields `https://host:8080:/v2/`.)

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response};
use pingora::apps::http_app::ServeHttp;
use pingora::http::RequestHeader;
use pingora::protocols::http::ServerSession;

use crate::acme::challenges::{Challenges, HTTP01_PREFIX};
use crate::config::ExternalUrl;

/// Answers plain-HTTP requests with a redirect to the HTTPS listener, except ACME
/// http-01 challenges, which are answered here.
pub struct RedirectApp {
    https_port: u16,
    external: Option<ExternalUrl>,
    acme: Option<Arc<Challenges>>,
}

impl RedirectApp {
    pub fn new(https_port: u16, external: Option<ExternalUrl>) -> Self {
        RedirectApp {
            https_port,
            external,
            acme: None,
        }
    }

    /// Answer `/.well-known/acme-challenge/<token>` from `challenges` instead of redirecting.
    pub fn with_acme_challenges(mut self, challenges: Arc<Challenges>) -> Self {
        self.acme = Some(challenges);
        self
    }

    /// The http-01 answer for a request: 200 with the key authorization, or 404 for a
    /// token that is not pending. `None`: not a challenge request.
    fn acme_answer(&self, req: &RequestHeader) -> Option<(u16, Vec<u8>)> {
        let challenges = self.acme.as_ref()?;
        let path = req.uri.path();
        if !path.starts_with(HTTP01_PREFIX) || !matches!(req.method, Method::GET | Method::HEAD) {
            return None;
        }
        Some(match challenges.http01_answer(path) {
            Some(answer) => (200, answer.into_bytes()),
            None => (404, b"no such ACME challenge\n".to_vec()),
        })
    }

    /// The redirect target for a request; `local` is used when the request names no usable host.
    pub fn location(&self, req: &RequestHeader, local: Option<SocketAddr>) -> String {
        let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let path = if path.starts_with('/') { path } else { "/" };
        if let Some(external) = &self.external {
            return format!("https://{}{path}", external.authority);
        }
        let host = crate::proxy::headers::request_hostname(req).or_else(|| {
            local.map(|addr| match addr {
                SocketAddr::V4(a) => a.ip().to_string(),
                SocketAddr::V6(a) => format!("[{}]", a.ip()),
            })
        });
        let host = host.unwrap_or_else(|| "localhost".to_string());
        match self.https_port {
            443 => format!("https://{host}{path}"),
            port => format!("https://{host}:{port}{path}"),
        }
    }
}

#[async_trait]
impl ServeHttp for RedirectApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let local = session.server_addr().and_then(|a| a.as_inet()).copied();
        let req = session.req_header();
        let acme = self.acme_answer(req);
        let location = self.location(req, local);
        let method = req.method.clone();
        let status = match &acme {
            Some((status, _)) => *status,
            None if method == Method::GET || method == Method::HEAD => 301,
            None => 308,
        };
        tracing::info!(
                    target: "registry_edge::access",
        client = %session
                        .client_addr()
                        .and_then(|a| a.as_inet())
                        .map_or_else(|| "-".to_string(), |a| a.ip().to_string()),
                    method = %method,
                    path = %session.req_header().uri.path(),
                    status,
                    listener = "http",
                );
        // A body we will not read makes the connection unusable for another request.
        if !session.is_body_empty() {
            session.set_keepalive(None);
        }
        if let Some((_, body)) = acme {
            return Response::builder()
                .status(status)
                .header(http::header::CONTENT_TYPE, "application/octet-stream")
                .header(http::header::CONTENT_LENGTH, body.len())
                .header(http::header::CACHE_CONTROL, "no-store")
                .body(body)
                .expect("valid challenge response");
        }
        Response::builder()
            .status(status)
            .header(http::header::LOCATION, location)
            .header(http::header::CONTENT_LENGTH, 0)
            .header(http::header::CACHE_CONTROL, "no-store")
            .body(Vec::new())
            .expect("valid redirect response")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, target: &str, host: Option<&str>) -> RequestHeader {
        let mut req = RequestHeader::build(method, target.as_bytes(), None).unwrap();
        if let Some(host) = host {
            req.insert_header("Host", host).unwrap();
        }
        req
    }

    #[test]
    fn keeps_path_and_query_and_uses_https_port() {
        let app = RedirectApp::new(8443, None);
        let r = req(
            "GET",
            "/v2/a/blobs/uploads/x?_state=q&digest=sha256:1",
            Some("registry.test:8080"),
        );
        assert_eq!(
            app.location(&r, None),
            "https://registry.test:8443/v2/a/blobs/uploads/x?_state=q&digest=sha256:1"
        );
    }

    #[test]
    fn default_port_is_omitted() {
        let app = RedirectApp::new(443, None);
        assert_eq!(
            app.location(&req("GET", "/v2/", Some("registry.test")), None),
            "https://registry.test/v2/"
        );
    }

    #[test]
    fn external_url_wins() {
        let app = RedirectApp::new(
            8443,
            Some(ExternalUrl {
                authority: "registry.example.com".into(),
            }),
        );
        assert_eq!(
            app.location(&req("PUT", "/v2/x", Some("other:8080")), None),
            "https://registry.example.com/v2/x"
        );
    }

    #[test]
    fn ipv6_and_missing_host() {
        let app = RedirectApp::new(8443, None);
        assert_eq!(
            app.location(&req("GET", "/", Some("[::1]:8080")), None),
            "https://[::1]:8443/"
        );
        let local = "127.0.0.1:8080".parse().ok();
        assert_eq!(
            app.location(&req("GET", "/v2/", None), local),
            "https://127.0.0.1:8443/v2/"
        );
        assert_eq!(
            app.location(&req("GET", "/v2/", Some("evil@x")), local),
            "https://127.0.0.1:8443/v2/"
        );
    }
}
