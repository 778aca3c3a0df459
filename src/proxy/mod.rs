//! The HTTPS proxy: Pingora's `ProxyHttp` phases, each delegating to one module.
//!
//! - `request_filter`: parse the route, resolve the client, refuse oversized bodies.
//! - `upstream_peer`: pick a registry node (`upstream::NodePool`).
//! - `upstream_request_filter`: forwarding headers (`headers`).
//! - `request_body_filter`: count streamed bytes; never buffers a body.
//! - `fail_to_proxy`: answer in the registry's JSON error format (`error`).
//! - `logging`: one access-log line per request.

pub mod answer;
pub mod ctx;
pub mod headers;
pub mod origin;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType};

use std::time::SystemTime;

use crate::auth::access;
use crate::auth::check::Verdict;
use crate::auth::endpoint::{TokenReply, TokenRequest};
use crate::auth::scope::is_valid_repository;
use crate::auth::Auth;
use crate::config::{ExternalUrl, Limits};
use crate::drain::Drain;
use crate::error::{json_response_header, RegistryError};
use crate::listen::guard::{self, MAX_HEADER_BYTES, MAX_HEADER_LINES};
use crate::metrics::metrics;
use crate::ratelimit::Admission;
use crate::registry::Endpoint;
use crate::settings::SharedSettings;
use crate::tls::CertResolver;
use crate::upstream::{NodePool, UploadSessions};
use answer::{copy_request_id, REQUEST_ID};
pub use ctx::RequestCtx;
use headers::ClientAddress;

/// Upstream connections stay pooled this long when idle.
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest token-request form body read (OAuth2 POST).
const MAX_TOKEN_FORM: usize = 64 * 1024;

/// The edge's proxy service for the HTTPS listeners.
pub struct EdgeProxy {
    pool: Arc<NodePool>,
    /// Upload sessions pinned to the node that started them (survive node-list changes).
    sessions: UploadSessions,
    /// Swapped by a reload; each request keeps the snapshot it started with.
    settings: SharedSettings,
    /// The certificates in force: the names `server.strict_host` accepts.
    certificates: Arc<CertResolver>,
    /// Counts requests in flight for a graceful stop.
    drain: Arc<Drain>,
}

impl EdgeProxy {
    pub fn new(
        pool: Arc<NodePool>,
        settings: SharedSettings,
        certificates: Arc<CertResolver>,
        drain: Arc<Drain>,
    ) -> Self {
        EdgeProxy {
            pool,
            sessions: UploadSessions::default(),
            settings,
            certificates,
            drain,
        }
    }

    /// Tells the connection a request started and applies the client timeouts to it.
    fn watch_connection(session: &mut Session, ctx: &mut RequestCtx) {
        let timeouts = ctx.settings.client_timeouts;
        let http2 = session.is_http2();
        let client = session.client_addr().and_then(|a| a.as_inet()).copied();
        let local = session.server_addr().and_then(|a| a.as_inet()).copied();
        if let (Some(client), Some(local)) = (client, local) {
            ctx.connection = guard::watch_for(client, local);
        }
        if let Some(watch) = &ctx.connection {
            watch.request_started(http2);
            if http2 && !session.is_body_empty() {
                ctx.body_progress = Some(watch.body_started());
            }
        }
        // HTTP/1: Pingora's per-read timeout covers a stalled body; keepalive the idle wait.
        session.set_read_timeout(Some(timeouts.body));
        session.set_write_timeout(Some(timeouts.body));
        if !http2 {
            session.set_keepalive(Some(timeouts.idle.as_secs().max(1)));
        }
    }

    /// `server.strict_host`: the request must name a host the edge has a certificate for
    /// (or `external_url`'s host).
    fn check_host(
        &self,
        session: &Session,
        external: Option<&ExternalUrl>,
    ) -> Option<RegistryError> {
        let Some(host) = headers::request_hostname(session.req_header()) else {
            return Some(RegistryError::BadRequest);
        };
        let external_host = external
            .and_then(|e| e.authority.parse::<http::uri::Authority>().ok())
            .map(|a| a.host().to_ascii_lowercase());
        let known = self.certificates.serves(&host) || external_host.as_deref() == Some(&host);
        (!known).then_some(RegistryError::MisdirectedRequest)
    }

    /// Serves the token endpoint.
    async fn serve_token(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        auth: &Auth,
    ) -> Result<()> {
        let req = session.req_header();
        let post = req.method == http::Method::POST;
        if !post && req.method != http::Method::GET {
            let error = RegistryError::BadTokenRequest("use GET or POST".into());
            return answer::error(session, &error, &[]).await;
        }
        let mut raw = req.uri.query().unwrap_or("").as_bytes().to_vec();
        if post {
            raw.clear();
            while let Some(chunk) = session.read_request_body().await? {
                if raw.len() + chunk.len() > MAX_TOKEN_FORM {
                    let error = RegistryError::BadTokenRequest("form too large".into());
                    return answer::error(session, &error, &[]).await;
                }
                raw.extend_from_slice(&chunk);
            }
        }
        let params = url::form_urlencoded::parse(&raw).into_owned().collect();
        let authorization = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION);
        let authorization = authorization
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let request = TokenRequest {
            post,
            params,
            authorization: authorization.as_deref(),
            client_ip: ctx
                .client
                .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |c| c.client),
        };
        match auth.handle_token_request(&request, SystemTime::now()).await {
            TokenReply::Issued { body, account } => {
                metrics().tokens_issued.inc();
                ctx.subject = Some(account);
                let header = json_response_header(200, body.len());
                answer::respond(session, header, body).await
            }
            TokenReply::Refused { error, retry_after } => {
                let mut extra = Vec::new();
                if error == RegistryError::BadCredentials {
                    metrics().failed_logins.inc();
                    extra.push((
                        "WWW-Authenticate",
                        format!("Basic realm=\"{}\"", ctx.origin.url(&auth.realm_path)),
                    ));
                }
                if let Some(seconds) = retry_after {
                    extra.push(("Retry-After", seconds.to_string()));
                }
                ctx.own_error = Some(error.clone());
                answer::error(session, &error, &extra).await
            }
        }
    }

    /// Checks the bearer token; `Ok(true)` when the edge answered (refused) the request.
    async fn enforce(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        auth: &Auth,
    ) -> Result<bool> {
        let req = session.req_header();
        let needed = access::needed(&req.method, &ctx.path, req.uri.query(), &ctx.route);
        let authorization = req
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match auth.check(&needed, authorization) {
            Verdict::Unchecked => Ok(false),
            Verdict::Allowed { subject } => {
                ctx.subject = Some(subject);
                Ok(false)
            }
            Verdict::Denied {
                error,
                challenge_error,
                scopes,
                subject,
            } => {
                ctx.subject = subject;
                let challenge =
                    auth.challenge(&ctx.origin.url(&auth.realm_path), &scopes, challenge_error);
                ctx.own_error = Some(error.clone());
                answer::error(session, &error, &[("WWW-Authenticate", challenge)]).await?;
                Ok(true)
            }
        }
    }

    /// Counts push starts against `rate_limits.push`; `Ok(true)` when refused with 429.
    async fn limit_pushes(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let Some(limiter) = ctx.settings.push_limiter.clone() else {
            return Ok(false);
        };
        if !is_push_start(&session.req_header().method, &ctx.route) {
            return Ok(false);
        }
        let client_ip = ctx.client.map(|c| c.client.to_string()).unwrap_or_default();
        match limiter.admit(ctx.subject.as_deref(), &client_ip).await {
            Admission::Exempt => Ok(false),
            Admission::Unavailable => {
                let error = RegistryError::LimitsUnavailable;
                answer::error(session, &error, &[]).await?;
                ctx.own_error = Some(error);
                Ok(true)
            }
            Admission::Admitted { remaining } => {
                ctx.push_budget = Some((limiter.limit_header(), remaining));
                Ok(false)
            }
            Admission::Limited { retry_after } => {
                let error = RegistryError::TooManyPushes { retry_after };
                let headers = [
                    ("Retry-After", retry_after.to_string()),
                    ("RateLimit-Limit", limiter.limit_header()),
                    ("RateLimit-Remaining", "0;w=60".to_string()),
                ];
                answer::error(session, &error, &headers).await?;
                ctx.own_error = Some(error);
                Ok(true)
            }
        }
    }

    /// What to tell the client about a failure Pingora reports.
    fn classify(e: &Error, limits: Limits) -> Option<RegistryError> {
        use ErrorType::*;
        let error = match (e.etype(), e.esource()) {
            (HTTPStatus(413), _) => RegistryError::BodyTooLarge {
                limit: limits.max_body_size.unwrap_or(0),
            },
            (HTTPStatus(status), _) => RegistryError::from_status(*status),
            (
                ConnectTimedout | ConnectRefused | ConnectNoRoute | ConnectError
                | TLSHandshakeFailure,
                _,
            ) => RegistryError::UpstreamUnreachable,
            (ReadTimedout | WriteTimedout, ErrorSource::Upstream) => RegistryError::UpstreamTimeout,
            (_, ErrorSource::Upstream) => RegistryError::UpstreamFailed,
            // A stalled body (`server.body_timeout`): tell the client, if it still listens.
            (ReadTimedout, ErrorSource::Downstream) => RegistryError::RequestTimeout,
            // The client went away: nobody to answer.
            (ReadError | WriteError | ConnectionClosed, ErrorSource::Downstream) => return None,
            (_, ErrorSource::Downstream) => RegistryError::BadRequest,
            _ => RegistryError::Internal,
        };
        Some(error)
    }
}

/// Over the header limits HTTP/1 connections enforce as they read (`listen::guard`).
/// HTTP/2 blocks arrive whole, so they are measured here (as HPACK does: name, value, 32).
fn header_block_too_large(session: &Session) -> bool {
    let req = session.req_header();
    if req.headers.len() > MAX_HEADER_LINES {
        return true;
    }
    session.is_http2()
        && req
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 32)
            .sum::<usize>()
            + req.uri.to_string().len()
            > MAX_HEADER_BYTES
}

/// RFC 9112 §3.2: an HTTP/1.1 request without `Host` is answered 400. An HTTP/1.0 one
/// (where `Host` is optional) gets `external_url`'s authority or the listener's address, so
/// a registry node never sees a request without `Host`. h2 requests carry `:authority`.
fn ensure_host(session: &mut Session, external: Option<&ExternalUrl>) -> Result<(), RegistryError> {
    let req = session.req_header();
    if session.is_http2() || req.headers.contains_key(http::header::HOST) {
        return Ok(());
    }
    if req.version != http::Version::HTTP_10 {
        return Err(RegistryError::MissingHost);
    }
    let authority = match external {
        Some(external) => external.authority.clone(),
        None => match session.server_addr().and_then(|a| a.as_inet()) {
            Some(local) => local.to_string(),
            None => return Err(RegistryError::MissingHost),
        },
    };
    session
        .req_header_mut()
        .insert_header(http::header::HOST, authority)
        .map_err(|_| RegistryError::MissingHost)
}

/// The request's `X-Request-Id`: the client's when it is a short plain token, else a new
/// random one. Set on the request, so the node sees it too.
fn assign_request_id(session: &mut Session) -> Result<String> {
    let given = session
        .req_header()
        .headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=128).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_string);
    let id = match given {
        Some(id) => id,
        None => {
            let id = crate::auth::token::random_id();
            session
                .req_header_mut()
                .insert_header(REQUEST_ID, id.as_str())?;
            id
        }
    };
    Ok(id)
}

/// Push starts: what `rate_limits.push` counts (never PATCH/PUT chunks of an upload).
fn is_push_start(method: &http::Method, route: &crate::registry::Route) -> bool {
    use crate::registry::Endpoint;
    matches!(
        (method, &route.endpoint),
        (&http::Method::POST, Endpoint::UploadStart)
            | (&http::Method::PUT, Endpoint::Manifest { .. })
    )
}

/// The metrics' route class: `auth` (the token realm), `push` (writes to the registry API),
/// `pull` (reads of a repository), `other`.
fn route_class(
    path: &str,
    route: &crate::registry::Route,
    method: &http::Method,
    auth: Option<&Auth>,
) -> &'static str {
    if auth.is_some_and(|a| a.realm_path == path) {
        "auth"
    } else if is_push_class(method, path) {
        "push"
    } else if route.repository.is_some() {
        "pull"
    } else {
        "other"
    }
}

/// Requests that change the registry: refused in read-only mode.
fn is_push_class(method: &http::Method, path: &str) -> bool {
    use http::Method;
    crate::registry::is_api_path(path)
        && matches!(
            *method,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        )
}

fn content_length(session: &Session) -> Option<u64> {
    session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[async_trait]
impl ProxyHttp for EdgeProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        let mut ctx = RequestCtx::new(self.settings.load_full());
        ctx.in_flight = Some(self.drain.request());
        ctx
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        Self::watch_connection(session, ctx);
        if self.drain.is_draining() {
            // Stopping: this answer is the connection's last.
            session.set_keepalive(None);
        }
        // HTTP/1 header blocks are limited as they arrive (`listen::guard`); this covers h2.
        if header_block_too_large(session) {
            let error = RegistryError::HeadersTooLarge {
                max_headers: MAX_HEADER_LINES,
                max_bytes: MAX_HEADER_BYTES,
            };
            answer::error(session, &error, &[]).await?;
            ctx.own_error = Some(error);
            return Ok(true);
        }
        // After the header limits: they count what the client sent.
        ctx.request_id = assign_request_id(session)?;
        if let Err(error) = ensure_host(session, ctx.settings.external.as_ref()) {
            answer::error(session, &error, &[]).await?;
            ctx.own_error = Some(error);
            return Ok(true);
        }
        if ctx.settings.strict_host {
            if let Some(error) = self.check_host(session, ctx.settings.external.as_ref()) {
                answer::error(session, &error, &[]).await?;
                ctx.own_error = Some(error);
                return Ok(true);
            }
        }
        let req = session.req_header();
        let raw_path = req.uri.path();
        let under_v2 = crate::registry::is_api_path(raw_path);
        match crate::registry::decoded_path(raw_path) {
            Some(path) => ctx.path = path,
            // Outside the registry API the edge routes nothing; pass such paths on as sent.
            None if !under_v2 => ctx.path = raw_path.to_string(),
            None => {
                let error = RegistryError::NameInvalid;
                answer::error(session, &error, &[]).await?;
                ctx.own_error = Some(error);
                return Ok(true);
            }
        }
        let req = session.req_header();
        ctx.route = crate::registry::Route::parse(&ctx.path);
        ctx.class = route_class(
            &ctx.path,
            &ctx.route,
            &req.method,
            ctx.settings.auth.as_deref(),
        );
        ctx.client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|addr| ClientAddress::resolve(addr.ip(), req, &ctx.settings.forwarded));
        ctx.origin = origin::PublicOrigin::of(
            req,
            ctx.client.is_some_and(|c| c.peer_trusted),
            ctx.settings.external.as_ref(),
            session.server_addr().and_then(|a| a.as_inet()).copied(),
        );
        if ctx
            .route
            .repository
            .as_deref()
            .is_some_and(|name| !is_valid_repository(name))
        {
            let error = RegistryError::NameInvalid;
            answer::error(session, &error, &[]).await?;
            ctx.own_error = Some(error);
            return Ok(true);
        }
        if ctx.settings.read_only && is_push_class(&session.req_header().method, &ctx.path) {
            let error = RegistryError::ReadOnly;
            answer::error(session, &error, &[]).await?;
            ctx.own_error = Some(error);
            return Ok(true);
        }
        if let Some(auth) = ctx.settings.auth.clone() {
            if session.req_header().uri.path() == auth.realm_path {
                self.serve_token(session, ctx, &auth).await?;
                return Ok(true);
            }
            if self.enforce(session, ctx, &auth).await? {
                return Ok(true);
            }
        }
        if self.limit_pushes(session, ctx).await? {
            return Ok(true);
        }
        if let Some(limit) = ctx.settings.limits.max_body_size {
            if content_length(session).is_some_and(|len| len > limit) {
                let error = RegistryError::BodyTooLarge { limit };
                answer::error(session, &error, &[]).await?;
                ctx.own_error = Some(error);
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let pinned = match &ctx.route.endpoint {
            Endpoint::UploadSession { uuid } => self.sessions.node_for(uuid),
            _ => None,
        };
        let pinned = pinned
            .filter(|node| !ctx.failed_nodes.contains(node) && self.pool.can_use_pinned(*node));
        let node = match pinned {
            Some(node) => node,
            None => self
                .pool
                .select(ctx.route.repository.as_deref(), &ctx.failed_nodes)
                .ok_or_else(|| {
                    Error::explain(ErrorType::HTTPStatus(503), "no healthy registry node")
                })?,
        };
        ctx.node = Some(node);
        ctx.upstream_started = Some(std::time::Instant::now());
        let mut peer = HttpPeer::new(node, false, String::new());
        peer.options.connection_timeout = Some(ctx.settings.connect_timeout);
        peer.options.read_timeout = Some(ctx.settings.read_timeout);
        peer.options.write_timeout = Some(ctx.settings.read_timeout);
        peer.options.idle_timeout = Some(UPSTREAM_IDLE_TIMEOUT);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // A refused connection sent nothing: try the next node, unless part of the body
        // is already gone and cannot be replayed.
        if let Some(node) = ctx.node {
            ctx.failed_nodes.push(node);
        }
        if !session.retry_buffer_truncated() {
            e.set_retry(true);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(client) = &ctx.client {
            headers::rewrite_for_upstream(upstream_request, client, &ctx.origin);
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Pingora 0.9.1 (#935): an empty final h2 DATA frame would make the upstream
        // see the chunk terminator twice and poison the pooled connection.
        if end_of_stream && body.as_ref().is_some_and(|b| b.is_empty()) {
            *body = None;
        }
        if let Some(progress) = &ctx.body_progress {
            progress.touch();
        }
        if end_of_stream {
            ctx.body_progress = None;
        }
        if let Some(chunk) = body {
            ctx.body_bytes += chunk.len() as u64;
            if let Some(limit) = ctx.settings.limits.max_body_size {
                if ctx.body_bytes > limit {
                    ctx.own_error = Some(RegistryError::BodyTooLarge { limit });
                    return Err(Error::explain(
                        ErrorType::HTTPStatus(413),
                        "request body over max_body_size",
                    ));
                }
            }
        }
        if let (Some(throttle), Some(chunk)) = (ctx.settings.upload_throttle.clone(), body.as_ref())
        {
            // Holding the stream here stops further reads: the client is slowed by flow control.
            let client_ip = ctx.client.map(|c| c.client.to_string()).unwrap_or_default();
            let key = throttle
                .config()
                .key
                .key_for(ctx.subject.as_deref(), &client_ip);
            ctx.throttled += throttle
                .throttle(&key, chunk.len(), &mut ctx.upload_credit)
                .await;
            if let Some(progress) = &ctx.body_progress {
                progress.touch();
            }
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let error = ctx
            .own_error
            .clone()
            .or_else(|| Self::classify(e, ctx.settings.limits));
        let Some(error) = error else {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        let status = error.status();
        answer::failure(session, &error).await;
        ctx.own_error = Some(error);
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = upstream_response.status.as_u16();
        if let Some(started) = ctx.upstream_started {
            metrics()
                .upstream_seconds
                .with_label_values(&[ctx.class])
                .observe(started.elapsed().as_secs_f64());
        }
        match (&ctx.route.endpoint, ctx.node) {
            (Endpoint::UploadStart, Some(node)) if status == 202 => {
                let uuid = upstream_response
                    .headers
                    .get("docker-upload-uuid")
                    .and_then(|v| v.to_str().ok());
                if let Some(uuid) = uuid {
                    self.sessions.remember(uuid, node);
                }
            }
            // 201: the upload was committed; 204: it was cancelled.
            (Endpoint::UploadSession { uuid }, _) if status == 201 || status == 204 => {
                self.sessions.forget(uuid)
            }
            _ => {}
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        copy_request_id(session, upstream_response)?;
        if answer::is_http10(session) {
            // RFC 9112 §6.1: no chunked coding towards an HTTP/1.0 client. Without
            // Transfer-Encoding (and Content-Length) Pingora delimits the body by closing.
            upstream_response.remove_header(&http::header::TRANSFER_ENCODING);
            session.set_keepalive(None);
        }
        if let Some((limit, remaining)) = &ctx.push_budget {
            upstream_response.insert_header("RateLimit-Limit", limit.as_str())?;
            upstream_response.insert_header("RateLimit-Remaining", format!("{remaining};w=60"))?;
        }
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        ctx.body_progress = None;
        if let Some(watch) = &ctx.connection {
            if !session.is_http2() {
                watch.request_finished();
            }
        }
        let req = session.req_header();
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let elapsed = ctx.started.elapsed();
        let (bytes_in, bytes_out) = (session.body_bytes_read(), session.body_bytes_sent());
        let m = metrics();
        m.requests
            .with_label_values(&[ctx.class, &status.to_string()])
            .inc();
        m.request_seconds
            .with_label_values(&[ctx.class])
            .observe(elapsed.as_secs_f64());
        m.bytes_received.inc_by(bytes_in as u64);
        m.bytes_sent.inc_by(bytes_out as u64);
        let rate_limit = match (&ctx.own_error, &ctx.push_budget) {
            (Some(RegistryError::TooManyPushes { .. }), _) => "limited:push",
            (Some(RegistryError::TooManyFailedLogins), _) => "limited:failed_logins",
            (_, Some(_)) => "admitted",
            _ => "-",
        };
        if let Some(limit) = rate_limit.strip_prefix("limited:") {
            m.rate_limited.with_label_values(&[limit]).inc();
        }
        // Only the path: query strings can carry upload state and credentials.
        tracing::info!(
            target: "registry_edge::access",
            request_id = %ctx.request_id,
            client = %ctx.client.map(|c| c.client.to_string()).unwrap_or_else(|| "-".into()),
            account = %ctx.subject.as_deref().unwrap_or("-"),
            method = %req.method,
            path = %req.uri.path(),
            status,
            bytes_in,
            bytes_out,
            duration_ms = elapsed.as_millis() as u64,
            upstream = %ctx.node.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
            rate_limit,
            throttled_ms = ctx.throttled.as_millis() as u64,
            error = %e.map(|e| e.etype().as_str()).unwrap_or("-"),
        );
    }
}
