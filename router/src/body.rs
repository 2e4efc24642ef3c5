//! Bodies on both sides of the proxy, streamed and never buffered whole.
//!
//! [`RequestBody`] carries the client's body to the dyno and records when it
//! finished (the H12 timer starts then) and when it last moved (the H28
//! window). [`ResponseBody`] carries the dyno's body to the client, counts
//! its bytes, enforces the rolling idle window (H15) and, when it ends for
//! whatever reason, closes the request's [`Exchange`] so the log line says
//! how it ended.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::Notify;
use tokio::time::Sleep;

use crate::clock;
use crate::exchange::{End, Exchange};
use crate::upstream::DynoBody;

/// Errors bodies hand to hyper.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How the client's side of a request body went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFault {
    /// The client closed or reset the connection (H27).
    Gone,
    /// The body was malformed, e.g. a bad chunk (H26 `bad chunk`).
    BadBody,
    /// The body exceeded the app's `max_body` (413).
    TooLarge,
}

/// Shared progress of a request body, read by the proxy's timers.
#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicBool,
    done_ms: AtomicU64,
    last_ms: AtomicU64,
    fault: AtomicU8,
    /// Woken when the body finishes or fails.
    pub notify: Notify,
}

impl Progress {
    fn new(done: bool, now: u64) -> Arc<Self> {
        let p = Progress {
            done: AtomicBool::new(done),
            done_ms: AtomicU64::new(if done { now } else { 0 }),
            last_ms: AtomicU64::new(now),
            ..Progress::default()
        };
        Arc::new(p)
    }

    /// Router-clock ms when the body was fully sent, if it was.
    pub fn done_at(&self) -> Option<u64> {
        self.done
            .load(Ordering::Acquire)
            .then(|| self.done_ms.load(Ordering::Acquire))
    }

    /// Router-clock ms of the last byte from the client.
    pub fn last_activity(&self) -> u64 {
        self.last_ms.load(Ordering::Acquire)
    }

    /// What went wrong on the client side, if anything.
    pub fn fault(&self) -> Option<ClientFault> {
        match self.fault.load(Ordering::Acquire) {
            1 => Some(ClientFault::Gone),
            2 => Some(ClientFault::BadBody),
            3 => Some(ClientFault::TooLarge),
            _ => None,
        }
    }

    fn finish(&self) {
        self.done_ms.store(clock::now_ms(), Ordering::Release);
        self.done.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    fn fail(&self, fault: ClientFault) {
        let v = match fault {
            ClientFault::Gone => 1,
            ClientFault::BadBody => 2,
            ClientFault::TooLarge => 3,
        };
        self.fault.store(v, Ordering::Release);
        self.notify.notify_one();
    }
}

/// The client's body on its way to the dyno.
#[derive(Debug)]
pub struct RequestBody {
    inner: Option<Incoming>,
    progress: Arc<Progress>,
    seen: u64,
    limit: Option<u64>,
}

impl RequestBody {
    /// Wraps a client body; `limit` caps its size.
    /// A body starting to be sent at router-clock millisecond `now_ms`.
    pub fn new(inner: Incoming, limit: Option<u64>, now_ms: u64) -> (Self, Arc<Progress>) {
        let done = inner.is_end_stream();
        let progress = Progress::new(done, now_ms);
        let body = RequestBody {
            inner: (!done).then_some(inner),
            progress: progress.clone(),
            seen: 0,
            limit,
        };
        (body, progress)
    }
}

#[derive(Debug)]
struct Rejected(&'static str);

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Rejected {}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => {
                this.progress
                    .last_ms
                    .store(clock::now_ms(), Ordering::Release);
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if this.limit.is_some_and(|l| this.seen > l) {
                        this.progress.fail(ClientFault::TooLarge);
                        this.inner = None;
                        return Poll::Ready(Some(Err(Box::new(Rejected(
                            "request body too large",
                        )))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                // hyper reports a malformed chunk (bad size line, size
                // overflow, missing CRLF) as an io error of kind
                // InvalidInput / InvalidData; other io errors are the
                // connection going away.
                let io = std::error::Error::source(&e)
                    .and_then(|s| s.downcast_ref::<std::io::Error>())
                    .map(|io| io.kind());
                let malformed = matches!(
                    io,
                    Some(std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData)
                );
                let fault = if !malformed
                    && (e.is_incomplete_message()
                        || e.is_canceled()
                        || e.is_closed()
                        || io.is_some())
                {
                    ClientFault::Gone
                } else {
                    ClientFault::BadBody
                };
                this.progress.fail(fault);
                this.inner = None;
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => {
                this.inner = None;
                this.progress.finish();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map(|b| b.size_hint())
            .unwrap_or_else(|| SizeHint::with_exact(0))
    }
}

/// The dyno's body on its way to the client.
pub struct ResponseBody {
    inner: DynoBody,
    idle: Duration,
    /// The idle window, armed only when the dyno's body first keeps the
    /// client waiting (most bodies end without ever doing so).
    timer: Option<Pin<Box<Sleep>>>,
    /// A frame went out since the timer was last armed: the window starts
    /// again at the next wait.
    moved: bool,
    exchange: Option<Box<Exchange>>,
    /// Keeps the request counted as in flight on its client connection.
    busy: Option<crate::watch::Busy>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody").finish_non_exhaustive()
    }
}

impl ResponseBody {
    /// Streams `inner`, closing `exchange` when it ends.
    pub fn new(inner: DynoBody, idle: Duration, exchange: Box<Exchange>) -> Self {
        ResponseBody {
            inner,
            idle,
            timer: None,
            moved: true,
            exchange: Some(exchange),
            busy: None,
        }
    }

    /// The idle window, running from now when a frame went out since it
    /// was last armed. Polled the moment the dyno keeps the client
    /// waiting, which is within microseconds of the last frame.
    fn idle_timer(&mut self) -> Pin<&mut Sleep> {
        let (idle, fresh) = (self.idle, std::mem::take(&mut self.moved));
        let mut armed = false;
        let timer = self.timer.get_or_insert_with(|| {
            armed = true;
            Box::pin(tokio::time::sleep(idle))
        });
        if fresh && !armed {
            timer.as_mut().reset(tokio::time::Instant::now() + idle);
        }
        timer.as_mut()
    }

    /// Ends cleanly: the connection goes back to its pool when it can
    /// carry another request.
    fn complete(&mut self) {
        if let Some(x) = self.exchange.as_mut() {
            x.sender = self.inner.take_reusable();
        }
        self.end(End::Complete);
    }

    fn end(&mut self, end: End) {
        if let Some(x) = self.exchange.take() {
            x.finish(end);
        }
        self.busy = None;
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.exchange.is_none() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(x)) = (frame.data_ref(), this.exchange.as_mut()) {
                    x.bytes += data.len() as u64;
                }
                this.moved = true;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.end(End::DynoBroke);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.complete();
                Poll::Ready(None)
            }
            Poll::Pending => match this.idle_timer().poll(cx) {
                Poll::Ready(()) => {
                    this.end(End::DynoIdle);
                    Poll::Ready(Some(Err(Box::new(Rejected("dyno idle")))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.exchange.is_none() || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.complete();
        } else {
            self.end(End::ClientGone);
        }
    }
}

/// What the router sends to clients: its own pages or a dyno's body.
#[derive(Debug)]
pub enum RouterBody {
    /// Nothing.
    Empty,
    /// A page or message the router wrote.
    Full(Option<Bytes>),
    /// A dyno's streamed body.
    Proxied(ResponseBody),
}

impl RouterBody {
    /// A body of `bytes`.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        RouterBody::Full(Some(bytes.into()))
    }

    /// Keeps a dyno's body counted by `busy` for as long as it streams;
    /// the router's own bodies are written at once, so theirs ends here.
    pub fn track(&mut self, busy: crate::watch::Busy) {
        if let RouterBody::Proxied(body) = self {
            body.busy = Some(busy);
        }
    }
}

impl Body for RouterBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RouterBody::Empty => Poll::Ready(None),
            RouterBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            RouterBody::Proxied(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RouterBody::Empty => true,
            RouterBody::Full(data) => data.is_none(),
            RouterBody::Proxied(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RouterBody::Empty => SizeHint::with_exact(0),
            RouterBody::Full(Some(d)) => SizeHint::with_exact(d.len() as u64),
            RouterBody::Full(None) => SizeHint::with_exact(0),
            RouterBody::Proxied(body) => body.size_hint(),
        }
    }
}
