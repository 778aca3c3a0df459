//! Writing an answer from the cache, as the registry would answer it.
//!
//! HTTP as the registry answers on the endpoint asked: `Content-Length`, that endpoint's
//! `Content-Type`, `Docker-Content-Digest`, `ETag`, and for blobs `Cache-Control` and
//! `Accept-Ranges`; conditions and ranges as `conditional` decides (what it leaves to the
//! registry is sent on); HEAD never reads the disk. A digest being fetched is answered
//! from its growing file (`growing`). Integrity (`read`): a file unchanged
//! since it was verified is sent as is; any other is hashed while read, the last chunk of
//! the answer held back until the whole file matched its digest; on a mismatch the answer
//! is cut short (the client sees a failed transfer and retries, from the registry) and the
//! entry is dropped.

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::Session;

use super::conditional::{part, Part};
use super::fetch::Fetch;
use super::growing;
use super::memory::Memory;
use super::read::{self, Read};
use super::resume::Origin;
use super::shared::Cache;
use super::store::{Entry, Kind};
use crate::metrics::metrics;
use crate::request::copy_request_id;

/// Whether the registry would answer this request with a manifest of `content_type`.
/// distribution answers an OCI image manifest or index by digest only to a client whose
/// `Accept` lists that media type, and a 404 `MANIFEST_UNKNOWN` to the others (its
/// `registry/handlers/manifests.go`); Docker's types and blobs go to every client.
pub(super) fn accepts(request: &RequestHeader, content_type: &str) -> bool {
    const OCI_MANIFESTS: [&str; 2] = [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    ];
    if !OCI_MANIFESTS.contains(&content_type) {
        return true;
    }
    request
        .headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|item| item.split(';').next())
        .any(|media_type| media_type.trim().eq_ignore_ascii_case(content_type))
}

/// What one cached answer is of: the digest, the endpoint asked and the entry.
pub(super) struct Asked<'a> {
    pub digest: &'a str,
    pub kind: Kind,
    pub entry: &'a Entry,
    /// The fetch whose file is growing, when the entry is not committed yet, and where the
    /// rest is asked should it fail.
    pub fetch: Option<(&'a Fetch, &'a Origin)>,
    /// The `cache_events` event the answer counts as (`hit`, or `miss` for the request
    /// that started a fetch, `stale` for a remembered tag).
    pub event: &'static str,
    /// A remembered tag's answer while the pool fails: marked stale (RFC 9111 §5.5: the
    /// `Warning` header, code 110, as distribution's clients and caches read it).
    pub stale: bool,
}

/// Writes the cached answer; `Ok(false)` when the registry answers instead: the entry has
/// not seen an answer on this endpoint, the request asks what the cache does not reproduce,
/// or its content is gone from the disk (purged, or removed by hand). `extra`: headers the
/// answer carries besides the registry's own (a counted pull's `RateLimit-*`).
pub(super) async fn serve(
    session: &mut Session,
    cache: &Cache,
    asked: Asked<'_>,
    (memory_budget, extra): (u64, &[(&'static str, String)]),
) -> Result<bool> {
    let Asked {
        digest,
        kind,
        entry,
        fetch,
        event,
        stale,
    } = asked;
    let Some(content_type) = entry.content_type(kind) else {
        return Ok(false);
    };
    if kind == Kind::Manifest && !accepts(session.req_header(), content_type) {
        return Ok(false);
    }
    let headers = &session.req_header().headers;
    let Some(part) = part(headers, kind, digest, entry.size) else {
        return Ok(false);
    };
    let mut header = answer_header(session, &part, kind, digest, (content_type, entry.size))?;
    if stale {
        header.insert_header("Warning", "110 - \"Response is Stale\"")?;
    }
    for (name, value) in extra {
        header.insert_header(*name, value)?;
    }
    let head = session.req_header().method == http::Method::HEAD;
    let body = !head && (part.status == 200 || part.status == 206);
    // Opened before anything is written: content that is gone sends the request on.
    let source = match (body, fetch) {
        (false, _) => None,
        (true, Some(fetch)) => Some(Source::Growing(fetch)),
        (true, None) => match open(cache, digest).await {
            Some(source) => Some(source),
            None => return Ok(false),
        },
    };
    metrics().cache_events.with_label_values(&[event]).inc();
    session
        .write_response_header(Box::new(header), false)
        .await?;
    match source {
        Some(Source::Memory(content)) => {
            let bytes = content.slice(part.start as usize..part.end as usize);
            metrics().cache_served_bytes.inc_by(bytes.len() as u64);
            session.write_response_body(Some(bytes), true).await?;
        }
        Some(Source::Disk(opened)) => {
            let keep = Memory::wants(entry.size, memory_budget).then_some(memory_budget);
            let read = Read {
                digest,
                size: entry.size,
                start: part.start,
                end: part.end,
                keep,
            };
            // A range of a file being verified reads the whole entry: a few at a time.
            let _permit = match part.status == 206 && opened.verifies(read.size) {
                true => cache.range_reads.acquire().await.ok(),
                false => None,
            };
            read::stream(session, cache, opened, read).await?;
        }
        Some(Source::Growing(fetch)) => {
            growing::stream(session, cache, fetch, part.start, part.end).await?;
        }
        None => {
            let text = (!head && part.status == 416).then_some(Bytes::from_static(NO_OVERLAP));
            session.write_response_body(text, true).await?
        }
    }
    Ok(true)
}

/// Go's `ServeContent` text for a range past the end.
const NO_OVERLAP: &[u8] = b"invalid range: failed to overlap\n";

/// The response header the registry would send for `part` of an entry of
/// `(content type, size)` on `kind`: distribution's blob server adds `Cache-Control` (a
/// year) and Go's `ServeContent` `Accept-Ranges`; a 304 drops the content headers (and
/// distribution's manifest 304 every header of its own); a 416 is Go's `http.Error` text.
fn answer_header(
    session: &Session,
    part: &Part,
    kind: Kind,
    digest: &str,
    (content_type, size): (&str, u64),
) -> Result<ResponseHeader> {
    let mut header = ResponseHeader::build(part.status, Some(8))?;
    header.insert_header("Docker-Distribution-Api-Version", "registry/2.0")?;
    if kind == Kind::Manifest && part.status == 304 {
        copy_request_id(session.req_header(), &mut header)?;
        return Ok(header);
    }
    header.insert_header("Docker-Content-Digest", digest)?;
    header.insert_header("ETag", format!("\"{digest}\""))?;
    if kind == Kind::Blob {
        header.insert_header("Cache-Control", "max-age=31536000")?;
    }
    if part.status == 416 {
        header.insert_header("Content-Type", "text/plain; charset=utf-8")?;
        header.insert_header("X-Content-Type-Options", "nosniff")?;
        header.insert_header("Content-Length", NO_OVERLAP.len().to_string())?;
        header.insert_header("Content-Range", format!("bytes */{size}"))?;
    } else if part.status == 412 {
        header.insert_header("Content-Type", content_type)?;
        header.insert_header("Content-Length", "0")?;
    } else if part.status != 304 {
        header.insert_header("Content-Type", content_type)?;
        header.insert_header("Content-Length", (part.end - part.start).to_string())?;
        if kind == Kind::Blob {
            header.insert_header("Accept-Ranges", "bytes")?;
        }
    }
    if part.status == 206 {
        let range = format!("bytes {}-{}/{size}", part.start, part.end - 1);
        header.insert_header("Content-Range", range)?;
    }
    copy_request_id(session.req_header(), &mut header)?;
    Ok(header)
}

/// The entry's content: from memory while its file is still on disk, else the file.
/// `None` when it cannot be opened: kept in memory but purged from the disk, the open
/// fails and forgets it.
async fn open(cache: &Cache, digest: &str) -> Option<Source<'static>> {
    if let Some(content) = cache.memory.get(digest) {
        if cache.store.content_on_disk(digest) {
            return Some(Source::Memory(content));
        }
    }
    match read::open(cache, digest).await {
        Ok(opened) => Some(Source::Disk(opened)),
        Err(e) => {
            tracing::warn!("cache: {digest} cannot be opened ({e}); asking the registry");
            if e.kind() == std::io::ErrorKind::NotFound {
                cache.store.forget(digest);
                cache.memory.remove(digest);
            }
            None
        }
    }
}

/// Where a cached body comes from.
enum Source<'a> {
    /// A fetch writing it now (`growing`).
    Growing((&'a Fetch, &'a Origin)),
    /// Verified when it went in: sent as is.
    Memory(Bytes),
    /// Trusted while unchanged since verified, else verified while read (`read`).
    Disk(read::Opened),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_manifests_go_only_to_clients_that_accept_them() {
        let oci = "application/vnd.oci.image.manifest.v1+json";
        let docker = "application/vnd.docker.distribution.manifest.v2+json";
        let request = |accept: &[&str]| {
            let mut header = RequestHeader::build("GET", b"/v2/a/manifests/x", None).unwrap();
            for value in accept {
                header.append_header("Accept", *value).unwrap();
            }
            header
        };
        assert!(!accepts(&request(&[]), oci));
        assert!(!accepts(&request(&[docker, "*/*"]), oci));
        assert!(accepts(&request(&[docker, &format!("{oci}; q=0.5")]), oci));
        assert!(accepts(&request(&[&format!("{docker}, {oci}")]), oci));
        assert!(accepts(&request(&[]), docker));
        assert!(accepts(&request(&[]), "application/octet-stream"));
    }
}
