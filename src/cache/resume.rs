//! Finishing an answer from the registry when the fetch it was reading fails (a full disk,
//! the registry's connection cut): the rest is asked of the registry with a `Range` and
//! streamed on, so a client reading a fill gets what a client of the registry alone gets.
//! That answer is the registry's, as when the edge only proxies: not verified here (the
//! client checks the digest of what it pulls).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::Session;

/// Where a request's registry answer comes from, with its client's credentials.
#[derive(Clone)]
pub(super) struct Origin {
    pub node: SocketAddr,
    /// The client's `Authorization`.
    pub authorization: Option<String>,
    /// The request's path (`/v2/<name>/blobs/<digest>`).
    pub path: String,
    /// The client's `Accept`, `Host`, `User-Agent` and forwarding headers.
    pub headers: reqwest::header::HeaderMap,
    /// `upstream.read_timeout`: for the answer's head, and for each read of its body.
    pub read_timeout: Duration,
}

impl Origin {
    /// A `GET` of the request's path, bytes `start..end` only when `range`.
    pub(super) async fn get(
        &self,
        cache: &super::shared::Cache,
        range: Option<(u64, u64)>,
    ) -> std::result::Result<reqwest::Response, crate::upstream::LookupError> {
        let mut headers = self.headers.clone();
        if let Some((start, end)) = range {
            let value = format!("bytes={start}-{}", end - 1);
            if let Ok(value) = reqwest::header::HeaderValue::try_from(value) {
                headers.insert(reqwest::header::RANGE, value);
            }
        }
        let authorization = self.authorization.as_deref();
        let (node, path, timeout) = (self.node, &self.path, self.read_timeout);
        (cache.registry)
            .get_body(node, authorization, path, headers, timeout)
            .await
    }
}

/// Sends bytes `offset..end` of the content from the registry: its `206` as is, or the
/// part of its `200`. Anything else, or a body cut short, cuts the answer short.
pub(super) async fn resume(
    session: &mut Session,
    cache: &super::shared::Cache,
    origin: &Origin,
    offset: u64,
    end: u64,
) -> Result<()> {
    let failed = |problem: String| {
        tracing::warn!("cache: an answer from a failed fill could not be finished: {problem}");
        Error::explain(ErrorType::InternalError, "cache fill failed")
    };
    if offset == end {
        return session.write_response_body(None, true).await;
    }
    let mut response = origin
        .get(cache, Some((offset, end)))
        .await
        .map_err(|e| failed(e.to_string()))?;
    // A 200 is the whole content: the bytes before `offset` were sent already.
    let from_offset = response
        .headers()
        .get(reqwest::header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(&format!("bytes {offset}-")));
    let mut skip = match response.status().as_u16() {
        206 if from_offset => 0,
        200 => offset,
        status => return Err(failed(format!("the registry answered {status}"))),
    };
    let mut left = end - offset;
    while left > 0 {
        let next = tokio::time::timeout(origin.read_timeout, response.chunk()).await;
        let chunk = match next {
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None)) => return Err(failed("the registry's body ended early".into())),
            Ok(Err(e)) => return Err(failed(e.to_string())),
            Err(_) => return Err(failed("the registry stopped sending".into())),
        };
        let chunk = part(chunk, &mut skip, left);
        if chunk.is_empty() {
            continue;
        }
        left -= chunk.len() as u64;
        session.write_response_body(Some(chunk), left == 0).await?;
    }
    Ok(())
}

/// What of `chunk` is sent: past `skip` bytes (taken off it), at most `left`.
fn part(chunk: Bytes, skip: &mut u64, left: u64) -> Bytes {
    let len = chunk.len() as u64;
    let from = (*skip).min(len);
    *skip -= from;
    let to = len.min(from + left);
    chunk.slice(from as usize..to as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_answer_is_cut_to_the_part_still_owed() {
        let mut skip = 5;
        assert_eq!(part(Bytes::from_static(b"abc"), &mut skip, 10), "");
        assert_eq!(skip, 2);
        assert_eq!(part(Bytes::from_static(b"defgh"), &mut skip, 2), "fg");
        assert_eq!(skip, 0);
        assert_eq!(part(Bytes::from_static(b"xyz"), &mut skip, 10), "xyz");
    }
}
