//! The HTTP side of the token realm (`auth.token.realm`): reads the query or the OAuth2
//! form, hands it to [`crate::auth::endpoint`] and writes the answer. The edge answers
//! these requests itself; they never reach a registry node.

use std::time::SystemTime;

use pingora::prelude::*;
use pingora::proxy::Session;

use super::ctx::RequestCtx;
use super::{answer, refusal};
use crate::auth::endpoint::{TokenReply, TokenRequest};
use crate::auth::Auth;
use crate::error::{json_response_header, RegistryError};
use crate::hooks::Refusal;
use crate::metrics::metrics;

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
    let params = url::form_urlencoded::parse(&raw).into_owned().collect();
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
