//! A minimal, fast stand-in for a registry node, used by `benches/compare_nginx.py` to
//! measure what a proxy itself costs without the real registry's ~1 ms per request.
//!
//! It speaks just enough of the distribution API over plain HTTP/1.1 with keep-alive:
//! `GET /v2/`, blob uploads (POST, PATCH, PUT; bodies read and discarded, chunked or
//! not) and `GET`/`HEAD` of any blob, answered with BLOB_SIZE zero bytes (512 for
//! repositories whose name ends in `/small`). Nothing is
//! stored or checked: it is a benchmark peer, not a registry.
//!
//!   cargo run --release --example fast_upstream -- 127.0.0.1:5001 BLOB_SIZE

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const READ_CHUNK: usize = 256 * 1024;
/// Body bytes sent in the same write as the head.
const INLINE_BODY: usize = 16 * 1024;
/// Every blob is zeros: one static buffer serves all of them.
static ZEROS: [u8; READ_CHUNK] = [0; READ_CHUNK];
const SMALL_BLOB: u64 = 512;
static NEXT_UPLOAD: AtomicU64 = AtomicU64::new(1);

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:5001".into());
    let blob_size: u64 = args
        .next()
        .map(|s| s.parse().expect("blob size in bytes"))
        .unwrap_or(1 << 30);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = TcpListener::bind(&listen).await?;
            loop {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                tokio::spawn(async move {
                    // A peer that goes away mid-request is normal during benchmarks.
                    let _ = serve(stream, blob_size).await;
                });
            }
        })
}

struct Request {
    method: String,
    path: String,
    body: Body,
    expects_continue: bool,
}

enum Body {
    Length(u64),
    Chunked,
}

async fn serve(mut stream: TcpStream, blob_size: u64) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(READ_CHUNK);
    loop {
        let Some((request, head_len)) = read_head(&mut stream, &mut buf).await? else {
            return Ok(());
        };
        buf.drain(..head_len);
        if request.expects_continue {
            // As Go's net/http (the registry) does once the handler reads the body;
            // without it curl waits a second before sending.
            stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        let received = match request.body {
            Body::Length(n) => discard_exact(&mut stream, &mut buf, n).await?,
            Body::Chunked => discard_chunked(&mut stream, &mut buf).await?,
        };
        respond(&mut stream, &request, received, blob_size).await?;
    }
}

/// Reads until a full request head is buffered; `None` when the peer closed cleanly.
async fn read_head(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<(Request, usize)>> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut headers);
        if let httparse::Status::Complete(len) = parsed.parse(buf).map_err(invalid)? {
            let mut body = Body::Length(0);
            let mut expects_continue = false;
            for h in parsed.headers.iter() {
                if h.name.eq_ignore_ascii_case("expect") {
                    expects_continue = h.value.eq_ignore_ascii_case(b"100-continue");
                }
                if h.name.eq_ignore_ascii_case("content-length") {
                    let text = std::str::from_utf8(h.value).map_err(invalid)?;
                    body = Body::Length(text.trim().parse().map_err(invalid)?);
                } else if h.name.eq_ignore_ascii_case("transfer-encoding")
                    && h.value.eq_ignore_ascii_case(b"chunked")
                {
                    body = Body::Chunked;
                }
            }
            let request = Request {
                method: parsed.method.unwrap_or_default().to_owned(),
                path: parsed.path.unwrap_or_default().to_owned(),
                body,
                expects_continue,
            };
            return Ok(Some((request, len)));
        }
        if fill(stream, buf).await? == 0 {
            return Ok(None);
        }
    }
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let start = buf.len();
    buf.resize(start + READ_CHUNK, 0);
    let n = stream.read(&mut buf[start..]).await?;
    buf.truncate(start + n);
    Ok(n)
}

async fn discard_exact(stream: &mut TcpStream, buf: &mut Vec<u8>, n: u64) -> std::io::Result<u64> {
    let mut left = n;
    loop {
        let take = left.min(buf.len() as u64) as usize;
        buf.drain(..take);
        left -= take as u64;
        if left == 0 {
            return Ok(n);
        }
        if fill(stream, buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Decodes and drops a chunked body (no trailers expected), returning its length.
async fn discard_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u64> {
    let mut total = 0;
    loop {
        let line_end = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            if fill(stream, buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        };
        let size_text = std::str::from_utf8(&buf[..line_end]).map_err(invalid)?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = u64::from_str_radix(size_text, 16).map_err(invalid)?;
        buf.drain(..line_end + 2);
        // The chunk's data is followed by its own CRLF; the last chunk by an empty line.
        discard_exact(stream, buf, size + 2).await?;
        total += size;
        if size == 0 {
            return Ok(total);
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    request: &Request,
    received: u64,
    blob_size: u64,
) -> std::io::Result<()> {
    let path = request.path.split('?').next().unwrap_or_default();
    let upload_base = path.find("/blobs/uploads/").map(|i| &path[..i]);
    let head = match (request.method.as_str(), upload_base) {
        ("POST", Some(name)) => {
            let id = NEXT_UPLOAD.fetch_add(1, Ordering::Relaxed);
            format!(
                "HTTP/1.1 202 Accepted\r\nLocation: {name}/blobs/uploads/{id}?_state=fast\r\n\
                 Docker-Upload-UUID: {id}\r\nRange: 0-0\r\nContent-Length: 0\r\n\r\n"
            )
        }
        ("PATCH", Some(_)) => format!(
            "HTTP/1.1 202 Accepted\r\nLocation: {path}?_state=fast\r\nRange: 0-{}\r\n\
             Content-Length: 0\r\n\r\n",
            received.saturating_sub(1)
        ),
        ("PUT", Some(name)) => format!(
            "HTTP/1.1 201 Created\r\nLocation: {name}/blobs/sha256:0\r\nContent-Length: 0\r\n\r\n"
        ),
        ("GET" | "HEAD", None) if path == "/v2/" => {
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
                .to_owned()
        }
        ("GET" | "HEAD", None) if path.contains("/blobs/") => format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
             Docker-Content-Digest: sha256:0\r\nContent-Length: {}\r\n\r\n",
            blob_len(path, blob_size)
        ),
        _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned(),
    };
    let mut left = if request.method == "GET" && path.contains("/blobs/") && upload_base.is_none() {
        blob_len(path, blob_size)
    } else {
        0
    };
    // Head and the start of the body in one write: a small answer is one segment, so the
    // proxy in front sees it all at once (as from a real registry on the same host).
    let mut first = head.into_bytes();
    let inline = left.min(INLINE_BODY as u64) as usize;
    first.extend_from_slice(&ZEROS[..inline]);
    left -= inline as u64;
    stream.write_all(&first).await?;
    while left > 0 {
        let n = left.min(READ_CHUNK as u64) as usize;
        stream.write_all(&ZEROS[..n]).await?;
        left -= n as u64;
    }
    Ok(())
}

/// Repositories whose name ends in `/small` hold small blobs, for request-rate runs.
fn blob_len(path: &str, blob_size: u64) -> u64 {
    if path.contains("/small/blobs/") {
        SMALL_BLOB
    } else {
        blob_size
    }
}

fn invalid<E: std::fmt::Display>(e: E) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}
