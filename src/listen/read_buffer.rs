//! A read buffer under TLS, used only while data arrives in bulk.
//!
//! rustls asks the socket for at most 4 KiB per read (`READ_SIZE` in rustls 0.23's
//! deframer), and the stream an own accept loop gets from Pingora has no buffer of its own
//! (Pingora's listener adds a 64 KiB one; `set_buffer` is crate-private): an upload arrived
//! in one `recvfrom` per 4 KiB. [`ReadBuffered`] reads [`READ_BUFFER`] bytes at a time once a
//! read came back full — more is waiting — and hands them to rustls from memory. A read that
//! came back short means the client has paused (a small request, the end of a body): the
//! buffer is freed once drained, so idle keep-alive connections and small requests hold and
//! copy nothing.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use async_trait::async_trait;
use pingora::protocols::{Peek, Shutdown, IO};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes read per `recvfrom` during a bulk transfer: as Pingora's own listeners.
pub(crate) const READ_BUFFER: usize = 64 * 1024;

/// `inner` with a read buffer that exists only while reads come back full.
#[derive(Debug)]
pub(crate) struct ReadBuffered<S> {
    inner: S,
    buffer: Option<Buffer>,
}

#[derive(Debug)]
struct Buffer {
    data: Box<[u8]>,
    start: usize,
    end: usize,
    /// The last fill was short of the buffer: the client paused, so free it once drained.
    last_fill_short: bool,
}

impl<S> ReadBuffered<S> {
    pub(crate) fn new(inner: S) -> Self {
        ReadBuffered {
            inner,
            buffer: None,
        }
    }

    /// Whether a buffer is held now (for tests).
    #[cfg(test)]
    fn is_buffering(&self) -> bool {
        self.buffer.is_some()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadBuffered<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(held) = &mut this.buffer {
            if held.start == held.end {
                if held.last_fill_short {
                    this.buffer = None;
                } else {
                    let mut fill = ReadBuf::new(&mut held.data);
                    ready!(Pin::new(&mut this.inner).poll_read(cx, &mut fill))?;
                    let n = fill.filled().len();
                    (held.start, held.end) = (0, n);
                    held.last_fill_short = n < held.data.len();
                }
            }
        }
        if let Some(held) = &mut this.buffer {
            let n = buf.remaining().min(held.end - held.start);
            buf.put_slice(&held.data[held.start..held.start + n]);
            held.start += n;
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let wanted = buf.remaining();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if wanted > 0 && buf.filled().len() - before == wanted {
            this.buffer = Some(Buffer {
                data: vec![0; READ_BUFFER].into_boxed_slice(),
                start: 0,
                end: 0,
                last_fill_short: false,
            });
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadBuffered<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl<S: IO> Shutdown for ReadBuffered<S> {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

delegate_digests!(ReadBuffered<S>, S: IO);

#[async_trait]
impl<S: IO> Peek for ReadBuffered<S> {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        // Bytes already taken from the socket come first; only peek past them when none are.
        match &self.buffer {
            Some(held) if held.start < held.end => {
                let n = buf.len().min(held.end - held.start);
                buf[..n].copy_from_slice(&held.data[held.start..held.start + n]);
                Ok(true)
            }
            _ => self.inner.try_peek(buf).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const RUSTLS_READ: usize = 4096;

    #[tokio::test]
    async fn bulk_reads_are_buffered_and_small_ones_are_not() {
        let (mut client, server) = tokio::io::duplex(256 * 1024);
        let mut stream = ReadBuffered::new(server);
        let mut chunk = vec![0u8; RUSTLS_READ];

        // A small request: read straight through, no buffer.
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let n = stream.read(&mut chunk).await.unwrap();
        assert_eq!(&chunk[..n], b"GET / HTTP/1.1\r\n\r\n");
        assert!(!stream.is_buffering());

        // A bulk body: the first full read turns the buffer on; every byte arrives in order.
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&body).await.unwrap();
        let mut received = Vec::new();
        while received.len() < body.len() {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "early end of stream");
            received.extend_from_slice(&chunk[..n]);
            if received.len() == RUSTLS_READ {
                assert!(stream.is_buffering(), "a full read must start buffering");
            }
        }
        assert_eq!(received, body);

        // The body ended short of a full buffer: the buffer goes once drained.
        client.write_all(b"next").await.unwrap();
        let n = stream.read(&mut chunk).await.unwrap();
        assert_eq!(&chunk[..n], b"next");
        assert!(!stream.is_buffering());

        drop(client);
        assert_eq!(stream.read(&mut chunk).await.unwrap(), 0);
    }
}
