//! One client connection, from the first byte to close, holding as little
//! memory as it can while it waits.
//!
//! An idle keep-alive connection is most of what a busy router holds: with
//! hyper driving a connection from accept to close, each one kept hyper's
//! HTTP/1 state between requests — an 8 KiB header write buffer, a read
//! buffer grown to 16 KiB, the boxed request future — about 23 KB
//! resident per connection (`tests/memory.rs`). So HTTP/1 is served in
//! *sessions*: a session starts when the client sends bytes and ends when
//! hyper is idle again after a response (no request in flight, waiting for
//! the next head); its buffers go with it, and what stays between requests
//! is this task, the socket and the connection's facts ([`ConnInfo`]).
//! Bytes the client sent ahead (a pipelined or partly sent next head) are
//! handed from one session to the next ([`Rewind`]).
//!
//! A connection that has sent nothing yet is only waiting in a 24-byte read
//! that tells an HTTP/2 preface from HTTP/1. HTTP/2 connections are served
//! by one hyper connection for their life (their streams multiplex; hyper's
//! h2 state has no idle point to end at).
//!
//! Timers: the first request head of each HTTP/1 session must arrive within
//! [`RouterConfig::head_timeout`] of the accept or of the previous
//! session's end (hyper's own header timer is off: this one covers every
//! head, since a session ends before each wait for a new one); a client
//! that stops reading a response is cut by the write watchdog (H28); an
//! HTTP/2 connection with nothing in flight is closed after
//! [`RouterConfig::client_idle`].
//!
//! An `Upgrade` (WebSocket) ends the session: hyper hands the socket back
//! and it goes to the byte pipe through `ConnInfo::on_upgrade`.
//!
//! [`RouterConfig::head_timeout`]: crate::RouterConfig::head_timeout
//! [`RouterConfig::client_idle`]: crate::RouterConfig::client_idle

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::server::{ConnInfo, Router};
use crate::watch::Watched;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A client byte stream the router can wait on while it holds no HTTP state
/// for it.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Ready when reading may make progress: the peer sent something or
    /// closed (or the socket failed). May be ready spuriously.
    fn poll_peer_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Reads what the peer has sent, now, without waiting for the event
    /// loop to report the stream readable; `Err(WouldBlock)` when nothing
    /// is there (and always, for a stream that cannot).
    fn read_now(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
}

impl ClientStream for TcpStream {
    fn poll_peer_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }

    /// One `recv` on the (non-blocking) socket, past tokio's readiness
    /// state, which for a new socket stays empty until the event loop has
    /// polled it once.
    fn read_now(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        io::Read::read(&mut &*socket2::SockRef::from(&*self), buf)
    }
}

impl ClientStream for tokio_rustls::server::TlsStream<TcpStream> {
    fn poll_peer_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (tcp, tls) = self.get_mut();
        // Records already read off the socket may hold plaintext or a close.
        match tls.process_new_packets() {
            Ok(state) if state.plaintext_bytes_to_read() > 0 || state.peer_has_closed() => {
                return Poll::Ready(Ok(()))
            }
            Ok(_) => {}
            Err(e) => return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e))),
        }
        tcp.poll_read_ready(cx)
    }
}

/// The upgraded client side of a `101 Switching Protocols`, for the byte
/// pipe.
pub type UpgradedClient = Box<dyn UpgradedIo>;

/// What the byte pipe needs of an upgraded client stream.
pub trait UpgradedIo: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> UpgradedIo for T {}

impl std::fmt::Debug for dyn UpgradedIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpgradedIo")
    }
}

/// At most how many bytes of several buffers [`Rewind`] gathers into one
/// write.
const GATHER: usize = 4096;

/// A stream with bytes read ahead put back in front of it.
#[derive(Debug)]
pub struct Rewind<S> {
    pre: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    /// `inner`, read after `pre`.
    pub fn new(pre: Bytes, inner: S) -> Self {
        Rewind { pre, inner }
    }

    /// The bytes not read yet from `pre`, and the stream.
    pub fn into_parts(self) -> (Bytes, S) {
        (self.pre, self.inner)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    /// A response head and a small body (hyper queues them as separate
    /// buffers) go out as one plain write of both: in the kernel, each
    /// extra buffer of a `writev` is another pass of the TCP send path's
    /// copy loop, and over TLS another record. Large bodies keep the
    /// vectored write, which copies nothing here.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if bufs.len() > 1 && total <= GATHER {
            // A buffer kept per thread: one on the stack would be zeroed
            // on every write, which costs more than the copy.
            thread_local!(static GATHERED: std::cell::RefCell<Vec<u8>> =
                std::cell::RefCell::new(Vec::with_capacity(GATHER)));
            return GATHERED.with_borrow_mut(|gathered| {
                gathered.clear();
                for b in bufs {
                    gathered.extend_from_slice(b);
                }
                Pin::new(&mut self.inner).poll_write(cx, gathered)
            });
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// hyper's connection settings, built once per listener.
pub(crate) struct Http {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

impl Http {
    pub(crate) fn new() -> Self {
        let mut h1 = http1::Builder::new();
        // Heads are timed by the session (see the module docs).
        h1.header_read_timeout(None)
            .max_headers(1000)
            .keep_alive(true);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new()).max_concurrent_streams(250);
        Http { h1, h2 }
    }
}

/// What one connection's task shares with its listener.
pub(crate) struct Client {
    pub(crate) router: Arc<Router>,
    pub(crate) http: Arc<Http>,
    /// Cancelled when the listener shuts down: idle connections close,
    /// busy ones finish their request.
    pub(crate) stop: CancellationToken,
}

/// Serves one client connection until it closes. `head_deadline`: the
/// first request head must be in by then.
pub(crate) async fn serve_client<S: ClientStream>(
    stream: S,
    info: ConnInfo,
    client: Client,
    head_deadline: Instant,
) {
    let info = Arc::new(info);
    let mut io = Watched::new(stream, info.watch.clone());
    let waiting = Idle::count(&client.router);
    // Nothing but these (empty) bytes exists for a connection that has
    // sent nothing: each read's buffer lives only while it is polled.
    let mut first = BytesMut::new();
    // A client sends its request right after connecting, so it is usually
    // there already: read it at once, rather than a turn of the event loop
    // later, when a new socket is first reported readable. Under a burst
    // of new connections that turn is the wait.
    let mut now = true;
    let h2 = loop {
        let read = match now.then(|| read_now(&mut io, &mut first)) {
            Some(Ok(read)) => Ok(read),
            Some(Err(e)) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => tokio::select! {
                r = poll_fn(|cx| read_first(&mut io, cx, &mut first)) => r,
                _ = tokio::time::sleep_until(head_deadline) => return,
                _ = client.stop.cancelled() => return,
            },
        };
        now = false;
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let n = first.len().min(PREFACE.len());
        if first[..n] != PREFACE[..n] {
            break false;
        }
        if n == PREFACE.len() {
            break true;
        }
    };
    let mut ahead = first.freeze();
    drop(waiting);
    if h2 {
        // Boxed: an HTTP/2 connection's state would otherwise size every
        // connection's task.
        return Box::pin(h2_connection(io, ahead, &info, &client, head_deadline)).await;
    }
    let config = &client.router.config;
    let mut deadline = head_deadline;
    // A new connection parks as soon as its first response is out; one
    // that was parked and spoke again within `park_idle_after` lingers.
    let mut linger = false;
    loop {
        // Boxed, so that a waiting connection's task does not carry the
        // size of hyper's connection state.
        match Box::pin(h1_session(io, ahead, &info, &client, deadline, linger)).await {
            Some((back, rest)) => (io, ahead) = (back, rest),
            None => return,
        }
        // Idle between requests: the next head (or the client's close)
        // must come within the head timeout.
        let parked = Instant::now();
        deadline = parked + config.head_timeout.min(config.client_idle);
        linger = !config.park_idle_after.is_zero();
        if ahead.is_empty() {
            let _waiting = Idle::count(&client.router);
            tokio::select! {
                ready = poll_fn(|cx| io.get_mut().poll_peer_ready(cx)) => if ready.is_err() {
                    return;
                },
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::debug!(peer = %info.peer, "keep-alive connection idle; closing");
                    return;
                }
                _ = client.stop.cancelled() => return,
            }
            linger &= parked.elapsed() < config.park_idle_after;
        }
    }
}

/// Bytes a client connection's first read takes at most: a whole usual
/// request head, so that hyper does not need a second system call for it.
const FIRST_READ: usize = 4096;

/// Reads what the client has sent so far onto `into`; `Ok(0)` at its end.
/// The read's buffer is on the stack of this poll only, so a connection
/// that waits for its first bytes holds none.
fn read_first<S: AsyncRead + Unpin>(
    io: &mut S,
    cx: &mut Context<'_>,
    into: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); FIRST_READ];
    let mut read = ReadBuf::uninit(&mut buf);
    ready!(Pin::new(io).poll_read(cx, &mut read))?;
    into.extend_from_slice(read.filled());
    Poll::Ready(Ok(read.filled().len()))
}

/// [`ClientStream::read_now`] onto `into`, through the watch.
fn read_now<S: ClientStream>(io: &mut Watched<S>, into: &mut BytesMut) -> io::Result<usize> {
    // A buffer kept per thread, zeroed once: one on the stack would be
    // zeroed for every new connection (4 KiB), which costs more than the
    // read's copy. `read_first` reads into uninitialised memory through
    // tokio instead.
    thread_local!(static SCRATCH: std::cell::RefCell<Box<[u8; FIRST_READ]>> =
        std::cell::RefCell::new(Box::new([0; FIRST_READ])));
    let n = SCRATCH.with_borrow_mut(|buf| {
        let n = io.get_mut().read_now(&mut buf[..])?;
        into.extend_from_slice(&buf[..n]);
        Ok::<_, io::Error>(n)
    })?;
    if n > 0 {
        io.note_read();
    }
    Ok(n)
}

/// Counts a connection in [`Router::idle_connections`] while it lives.
struct Idle<'a>(&'a Router);

impl<'a> Idle<'a> {
    fn count(router: &'a Router) -> Self {
        router.idle.fetch_add(1, Ordering::Relaxed);
        Idle(router)
    }
}

impl Drop for Idle<'_> {
    fn drop(&mut self) {
        self.0.idle.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The service hyper calls for each request on a connection.
fn service(
    router: &Arc<Router>,
    info: &Arc<ConnInfo>,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<crate::body::RouterBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<hyper::Response<crate::body::RouterBody>, Infallible>> + Send,
> + Clone
       + Send
       + Unpin {
    let router = router.clone();
    let info = info.clone();
    service_fn(move |req| respond(router.clone(), info.clone(), req))
}

/// The HTTP/2 service: each stream is a task of its own, which hyper
/// spawns with the stream's future inside. The request's future is large
/// (every phase of the proxy lives in it), and a spawn moves it three
/// times on its way into the task (measured: ~2,300 instructions of
/// copying a request); boxed, what moves is a pointer.
fn h2_service(
    router: &Arc<Router>,
    info: &Arc<ConnInfo>,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<crate::body::RouterBody>,
    Error = Infallible,
    Future = std::pin::Pin<Box<impl Future<Output = Answer> + Send>>,
> + Clone
       + Send
       + Unpin {
    let router = router.clone();
    let info = info.clone();
    service_fn(move |req| Box::pin(respond(router.clone(), info.clone(), req)))
}

/// What a service answers a request with.
type Answer = Result<hyper::Response<crate::body::RouterBody>, Infallible>;

/// Answers one request on a client connection.
async fn respond(
    router: Arc<Router>,
    info: Arc<ConnInfo>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Answer {
    let busy = info.watch.busy();
    let mut resp = crate::proxy::handle(&router, &info, req).await;
    resp.body_mut().track(busy);
    Ok(resp)
}

/// How the first phase of a session ended.
enum Turn {
    /// hyper finished the connection (closed, failed, or upgraded).
    Done,
    /// A response is out and nothing is in flight: end the session.
    Idle,
    /// Cut: no head in time, a stalled client, or shutdown's grace ran out.
    Cut,
}

/// One HTTP/1 session over `io` with `ahead` in front. Returns the stream
/// and any bytes read ahead when the session ended at an idle point, `None`
/// when the connection is over. Without `linger` the session ends as soon
/// as a response is out and nothing is in flight; with it, once a whole
/// [`RouterConfig::park_idle_after`] passed so.
///
/// [`RouterConfig::park_idle_after`]: crate::RouterConfig::park_idle_after
async fn h1_session<S: ClientStream>(
    io: Watched<S>,
    ahead: Bytes,
    info: &Arc<ConnInfo>,
    client: &Client,
    head_deadline: Instant,
    linger: bool,
) -> Option<(Watched<S>, Bytes)> {
    let watch = &info.watch;
    let started = watch.requests();
    let mut conn = client.http.h1.serve_connection(
        TokioIo::new(Rewind::new(ahead, io)),
        service(&client.router, info),
    );
    let config = &client.router.config;
    // One timer, never touched per request: the head deadline until a
    // request starts, then a tick every `period` that ends a lingering
    // session once a whole period passed with no request started and none
    // in flight.
    let period = if linger {
        config.park_idle_after
    } else {
        config.head_timeout
    }
    .max(Duration::from_millis(1));
    let timer = tokio::time::sleep_until(head_deadline.min(Instant::now() + period));
    tokio::pin!(timer);
    let mut last = started;
    let stalled = watch.stalled();
    tokio::pin!(stalled);
    let stopping = client.stop.cancelled();
    tokio::pin!(stopping);
    let forcing = client.router.forcing();
    tokio::pin!(forcing);
    let mut closing = false;
    let turn = poll_fn(|cx| {
        if Pin::new(&mut conn).poll(cx).is_ready() {
            return Poll::Ready(Turn::Done);
        }
        if !linger && !closing && watch.requests() != started && watch.in_flight() == 0 {
            return Poll::Ready(Turn::Idle);
        }
        while timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            let requests = watch.requests();
            if requests == started {
                if now >= head_deadline {
                    tracing::debug!(peer = %info.peer, "no request head in time; closing");
                    return Poll::Ready(Turn::Cut);
                }
                timer.as_mut().reset(head_deadline.min(now + period));
                continue;
            }
            if linger && requests == last && watch.in_flight() == 0 && !closing {
                return Poll::Ready(Turn::Idle);
            }
            last = requests;
            timer.as_mut().reset(now + period);
        }
        // The client stopped reading for the idle window: cut it (H28).
        if stalled.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Turn::Cut);
        }
        if !closing && stopping.as_mut().poll(cx).is_ready() {
            closing = true;
            Pin::new(&mut conn).graceful_shutdown();
            cx.waker().wake_by_ref();
        }
        if closing && forcing.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Turn::Cut);
        }
        Poll::Pending
    })
    .await;
    match turn {
        Turn::Done => {
            if let Some(upgraded) = info.take_upgrade() {
                // hyper hands the socket back after `101`; the pipe takes it.
                let parts = conn.into_parts();
                let (rest, io) = parts.io.into_inner().into_parts();
                let ahead = join(parts.read_buf, rest);
                let _ = upgraded.send(Box::new(Rewind::new(ahead, io)));
            }
            None
        }
        Turn::Cut => {
            if closing {
                // Keep driving the connection a moment so cut requests
                // observe the cut and write their H24 lines.
                let _ = tokio::time::timeout(Duration::from_millis(50), &mut conn).await;
            }
            None
        }
        Turn::Idle => {
            // hyper is idle: this closes the session without a byte to the
            // client, and gives the socket back once what is written is
            // flushed (within the write watchdog or the idle window).
            Pin::new(&mut conn).graceful_shutdown();
            let parts = tokio::select! {
                parts = conn.without_shutdown() => parts.ok()?,
                _ = &mut stalled => return None,
                // A client that never reads a router page arms no watchdog.
                _ = tokio::time::sleep(config.client_idle) => return None,
                _ = &mut forcing => return None,
            };
            let (rest, io) = parts.io.into_inner().into_parts();
            let ahead = join(parts.read_buf, rest);
            // A `101` whose flush waited ends the session here too.
            if let Some(upgraded) = info.take_upgrade().filter(|u| !u.is_closed()) {
                let _ = upgraded.send(Box::new(Rewind::new(ahead, io)));
                return None;
            }
            Some((io, ahead))
        }
    }
}

/// `a` then `b`, in memory of their own: `a` is a view into hyper's read
/// buffer (8–16 KiB), which must not outlive the session for a few bytes
/// read ahead, or for none.
fn join(a: Bytes, b: Bytes) -> Bytes {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Bytes::new(),
        (true, false) => b,
        _ => {
            let mut both = Vec::with_capacity(a.len() + b.len());
            both.extend_from_slice(&a);
            both.extend_from_slice(&b);
            both.into()
        }
    }
}

/// An HTTP/2 connection, served by one hyper connection for its life.
async fn h2_connection<S: ClientStream>(
    io: Watched<S>,
    ahead: Bytes,
    info: &Arc<ConnInfo>,
    client: &Client,
    head_deadline: Instant,
) {
    let watch = &info.watch;
    let started = watch.requests();
    let conn = client.http.h2.serve_connection(
        TokioIo::new(Rewind::new(ahead, io)),
        h2_service(&client.router, info),
    );
    tokio::pin!(conn);
    let stalled = watch.stalled();
    tokio::pin!(stalled);
    let idle = watch.idle(client.router.config.client_idle);
    tokio::pin!(idle);
    let head_timer = tokio::time::sleep_until(head_deadline);
    tokio::pin!(head_timer);
    let mut awaiting_head = true;
    let mut closing = false;
    loop {
        tokio::select! {
            _ = &mut conn => break,
            // The client stopped reading for the idle window: cut it (H28).
            _ = &mut stalled => break,
            // Nothing in flight and not a byte either way: close quietly.
            _ = &mut idle => {
                tracing::debug!(peer = %info.peer, "client connection idle; closing");
                break;
            }
            _ = &mut head_timer, if awaiting_head => {
                if watch.requests() != started {
                    awaiting_head = false;
                } else {
                    tracing::debug!(peer = %info.peer, "no request head in time; closing");
                    break;
                }
            }
            _ = client.stop.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = client.router.forcing(), if closing => {
                let _ = tokio::time::timeout(Duration::from_millis(50), &mut conn).await;
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A stream that records each write: plain (its bytes) or vectored
    /// (how many buffers).
    #[derive(Default)]
    struct Recorder(Vec<Result<Vec<u8>, usize>>);

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.0.push(Ok(buf.to_vec()));
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.0.push(Err(bufs.len()));
            Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_small_head_and_body_leave_in_one_write_and_a_large_body_is_not_copied() {
        use tokio::io::AsyncWriteExt;
        let mut w = Rewind::new(Bytes::new(), Recorder::default());
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n";
        let n = w
            .write_vectored(&[io::IoSlice::new(head), io::IoSlice::new(b"ok")])
            .await
            .expect("write");
        assert_eq!(n, head.len() + 2);
        let big = vec![7u8; GATHER];
        let n = w
            .write_vectored(&[io::IoSlice::new(head), io::IoSlice::new(&big)])
            .await
            .expect("write");
        assert_eq!(n, head.len() + GATHER);
        let mut both = head.to_vec();
        both.extend_from_slice(b"ok");
        assert_eq!(w.inner.0, vec![Ok(both), Err(2)]);
    }

    #[tokio::test]
    async fn read_now_takes_what_arrived_and_never_waits() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (mut server, _) = listener.accept().await.expect("accept");
        let mut buf = [0u8; 64];
        let nothing = server.read_now(&mut buf).expect_err("nothing sent yet");
        assert_eq!(nothing.kind(), io::ErrorKind::WouldBlock);

        tokio::io::AsyncWriteExt::write_all(&mut client, b"GET / HTTP/1.1\r\n")
            .await
            .expect("write");
        server.readable().await.expect("readable");
        let n = server.read_now(&mut buf).expect("read");
        assert_eq!(&buf[..n], b"GET / HTTP/1.1\r\n");

        // Through the watch: the bytes land after what is already there.
        tokio::io::AsyncWriteExt::write_all(&mut client, b"Host: a\r\n")
            .await
            .expect("write");
        server.readable().await.expect("readable");
        let watch = Arc::new(crate::watch::ClientWatch::default());
        let mut watched = Watched::new(server, watch.clone());
        let mut into = BytesMut::from(&b"ahead "[..]);
        let n = read_now(&mut watched, &mut into).expect("read");
        assert_eq!(n, 9);
        assert_eq!(&into[..], b"ahead Host: a\r\n");

        drop(client);
        watched.get_mut().readable().await.expect("readable");
        assert_eq!(read_now(&mut watched, &mut into).expect("eof"), 0);
    }

    #[tokio::test]
    async fn rewind_reads_what_was_put_back_first() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut r = Rewind::new(Bytes::from_static(b"GET "), a);
        tokio::io::AsyncWriteExt::write_all(&mut b, b"/ HTTP/1.1")
            .await
            .expect("write");
        let mut got = [0u8; 2];
        r.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"GE");
        let mut rest = [0u8; 12];
        r.read_exact(&mut rest).await.expect("read");
        assert_eq!(&rest, b"T / HTTP/1.1");
        let (left, _) = r.into_parts();
        assert!(left.is_empty());
    }

    #[test]
    fn join_copies_what_it_keeps_out_of_hypers_buffer() {
        let a = Bytes::from_static(b"ab");
        assert_eq!(join(a.clone(), Bytes::new()), a);
        assert_eq!(join(Bytes::new(), a.clone()), a);
        assert_eq!(join(a.clone(), Bytes::from_static(b"cd")), "abcd");
        // A view into a large buffer is copied out of it.
        let big = Bytes::from(vec![7u8; 16 * 1024]);
        let joined = join(big.slice(..3), Bytes::new());
        assert_eq!(joined, [7u8; 3][..]);
        assert_ne!(
            joined.as_ptr(),
            big.as_ptr(),
            "still a view of the big buffer"
        );
    }
}
