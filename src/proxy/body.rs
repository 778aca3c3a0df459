//! Request bodies as they stream to the node: never buffered, counted against
//! `limits.max_body_size`, held back by `rate_limits.upload_bytes`, and watched for stalls.

use bytes::Bytes;
use pingora::prelude::*;
use pingora::{Error, ErrorType};

use super::ctx::RequestCtx;
use crate::error::RegistryError;

/// Sees one chunk of the request body (`None` at the end of some streams). Errors with
/// HTTP status 413 once the body passes `limits.max_body_size` (answered by `fail_to_proxy`).
pub(crate) async fn on_chunk(
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
    let Some(chunk) = body.as_ref() else {
        return Ok(());
    };
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
    if let Some(throttle) = ctx.settings.upload_throttle.clone() {
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
