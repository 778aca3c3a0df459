//! A request a route (`routes:`) takes: the match at admission, a read-only route's
//! refusal, the pool's names and token on the way out, the edge's names on the way back
//! (`crate::routes::rewrite` has the rules).

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::Session;

use super::ctx::RequestCtx;
use crate::error::RegistryError;
use crate::registry::Endpoint;
use crate::routes::rewrite::{self, TagListBody};

/// Gives the request its route, if one takes it: the repository becomes the name at the
/// edge, and the pool's path is kept for the way out. `NAME_INVALID` for a routed name
/// written percent-encoded (the pool must see the name the edge checked).
pub(crate) fn take(req: &RequestHeader, ctx: &mut RequestCtx) -> Option<RegistryError> {
    let routes = &ctx.request.settings.routes;
    if routes.is_empty() {
        return None;
    }
    let client_repository = ctx.request.route.repository.as_deref()?;
    let (host, ns) = host_and_ns(req);
    let mut routed = routes.route_for(host.as_deref(), ns.as_deref(), client_repository)?;
    let Some(pool_path) = rewrite::pool_path(&routed, client_repository, req.uri.path()) else {
        return Some(RegistryError::NameInvalid);
    };
    routed.pool_path = pool_path;
    ctx.request.route.repository = Some(routed.edge_repository.clone());
    ctx.request.routed = Some(routed);
    None
}

/// The request's host (lowercase, without port) and containerd's `ns` parameter.
fn host_and_ns(req: &RequestHeader) -> (Option<String>, Option<String>) {
    let host = crate::request::request_hostname(req);
    let ns = req.uri.query().and_then(|query| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == "ns")
            .map(|(_, value)| value.into_owned())
    });
    (host, ns)
}

/// The realm a challenge names for a request a route took by `Host` or `ns`, or (`/v2/`,
/// whose challenge docker keeps for the whole pull) that is asked on a host or with an `ns`
/// a route claims: the client names repositories as the pool does, so the challenge's
/// scopes do too, and the realm's `route` parameter tells the token endpoint to name them
/// at the edge (`token_endpoint::route_prefix`). docker, containerd and containers/image
/// keep a realm's query when they add theirs.
pub(crate) fn challenge_realm(
    req: &RequestHeader,
    ctx: &RequestCtx,
    realm: String,
    scopes: &mut [crate::registry::Scope],
) -> String {
    let name = match &ctx.request.routed {
        Some(routed) if routed.by_prefix => return realm,
        Some(routed) => {
            let prefix = &routed.route.settings.edge_prefix;
            for scope in scopes.iter_mut().filter(|s| s.kind == "repository") {
                if let Some(name) = scope.name.strip_prefix(prefix.as_str()) {
                    scope.name = name.to_string();
                }
            }
            &routed.route.settings.name
        }
        None if ctx.request.route.repository.is_none() => {
            let (host, ns) = host_and_ns(req);
            let routes = &ctx.request.settings.routes;
            match routes.claimed_by(host.as_deref(), ns.as_deref()) {
                Some(route) => &route.settings.name,
                None => return realm,
            }
        }
        None => return realm,
    };
    format!("{realm}?route={name}")
}

/// A read-only route refuses anything but a pull (after the token check: a client without
/// push rights is refused by the ACL first, as everywhere).
pub(crate) fn read_only(ctx: &RequestCtx) -> Option<RegistryError> {
    let routed = ctx.request.routed.as_ref()?;
    let pull = ctx.request.route.action == crate::registry::Action::Read;
    (routed.route.settings.read_only && !pull).then(|| RegistryError::RouteReadOnly {
        route: routed.route.settings.name.clone(),
    })
}

/// The request as the pool knows it: its path, and, where the edge checked the client's
/// token for the edge's names, a token the edge signs for the pool's names instead.
pub(crate) fn to_pool(upstream_request: &mut RequestHeader, ctx: &RequestCtx) -> Result<()> {
    let Some(routed) = &ctx.request.routed else {
        return Ok(());
    };
    let target = match rewrite::pool_query(upstream_request.uri.query()) {
        Some(query) => format!("{}?{query}", routed.pool_path),
        None => routed.pool_path.clone(),
    };
    let uri = target
        .parse::<http::Uri>()
        .map_err(|e| Error::because(ErrorType::InternalError, "route path", e))?;
    upstream_request.set_uri(uri);
    let actions = ctx.request.route.action.token_actions();
    if let Some(authorization) = ctx.request.pool_authorization(actions) {
        upstream_request.insert_header(http::header::AUTHORIZATION, authorization)?;
    }
    Ok(())
}

/// A route's pool that answers 401 to the token the edge signed for it does not trust the
/// edge: the client, whose token the edge accepted, gets a 502 naming the fix (the pool's
/// own challenge would send it to a realm that cannot help), and the log says it once per
/// request. `None` for any other answer.
pub(crate) fn pool_refused(response: &ResponseHeader, ctx: &RequestCtx) -> Option<RegistryError> {
    let routed = ctx.request.routed.as_ref()?;
    if response.status != 401 || ctx.request.settings.auth.is_none() {
        return None;
    }
    let route = routed.route.settings.name.clone();
    tracing::warn!(
        request_id = %ctx.request.request_id,
        "route {route}: the pool refused the edge's token (401); configure its auth with \
         `registry-edge registry-config --route {route}`"
    );
    Some(RegistryError::PoolRefusedToken { route })
}

/// The pool's answer with the edge's names: `Location` and `Link` headers, and a tag list
/// whose body is held to be rewritten (its length changes: sent chunked on HTTP/1.1).
pub(crate) fn from_pool(
    response: &mut ResponseHeader,
    request: &RequestHeader,
    ctx: &mut RequestCtx,
) -> Result<()> {
    // A client that came by `Host` or `ns` uses the pool's names: nothing to change.
    let Some(routed) = ctx.request.routed.as_ref().filter(|r| r.by_prefix) else {
        return Ok(());
    };
    for name in [http::header::LOCATION, http::header::LINK] {
        let values: Vec<http::HeaderValue> = response
            .headers
            .get_all(&name)
            .iter()
            .map(|value| {
                let edge = value
                    .to_str()
                    .ok()
                    .and_then(|text| rewrite::edge_reference(routed, text))
                    .and_then(|edge| http::HeaderValue::try_from(edge).ok());
                edge.unwrap_or_else(|| value.clone())
            })
            .collect();
        if values.is_empty() {
            continue;
        }
        response.remove_header(&name);
        for value in values {
            response.append_header(name.clone(), value)?;
        }
    }
    let tag_list = ctx.request.route.endpoint == Endpoint::TagsList
        && response.status == 200
        && request.method == http::Method::GET;
    if tag_list {
        // Held whole whatever its framing (Go sends lists over ~2 KiB chunked).
        response.remove_header(&http::header::CONTENT_LENGTH);
        response.remove_header(&http::header::TRANSFER_ENCODING);
        ctx.tag_list = Some(TagListBody::default());
    }
    Ok(())
}

/// `response_filter`: an HTTP/1.1 client gets a rewritten tag list chunked.
pub(crate) fn framing(session: &Session, response: &mut ResponseHeader, ctx: &RequestCtx) {
    if ctx.tag_list.is_some() && !session.is_http2() && !super::answer::is_http10(session) {
        let _ = response.insert_header(http::header::TRANSFER_ENCODING, "chunked");
    }
}

/// `response_body_filter`: holds a tag list whole, then sends it with the edge's name.
pub(crate) fn body(
    body: &mut Option<Bytes>,
    end_of_stream: bool,
    ctx: &mut RequestCtx,
) -> Result<()> {
    let (Some(TagListBody(held)), Some(routed)) = (&mut ctx.tag_list, &ctx.request.routed) else {
        return Ok(());
    };
    if let Some(chunk) = body.take() {
        if held.len() + chunk.len() > rewrite::MAX_TAG_LIST {
            return Error::e_explain(ErrorType::InternalError, "tag list over 16 MiB");
        }
        held.extend_from_slice(&chunk);
    }
    if end_of_stream {
        let whole = std::mem::take(held);
        let edge = rewrite::edge_tag_list(routed, &whole).unwrap_or(whole);
        *body = Some(Bytes::from(edge));
    }
    Ok(())
}
