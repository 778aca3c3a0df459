//! The admission steps' checks on the request itself: header limits, request id, `Host`,
//! the route, the repository name, the token and the declared body size (see `admission`).
//! The checks return what to refuse with, or `None` to let the request on; `route` and
//! `token` also fill in the request state, `assign_request_id` and `ensure_host` edit the
//! request.

use pingora::prelude::*;
use pingora::proxy::Session;

use super::ctx::RequestCtx;
use crate::auth::access;
use crate::auth::check::{self, Verdict};
use crate::auth::Auth;
use crate::config::ExternalUrl;
use crate::error::RegistryError;
use crate::hooks::Refusal;
use crate::registry::is_valid_repository;
use crate::registry::{self, Route};
use crate::request::client::ClientAddress;
use crate::request::origin::PublicOrigin;
use crate::request::REQUEST_ID;
use crate::request::{MAX_HEADER_BYTES, MAX_HEADER_LINES};
use crate::settings::Settings;
use crate::tls::CertResolver;

/// Over the header limits HTTP/1 connections enforce as they read (`listen::header_limit`).
/// HTTP/2 blocks arrive whole, so they are measured here (as HPACK does: name, value, 32).
/// An HTTP/1 block is measured here too: a pipelined request's head can arrive in the same
/// read as the previous request's body, where the connection's scan does not look.
pub(crate) fn header_limits(session: &Session) -> Option<RegistryError> {
    let req = session.req_header();
    let bytes = match session.as_http1() {
        Some(h1) => h1.get_headers_raw_bytes().len(),
        None => {
            req.headers
                .iter()
                .map(|(name, value)| name.as_str().len() + value.len() + 32)
                .sum::<usize>()
                + req.uri.to_string().len()
        }
    };
    let too_large = req.headers.len() > MAX_HEADER_LINES || bytes > MAX_HEADER_BYTES;
    too_large.then_some(RegistryError::HeadersTooLarge {
        max_headers: MAX_HEADER_LINES,
        max_bytes: MAX_HEADER_BYTES,
    })
}

/// The request's `X-Request-Id`: the client's when it is a short plain token, else a new
/// random one. Set on the request, so the node sees it too.
pub(crate) fn assign_request_id(session: &mut Session) -> Result<String> {
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
            let id = crate::request::random_id();
            session
                .req_header_mut()
                .insert_header(REQUEST_ID, id.as_str())?;
            id
        }
    };
    Ok(id)
}

/// The target, `Host` and framing headers the node can take unambiguously
/// ([`crate::request::framing`]). RFC 9112 §3.2: an HTTP/1.1 request without `Host` is
/// answered 400. An HTTP/1.0 one (where `Host` is optional) gets `external_url`'s authority
/// or the listener's address, so a registry node never sees a request without `Host`. h2
/// requests carry `:authority`.
pub(crate) fn ensure_host(
    session: &mut Session,
    external: Option<&ExternalUrl>,
) -> Result<(), RegistryError> {
    let http2 = session.is_http2();
    if let Err(refused) = crate::request::framing::check(session.req_header_mut(), http2) {
        // Where the request's own framing is in doubt, so is the next one's: close.
        session.set_keepalive(None);
        return Err(refused);
    }
    // `framing` refused an HTTP/1.1 request without Host: what is left is HTTP/1.0.
    if http2
        || session
            .req_header()
            .headers
            .contains_key(http::header::HOST)
    {
        return Ok(());
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

/// `server.strict_host`: the request must name a host the edge has a certificate for
/// (or `external_url`'s host).
pub(crate) fn strict_host(
    session: &Session,
    certificates: &CertResolver,
    external: Option<&ExternalUrl>,
) -> Option<RegistryError> {
    let Some(host) = crate::request::request_hostname(session.req_header()) else {
        return Some(RegistryError::BadRequest);
    };
    let external_host = external
        .and_then(|e| e.authority.parse::<http::uri::Authority>().ok())
        .map(|a| a.host().to_ascii_lowercase());
    let known = certificates.serves(&host) || external_host.as_deref() == Some(&host);
    (!known).then_some(RegistryError::MisdirectedRequest)
}

/// Decodes and classifies the path, and resolves the client address and the public origin.
/// Refuses an API path whose decoding would hide a separator (or is not UTF-8).
pub(crate) fn route(session: &Session, ctx: &mut RequestCtx) -> Option<RegistryError> {
    let req = session.req_header();
    let raw_path = req.uri.path();
    match registry::decoded_path(raw_path) {
        Some(path) => ctx.request.path = path,
        // Outside the registry API the edge routes nothing; pass such paths on as sent.
        None if !registry::is_api_path(raw_path) => ctx.request.path = raw_path.to_string(),
        None => return Some(RegistryError::NameInvalid),
    }
    ctx.request.route = Route::parse(&req.method, &ctx.request.path);
    if let Some(error) = super::routing::take(req, ctx) {
        return Some(error);
    }
    ctx.request.class = route_class(
        &ctx.request.path,
        &ctx.request.route,
        ctx.request.settings.auth.as_deref(),
    );
    ctx.request.client = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|addr| ClientAddress::resolve(addr.ip(), req, &ctx.request.settings.forwarded));
    ctx.request.origin = PublicOrigin::of(
        req,
        ctx.request.client.is_some_and(|c| c.peer_trusted),
        ctx.request.settings.external.as_ref(),
        session.server_addr().and_then(|a| a.as_inet()).copied(),
    );
    None
}

/// The metrics' route class: `auth` (the token realm), `push` (changes to the registry),
/// `pull` (other requests for a repository), `other`.
fn route_class(path: &str, route: &Route, auth: Option<&Auth>) -> &'static str {
    if auth.is_some_and(|a| a.realm_path == path) {
        "auth"
    } else if route.changes_registry() {
        "push"
    } else if route.repository.is_some() {
        "pull"
    } else {
        "other"
    }
}

/// A repository name must follow distribution's grammar (`NAME_INVALID` otherwise).
pub(crate) fn repository_name(route: &Route) -> Option<RegistryError> {
    route
        .repository
        .as_deref()
        .is_some_and(|name| !is_valid_repository(name))
        .then_some(RegistryError::NameInvalid)
}

/// The bearer token must grant what the request needs; a refusal carries the challenge,
/// naming the edge's realm, or in verify-only mode the (first) trusted issuer's.
pub(crate) fn token(
    session: &Session,
    ctx: &mut RequestCtx,
    settings: &Settings,
) -> Option<Refusal> {
    let req = session.req_header();
    let needed = access::needed(&ctx.request.route, req.uri.query());
    let authorization = req
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let own = settings.auth.as_deref();
    let tokens = own.map(|auth| &auth.tokens);
    let client = ctx.request.client.as_ref().map(|c| c.client);
    match check::check(tokens, &settings.trusted, &needed, (authorization, client)) {
        Verdict::Unchecked => None,
        Verdict::Allowed { subject } => {
            ctx.request.subject = Some(subject);
            None
        }
        Verdict::Denied {
            error,
            challenge_error,
            scopes,
            subject,
        } => {
            ctx.request.subject = subject;
            let mut scopes = scopes;
            let (realm, service) = match (own, settings.trusted.first()) {
                (Some(auth), _) => (
                    super::routing::challenge_realm(
                        req,
                        ctx,
                        ctx.request.origin.url(&auth.realm_path),
                        &mut scopes,
                    ),
                    auth.tokens.service(),
                ),
                (None, Some(issuer)) => (issuer.realm().to_string(), issuer.service()),
                // Admission runs this step only with a realm or a trusted issuer.
                (None, None) => return Some(error.into()),
            };
            let challenge = check::challenge(&realm, service, &scopes, challenge_error);
            Some(Refusal {
                error,
                headers: vec![("WWW-Authenticate", challenge)],
            })
        }
    }
}

/// `limits.max_body_size` against a declared `Content-Length` (streamed bodies are counted
/// as they pass, in `body`).
pub(crate) fn body_size(session: &Session, limit: Option<u64>) -> Option<RegistryError> {
    let limit = limit?;
    let declared = crate::request::declared_length(session.req_header())?;
    (declared > limit).then_some(RegistryError::BodyTooLarge { limit })
}
