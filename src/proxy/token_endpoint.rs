//! The HTTP side of the token realm (`auth.token.realm`): reads the query or the OAuth2
//! form, hands it to [`crate::auth::endpoint`] and writes the answer. The edge answers
//! these requests itself; they never reach a registry node.

use std::time::SystemTime;

use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::ctx::RequestCtx;
use super::{answer, refusal};
use crate::auth::endpoint::{TokenReply, TokenRequest};
use crate::auth::Auth;
use crate::error::{json_response_header, RegistryError};
use crate::hooks::Refusal;
use crate::metrics::metrics;

/// The realm's `route` parameter, which the challenge to a request a route took by `Host`
/// or `ns` carries (`checks::token`): the client names repositories as the route's pool
/// does, and the token is for their names at the edge. Returns that route's prefix.
fn route_prefix(req: &RequestHeader, ctx: &RequestCtx) -> Result<Option<String>, RegistryError> {
    let Some(query) = req.uri.query() else {
        return Ok(None);
    };
    let Some((_, name)) = url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "route")
    else {
        return Ok(None);
    };
    match ctx.request.settings.routes.by_name(&name) {
        Some(route) => Ok(Some(route.settings.edge_prefix.clone())),
        None => Err(RegistryError::BadTokenRequest(format!("no route {name:?}"))),
    }
}

/// Every `repository` scope asked, named at the edge (`prefix` + the name).
fn edge_scopes(params: &mut [(String, String)], prefix: &str) {
    for (key, value) in params.iter_mut().filter(|(k, _)| k == "scope") {
        let scopes: Vec<String> = crate::registry::Scope::parse_all([value.as_str()])
            .into_iter()
            .map(|mut scope| {
                if scope.kind == "repository" {
                    scope.name = format!("{prefix}{}", scope.name);
                }
                scope.to_string()
            })
            .collect();
        debug_assert_eq!(key, "scope");
        *value = scopes.join(" ");
    }
}

/// Largest token-request form body read (OAuth2 POST), in bytes.
const MAX_TOKEN_FORM: usize = 64 * 1024;

/// Answers a token request: `GET` with the query (docker's token flow) or `POST` with a
/// form (the OAuth2 flow, RFC 6749 §4.3/§6). `HEAD` is answered as `GET` without the
/// body (RFC 9110 §9.3.2: a server that answers GET answers HEAD alike). Errors are
/// Pingora's (write or read failed).
pub(crate) async fn serve(session: &mut Session, ctx: &mut RequestCtx, auth: &Auth) -> Result<()> {
    super::connection::before_answer(session, ctx);
    let req = session.req_header();
    let post = req.method == http::Method::POST;
    if !post && req.method != http::Method::GET && req.method != http::Method::HEAD {
        let error = RegistryError::BadTokenRequest("use GET, HEAD or POST".into());
        return refusal::answer(session, ctx, error.into()).await;
    }
    let mut raw = req.uri.query().unwrap_or("").as_bytes().to_vec();
    if post {
        raw.clear();
        while let Some(chunk) = session.read_request_body().await? {
            if raw.len() + chunk.len() > MAX_TOKEN_FORM {
                let error = RegistryError::BadTokenRequest("form too large".into());
                return refusal::answer(session, ctx, error.into()).await;
            }
            raw.extend_from_slice(&chunk);
        }
    }
    let mut params: Vec<(String, String)> =
        url::form_urlencoded::parse(&raw).into_owned().collect();
    match route_prefix(session.req_header(), ctx) {
        Ok(Some(prefix)) => edge_scopes(&mut params, &prefix),
        Ok(None) => {}
        Err(error) => return refusal::answer(session, ctx, error.into()).await,
    }
    let authorization = session
        .req_header()
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let request = TokenRequest {
        post,
        params,
        authorization: authorization.as_deref(),
        client_ip: ctx
            .request
            .client
            .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |c| c.client),
    };
    let reply = auth.handle_token_request(&request, SystemTime::now()).await;
    // A login can take seconds (LDAP, OIDC): a drain may have begun meanwhile.
    super::connection::before_answer(session, ctx);
    match reply {
        TokenReply::Issued { body, account } => {
            metrics().tokens_issued.inc();
            ctx.request.subject = Some(account);
            let header = json_response_header(200, body.len());
            answer::respond(session, header, body).await
        }
        TokenReply::Refused { error, retry_after } => {
            let mut extra = Vec::new();
            if error == RegistryError::BadCredentials {
                metrics().failed_logins.inc();
                extra.push((
                    "WWW-Authenticate",
                    format!(
                        "Basic realm=\"{}\"",
                        ctx.request.origin.url(&auth.realm_path)
                    ),
                ));
            }
            if let RegistryError::LoginUnavailable { backend } = &error {
                metrics()
                    .login_backend_unavailable
                    .with_label_values(&[backend])
                    .inc();
            }
            if let Some(seconds) = retry_after {
                extra.push(("Retry-After", seconds.to_string()));
            }
            let refused = Refusal {
                error,
                headers: extra,
            };
            refusal::answer(session, ctx, refused).await
        }
    }
}
