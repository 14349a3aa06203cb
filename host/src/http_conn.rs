//! Limits on the API listener's connections, so that clients that open connections and then
//! send slowly or nothing at all (slowloris) cannot pile them up:
//!
//! - at most `[server] api_max_connections_per_source` (64) connections open at once from one
//!   source address; the next one is closed as soon as it is accepted;
//! - a connection on which no byte moved either way for [`IDLE_TIMEOUT`] is closed (an idle
//!   keep-alive connection, a client silent after the TLS handshake, a body that stopped);
//! - HTTP/1 request headers must arrive within [`HEADER_TIMEOUT`] (a client trickling a byte
//!   now and then is not idle, but its headers never end). hyper runs this timer while a
//!   keep-alive connection waits for its next request too, so it is also HTTP/1's keep-alive
//!   timeout, and is kept as long as hyper's default rather than shorter;
//! - a request body must arrive within `api::extract::BODY_TIMEOUT` (408).
//!
//! A connection upgraded to a WebSocket (the web console) leaves these limits behind with
//! the HTTP connection; the console has its own lifetime rules.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// A connection with no byte read or written for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Time allowed for an HTTP/1 request's headers, counted from when the connection starts
/// waiting for them (so also how long an idle keep-alive connection stays open).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// When bytes last moved on a [`Watched`] stream.
#[derive(Debug, Clone)]
pub struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        self.start
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed)))
    }

    /// Resolves once nothing has moved for `limit`.
    pub async fn idle(&self, limit: Duration) {
        loop {
            let quiet = self.quiet_for();
            if quiet >= limit {
                return;
            }
            tokio::time::sleep(limit - quiet).await;
        }
    }
}

/// A stream that records in its [`Activity`] every read or write that moved bytes.
#[derive(Debug)]
pub struct Watched<T> {
    io: T,
    activity: Activity,
}

impl<T> Watched<T> {
    pub fn new(io: T) -> (Self, Activity) {
        let activity = Activity::new();
        (
            Self {
                io,
                activity: activity.clone(),
            },
            activity,
        )
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn idle_resolves_only_after_a_quiet_period() {
        let (a, mut b) = tokio::io::duplex(64);
        let (mut a, activity) = Watched::new(a);
        let limit = Duration::from_secs(60);
        // Bytes every 40 s keep it alive.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(40)).await;
            b.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            a.read_exact(&mut one).await.unwrap();
            assert!(
                tokio::time::timeout(Duration::ZERO, activity.idle(limit))
                    .await
                    .is_err()
            );
        }
        // Writes count too.
        a.write_all(b"y").await.unwrap();
        let started = tokio::time::Instant::now();
        activity.idle(limit).await;
        let waited = started.elapsed();
        assert!(
            waited >= limit && waited < limit + Duration::from_secs(1),
            "{waited:?}"
        );
    }
}
