//! The client side of the idle window after the first response byte (H28).
//!
//! A client that stops reading a response leaves the router's writes
//! pending. [`Watched`] wraps the client connection and records when a write
//! first blocked; the connection's watchdog ([`ClientWatch::stalled`]) cuts
//! the connection once a write has been blocked for the app's idle window,
//! and the cut response is logged as H28 rather than H27.
//!
//! The same wrapper counts the connection's reads and writes, and
//! [`ClientWatch::busy`] marks requests in flight on it, so that a
//! connection with neither for [`RouterConfig::client_idle`] can be closed
//! ([`ClientWatch::idle`]): HTTP/2 has no head timer to do it, and an idle
//! connection costs memory and an H22 place.
//!
//! [`RouterConfig::client_idle`]: crate::RouterConfig::client_idle

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use crate::clock;

/// Write-progress of one client connection.
#[derive(Debug, Default)]
pub struct ClientWatch {
    /// Router-clock ms when a write first blocked; 0 while writes flow.
    blocked_since: AtomicU64,
    /// The idle window of the response being written, ms; 0 until one starts.
    window_ms: AtomicU64,
    /// Set when the watchdog cut the connection for a stalled client.
    stalled: AtomicBool,
    wake: Notify,
    /// Reads and writes that moved bytes, ever (only compared, never read
    /// as a count).
    activity: AtomicU64,
    /// Requests whose response has not ended yet.
    in_flight: AtomicUsize,
    /// Requests started on the connection, ever (only compared).
    requests: AtomicU64,
}

/// One request in flight on a client connection, until dropped.
#[derive(Debug)]
pub struct Busy(Arc<ClientWatch>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ClientWatch {
    /// Arms the watchdog with the idle window of a response that started.
    pub fn arm(&self, idle: Duration) {
        self.window_ms
            .store(idle.as_millis().max(1) as u64, Ordering::Release);
        self.wake.notify_one();
    }

    /// True if the connection was cut because the client stopped reading.
    pub fn was_stalled(&self) -> bool {
        self.stalled.load(Ordering::Acquire)
    }

    /// Resolves when a write has been blocked for the idle window.
    pub async fn stalled(&self) {
        loop {
            let window = self.window_ms.load(Ordering::Acquire);
            if window == 0 {
                self.wake.notified().await;
                continue;
            }
            tokio::time::sleep(Duration::from_millis((window / 4).max(5))).await;
            let since = self.blocked_since.load(Ordering::Acquire);
            if since != 0 && clock::now_ms().saturating_sub(since) >= window {
                self.stalled.store(true, Ordering::Release);
                return;
            }
        }
    }

    /// Marks a request in flight until the returned guard is dropped.
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        // One writer (the connection's task): no read-modify-write needed.
        let n = self.requests.load(Ordering::Relaxed);
        self.requests.store(n.wrapping_add(1), Ordering::Relaxed);
        Busy(self.clone())
    }

    /// Resolves once the connection has had no request in flight and moved
    /// no byte for `window` (checked every half window, so it resolves
    /// between one and one and a half windows into the quiet).
    pub async fn idle(&self, window: Duration) {
        let step = (window / 2).max(Duration::from_millis(1));
        let mut quiet = Duration::ZERO;
        loop {
            let seen = self.activity.load(Ordering::Relaxed);
            tokio::time::sleep(step).await;
            if self.in_flight.load(Ordering::Relaxed) == 0
                && self.activity.load(Ordering::Relaxed) == seen
            {
                quiet += step;
                if quiet >= window {
                    return;
                }
            } else {
                quiet = Duration::ZERO;
            }
        }
    }

    /// Requests started on the connection so far.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests whose response has not ended yet.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn active(&self) {
        // One writer (the connection's task): no read-modify-write needed.
        let n = self.activity.load(Ordering::Relaxed);
        self.activity.store(n.wrapping_add(1), Ordering::Relaxed);
    }

    fn blocked(&self) {
        if self.blocked_since.load(Ordering::Relaxed) == 0 {
            self.blocked_since.store(clock::now_ms(), Ordering::Release);
        }
    }

    fn progressed(&self) {
        if self.blocked_since.load(Ordering::Relaxed) != 0 {
            self.blocked_since.store(0, Ordering::Release);
        }
    }
}

/// A client stream that reports write progress to a [`ClientWatch`].
#[derive(Debug)]
pub struct Watched<S> {
    inner: S,
    watch: Arc<ClientWatch>,
}

impl<S> Watched<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, watch: Arc<ClientWatch>) -> Self {
        Watched { inner, watch }
    }

    /// The wrapped stream.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Counts a read made on the wrapped stream directly.
    pub fn note_read(&self) {
        self.watch.active();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.watch.active();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        if r.is_pending() {
            self.watch.blocked();
        }
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S> Watched<S> {
    fn note(&self, r: &Poll<io::Result<usize>>) {
        match r {
            Poll::Pending => self.watch.blocked(),
            Poll::Ready(Ok(n)) if *n > 0 => {
                self.watch.active();
                self.watch.progressed();
            }
            _ => {}
        }
    }
}
