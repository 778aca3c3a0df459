//! The plain-HTTP listeners: every request is redirected to https.
//!
//! GET/HEAD get 301, other methods 308 (which keeps method and body). The target is
//! `https://<public origin><path>?<query>` ([`crate::request::origin`]: `external_url`, a
//! trusted proxy's `X-Forwarded-Host`, as given) or, from the request's own `Host`,
//! `https://<host>[:<https port> unless 443]<path>?<query>`. (The docs' nginx line
//! `return 301 https://$http_host:$request_uri;` yields `https://host:8080:/v2/`.)
//!
//! Like the HTTPS listener it answers a request it cannot frame with `400` in the registry's
//! JSON format (Pingora's own server app closes such connections without a word), answers
//! pipelined requests in order, and answers a client that shut down its write side after
//! its request.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response};
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora::ErrorType;

use crate::acme::challenges::{Challenges, HTTP01_PREFIX};
use crate::error::RegistryError;
use crate::request::framing;
use crate::request::origin::{PublicOrigin, Source};
use crate::settings::SharedSettings;

/// Answers plain-HTTP requests with a redirect to the HTTPS listener, except ACME
/// http-01 challenges, which are answered here.
pub(crate) struct RedirectApp {
    https_port: u16,
    /// `external_url` and `forwarded.trusted_proxies`, as reloaded.
    settings: SharedSettings,
    acme: Option<Arc<Challenges>>,
}

impl RedirectApp {
    pub(crate) fn new(https_port: u16, settings: SharedSettings) -> Self {
        RedirectApp {
            https_port,
            settings,
            acme: None,
        }
    }

    /// Answer `/.well-known/acme-challenge/<token>` from `challenges` instead of redirecting.
    pub(crate) fn with_acme_challenges(mut self, challenges: Arc<Challenges>) -> Self {
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
}

/// The redirect target for a request whose public origin is `origin`: always https.
pub(crate) fn location(req: &RequestHeader, origin: &PublicOrigin, https_port: u16) -> String {
    let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let path = if path.starts_with('/') { path } else { "/" };
    // Bytes a URL may not carry raw (controls, non-ASCII) are percent-encoded; escapes
    // already there stay as they are.
    let path = percent_encoding::percent_encode(path.as_bytes(), percent_encoding::CONTROLS);
    match origin.source {
        Source::ExternalUrl => format!("https://{}{path}", origin.authority),
        // The balancer's port is the plain-HTTP one it received on: https is on 443.
        Source::TrustedProxy => {
            let host = origin
                .authority
                .parse::<http::uri::Authority>()
                .map(|a| a.host().to_ascii_lowercase())
                .unwrap_or_else(|_| "localhost".to_string());
            format!("https://{host}{path}")
        }
        Source::Host | Source::Listener => {
            // The client named the plain-HTTP listener: same host, the HTTPS port.
            let host = origin
                .authority
                .parse::<http::uri::Authority>()
                .map(|a| a.host().to_ascii_lowercase())
                .unwrap_or_else(|_| "localhost".to_string());
            match https_port {
                443 => format!("https://{host}{path}"),
                port => format!("https://{host}:{port}{path}"),
            }
        }
    }
}

#[async_trait]
impl HttpServerApp for RedirectApp {
    async fn process_new_http(
        self: &Arc<Self>,
        mut http: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match http.read_request().await {
            Ok(true) => {}
            // Closed before sending anything (a keep-alive connection's normal end).
            Ok(false) => return None,
            Err(e) if *e.etype() == ErrorType::InvalidHTTPHeader => {
                refuse(&mut http, &RegistryError::BadRequest, false).await;
                return None;
            }
            Err(e) => {
                tracing::debug!("plain HTTP: the request could not be read: {e}");
                return None;
            }
        }
        if let Err(error) = framing::check(http.req_header_mut(), false) {
            // A target, Host or framing the edge would refuse on https: refused here too,
            // rather than redirected to a made-up place.
            let head = http.req_header().method == Method::HEAD;
            refuse(&mut http, &error, head).await;
            return None;
        }
        // Keep-alive only where the request allows it (not HTTP/1.0 by default, nor
        // `Connection: close`, which Pingora has already applied).
        if *shutdown.borrow() {
            http.set_keepalive(None);
        } else if http.get_keepalive().is_some() {
            http.set_keepalive(Some(60));
        }
        http.set_pipelining_enabled(true);
        let (parts, body) = self.answer(&mut http).into_parts();
        let header: ResponseHeader = parts.into();
        let written = match http.write_response_header(Box::new(header)).await {
            Ok(()) => http.write_response_body(body.into(), true).await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            tracing::debug!("plain HTTP: the answer could not be written: {e}");
            return None;
        }
        let persistent = HttpPersistentSettings::for_session(&http);
        match http.finish().await {
            Ok(reusable) => reusable.map(|s| ReusedHttpStream::from_reusable_stream(s, persistent)),
            Err(e) => {
                tracing::debug!("plain HTTP: the connection cannot be reused: {e}");
                None
            }
        }
    }
}

/// Answers `error` in the registry's JSON format (headers only to a HEAD), then closes, as
/// Pingora's proxy does after its own 400.
async fn refuse(http: &mut ServerSession, error: &RegistryError, head: bool) {
    let body = error.body();
    let header = error.response_header(body.len());
    let body = if head { bytes::Bytes::new() } else { body };
    if let Err(e) = http.write_error_response(header, body).await {
        tracing::debug!("plain HTTP: the refusal could not be written: {e}");
    }
    http.shutdown().await;
}

impl RedirectApp {
    /// The answer to one request: the redirect, or an ACME http-01 answer.
    fn answer(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let local = session.server_addr().and_then(|a| a.as_inet()).copied();
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let req = session.req_header();
        let acme = self.acme_answer(req);
        let settings = self.settings.load();
        let trusted = peer.is_some_and(|ip| settings.forwarded.is_trusted(ip));
        let origin = PublicOrigin::of(req, trusted, settings.external.as_ref(), local);
        let location = location(req, &origin, self.https_port);
        let method = req.method.clone();
        let status = match &acme {
            Some((status, _)) => *status,
            None if method == Method::GET || method == Method::HEAD => 301,
            None => 308,
        };
        tracing::info!(
            target: "registry_edge::access",
            client = %peer.map_or_else(|| "-".to_string(), |ip| ip.to_string()),
            method = %method,
            path = %req.uri.path(),
            status,
            listener = "http",
        );
        // A body we will not read makes the connection unusable for another request.
        if !session.is_body_empty() {
            session.set_keepalive(None);
        }
        let head = method == Method::HEAD;
        match acme {
            Some((_, body)) => reply(status, None, "application/octet-stream", body, head),
            None => reply(status, Some(location), "text/plain", Vec::new(), head),
        }
    }
}

/// The plain listener's answer; HEAD gets the headers only (with the GET body's length).
fn reply(
    status: u16,
    location: Option<String>,
    content_type: &str,
    body: Vec<u8>,
    head: bool,
) -> Response<Vec<u8>> {
    let mut builder = Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-store");
    if let Some(location) = location {
        builder = builder.header(http::header::LOCATION, location);
    }
    let body = if head { Vec::new() } else { body };
    builder.body(body).unwrap_or_else(|e| {
        tracing::warn!("cannot build the plain-HTTP answer: {e}");
        let mut fallback = Response::new(Vec::new());
        *fallback.status_mut() = http::StatusCode::BAD_REQUEST;
        fallback
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn req(method: &str, target: &str, host: Option<&str>) -> RequestHeader {
        let mut req = RequestHeader::build(method, target.as_bytes(), None).unwrap();
        if let Some(host) = host {
            req.insert_header("Host", host).unwrap();
        }
        req
    }

    /// The redirect for `r` as the listener computes it.
    fn redirect(
        r: &RequestHeader,
        port: u16,
        trusted: bool,
        external: Option<&str>,
        local: Option<SocketAddr>,
    ) -> String {
        let external = external.map(|a| crate::config::ExternalUrl {
            authority: a.into(),
        });
        location(
            r,
            &PublicOrigin::of(r, trusted, external.as_ref(), local),
            port,
        )
    }

    #[test]
    fn keeps_path_and_query_and_uses_https_port() {
        let r = req(
            "GET",
            "/v2/a/blobs/uploads/x?_state=q&digest=sha256:1",
            Some("registry.test:8080"),
        );
        assert_eq!(
            redirect(&r, 8443, false, None, None),
            "https://registry.test:8443/v2/a/blobs/uploads/x?_state=q&digest=sha256:1"
        );
    }

    #[test]
    fn default_port_is_omitted() {
        assert_eq!(
            redirect(
                &req("GET", "/v2/", Some("registry.test")),
                443,
                false,
                None,
                None
            ),
            "https://registry.test/v2/"
        );
    }

    #[test]
    fn external_url_wins() {
        let r = req("PUT", "/v2/x", Some("other:8080"));
        assert_eq!(
            redirect(&r, 8443, false, Some("registry.example.com"), None),
            "https://registry.example.com/v2/x"
        );
    }

    #[test]
    fn trusted_forwarded_host_is_the_public_origin() {
        let mut r = req("GET", "/v2/", Some("edge-1.internal:8080"));
        r.insert_header("X-Forwarded-Host", "registry.example.com")
            .unwrap();
        r.insert_header("X-Forwarded-Proto", "http").unwrap();
        assert_eq!(
            redirect(&r, 8443, true, None, None),
            "https://registry.example.com/v2/"
        );
        assert_eq!(
            redirect(&r, 8443, false, None, None),
            "https://edge-1.internal:8443/v2/"
        );
        // A forwarded plain-HTTP port is not where https listens.
        r.insert_header("X-Forwarded-Host", "registry.example.com:8080")
            .unwrap();
        assert_eq!(
            redirect(&r, 8443, true, None, None),
            "https://registry.example.com/v2/"
        );
    }

    #[test]
    fn ipv6_and_missing_host() {
        assert_eq!(
            redirect(
                &req("GET", "/", Some("[::1]:8080")),
                8443,
                false,
                None,
                None
            ),
            "https://[::1]:8443/"
        );
        let local = "127.0.0.1:8080".parse().ok();
        assert_eq!(
            redirect(&req("GET", "/v2/", None), 8443, false, None, local),
            "https://127.0.0.1:8443/v2/"
        );
        assert_eq!(
            redirect(
                &req("GET", "/v2/", Some("evil@x")),
                8443,
                false,
                None,
                local
            ),
            "https://127.0.0.1:8443/v2/"
        );
    }
}
