//! Request bodies as they stream to the node: never buffered, counted against
//! `limits.max_body_size`, held back by `rate_limits.upload_bytes`, and watched for stalls.

use bytes::Bytes;
use pingora::prelude::*;

use super::ctx::RequestCtx;
use crate::error::RegistryError;

/// Sees one chunk of the request body (`None` at the end of some streams). Refuses with 413
/// once the body passes `limits.max_body_size` (`refusal::defer`).
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
    ctx.request.body_bytes += chunk.len() as u64;
    if let Some(limit) = ctx.request.settings.limits.max_body_size {
        if ctx.request.body_bytes > limit {
            let refusal = RegistryError::BodyTooLarge { limit }.into();
            return Err(super::refusal::defer(ctx, refusal));
        }
    }
    if let Some(throttle) = ctx.request.settings.upload_throttle.clone() {
        // Holding the stream here stops further reads: the client is slowed by flow control.
        let client_ip = ctx
            .request
            .client
            .map(|c| c.client.to_string())
            .unwrap_or_default();
        let key = throttle
            .config()
            .key
            .key_for(ctx.request.subject.as_deref(), &client_ip);
        ctx.throttled += throttle
            .throttle(&key, chunk.len(), &mut ctx.upload_credit)
            .await;
        if let Some(progress) = &ctx.body_progress {
            progress.touch();
        }
    }
    Ok(())
}
