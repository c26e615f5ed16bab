//! A connection's deadline for writes: a write (or flush, or shutdown) that makes no progress for
//! `--write-timeout` fails, and hyper then closes the connection. hyper has no write timeout of its
//! own (its `header_read_timeout` covers only heads), so without this a client that never reads
//! its answer would keep its connection, and its place under `--max-connections`, forever.
//!
//! The deadline counts from the first write that had to wait, and starts again at every write
//! that moves bytes: a slow reader that keeps reading is served; one that stops is cut.
//! `tokio-io-timeout` does the same, but is not otherwise in the tree; this is its write half.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// `inner`, whose writes fail with [`io::ErrorKind::TimedOut`] (its source a [`WriteStalled`])
/// once one has waited `timeout` without progress.
#[derive(Debug)]
pub struct WriteTimeout<S> {
    inner: S,
    timeout: Duration,
    /// Set while a write waits; dropped as soon as one makes progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

/// Why a write failed: the peer read nothing for the whole timeout.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the peer read nothing for {} s", .0.as_secs_f64())]
pub struct WriteStalled(pub Duration);

impl<S> WriteTimeout<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// Passes a finished write through (and forgets the deadline); for one that waits, starts the
    /// deadline or checks it.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(done) => {
                self.stalled = None;
                Poll::Ready(done)
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let deadline = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        self.stalled = None;
                        Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            WriteStalled(timeout),
                        )))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

/// Whether `error` (hyper's, or any other) comes from a write that stalled past its deadline.
pub fn is_write_stall(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<WriteStalled>() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<io::Error>()
            && io.get_ref().is_some_and(|inner| inner.is::<WriteStalled>())
        {
            return true;
        }
        cause = e.source();
    }
    false
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(cx, polled)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[tokio::test]
    async fn a_write_the_peer_never_reads_fails_after_the_timeout_and_one_it_reads_does_not() {
        // A pipe of 1 KiB whose reader reads nothing.
        let (near, _far) = tokio::io::duplex(1024);
        let mut stalled = WriteTimeout::new(near, Duration::from_millis(200));
        let started = std::time::Instant::now();
        let e = stalled.write_all(&[0u8; 64 * 1024]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(is_write_stall(&e), "{e:?}");
        let after = started.elapsed();
        assert!(
            after >= Duration::from_millis(200) && after < Duration::from_secs(5),
            "{after:?}"
        );

        // A reader that reads slowly but keeps reading: each read is progress, never a timeout.
        let (near, mut far) = tokio::io::duplex(1024);
        let mut slow = WriteTimeout::new(near, Duration::from_millis(200));
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 1024];
            let mut total = 0;
            while total < 8 * 1024 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                total += far.read(&mut buf).await.unwrap();
            }
            total
        });
        slow.write_all(&[0u8; 8 * 1024]).await.unwrap();
        assert_eq!(reader.await.unwrap(), 8 * 1024);
        assert!(!is_write_stall(&io::Error::other("other")));
    }
}
