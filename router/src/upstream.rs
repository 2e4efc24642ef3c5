//! The router's HTTP/1.1 client: one connection to a dyno (or to the
//! router that owns an app), driven by the request's own task.
//!
//! A request is written and its response read by the task that handles
//! the client's request: no connection task, no channel between the two,
//! no wake-up handed across tasks. The response body owns the connection
//! while it streams ([`DynoBody`]), keeps sending what is left of the
//! request body (a dyno may answer before it has read the upload), and
//! gives the connection back for the pool only when both messages ended
//! cleanly and the dyno did not ask to close it. After `101 Switching
//! Protocols` the socket, with whatever the dyno sent past its head,
//! becomes the dyno's end of the byte pipe ([`Upgraded`]).
//!
//! Heads and chunked bodies are parsed without I/O in [`codec`].

pub mod codec;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{header, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::body::{BoxError, RequestBody};
use crate::headers::Forwarding;
use codec::{Chunk, Chunked, Framing, Malformed, RequestFraming};

/// First read size; doubled while reads fill it, up to [`MAX_READ`].
const MIN_READ: usize = 8 * 1024;

/// Largest read from a dyno at once.
const MAX_READ: usize = 128 * 1024;

/// Largest write buffer an idle pooled connection keeps.
const KEEP_BUFFER: usize = 64 * 1024;

/// Body bytes gathered behind a request head (or each other) before they
/// are written.
const COALESCE: usize = 16 * 1024;

/// Why a connection could not be set up. Only these are ever retried.
#[derive(Debug)]
pub enum ConnectError {
    /// The connect did not finish within the connect timeout (H19).
    Timeout,
    /// The dyno refused or reset the connection (H21).
    Refused(io::Error),
}

/// Why a request got no usable response head.
#[derive(Debug)]
pub enum Error {
    /// The connection closed or failed before a whole head arrived (H13);
    /// the error, when there was one.
    Closed(Option<io::Error>),
    /// The head was not HTTP (H17) or could not be trusted (H25).
    Malformed(Malformed),
    /// The client's body failed on the way (what failed is in the
    /// request's [`crate::body::Progress`]).
    Body(BoxError),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Closed(None) => f.write_str("connection closed before a response"),
            Error::Closed(Some(e)) => write!(f, "connection failed before a response: {e}"),
            Error::Malformed(m) => f.write_str(m.message()),
            Error::Body(e) => write!(f, "request body: {e}"),
        }
    }
}

impl std::error::Error for Error {}

/// An open HTTP/1.1 connection, idle between requests.
#[derive(Debug)]
pub struct Conn {
    io: TcpStream,
    /// Where it goes, for a fresh connection when a pooled one turns out
    /// stale ([`round_trip`]); `None` for a socket connected elsewhere.
    peer: Option<SocketAddr>,
    /// It has carried a response before (it came from the pool).
    reused: bool,
    /// Bytes read and not yet parsed.
    read: BytesMut,
    /// Bytes to write; reused from request to request.
    write: Vec<u8>,
    /// The next read's size.
    read_size: usize,
}

/// Opens a connection to `addr` within `timeout`.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Box<Conn>, ConnectError> {
    let io = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(ConnectError::Timeout),
        Ok(Err(e)) => return Err(ConnectError::Refused(e)),
        Ok(Ok(s)) => s,
    };
    let _ = io.set_nodelay(true);
    let mut conn = Conn::new(io);
    conn.peer = Some(addr);
    Ok(Box::new(conn))
}

impl Conn {
    /// Wraps a connected socket.
    pub fn new(io: TcpStream) -> Self {
        Conn {
            io,
            peer: None,
            reused: false,
            read: BytesMut::new(),
            write: Vec::new(),
            read_size: MIN_READ,
        }
    }

    /// Whether an idle connection can carry a request: the peer has not
    /// closed it and sent nothing unasked. Costs a system call only when
    /// the socket has become readable since it was last read dry.
    pub fn is_open(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Waits until the socket is readable (tests).
    #[cfg(test)]
    pub(crate) async fn readable(&self) {
        let _ = self.io.readable().await;
    }

    /// Reads what the dyno sent into the buffer; `Ok(0)` at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.read.reserve(self.read_size);
        let spare = self.read.capacity() - self.read.len();
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.read
        ))?;
        if n == spare {
            self.read_size = (self.read_size * 2).min(MAX_READ);
        } else if n < self.read_size / 4 {
            self.read_size = (self.read_size / 2).max(MIN_READ);
        }
        Poll::Ready(Ok(n))
    }

    /// Reads until a whole response head is in; skips interim responses.
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        head_request: bool,
    ) -> Poll<Result<codec::Head, Error>> {
        loop {
            if !self.read.is_empty() {
                if let Some(head) =
                    codec::parse_head(&mut self.read, head_request).map_err(Error::Malformed)?
                {
                    return Poll::Ready(Ok(head));
                }
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) => return Poll::Ready(Err(Error::Closed(None))),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(Error::Closed(Some(e)))),
            }
        }
    }
}

/// The request on its way out: head first, then the body as it comes.
#[derive(Debug)]
struct Outbound {
    body: Option<RequestBody>,
    framing: RequestFraming,
    /// Body bytes still owed under `Content-Length`.
    left: u64,
    /// Bytes of `Conn::write` already written.
    pos: usize,
    /// Keep the written bytes in `Conn::write`, to send them again.
    keep: bool,
}

/// How sending a request failed.
enum SendError {
    Io(io::Error),
    Body(BoxError),
}

impl Outbound {
    /// Writes the head and the body until both are out (`Ready(Ok)`), the
    /// socket or the body blocks (`Pending`), or either fails.
    fn poll_send(&mut self, conn: &mut Conn, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        loop {
            // Gather body frames that are already here behind what is
            // queued, so a small body leaves with its head.
            if conn.write.len() - self.pos < COALESCE {
                if let Some(body) = self.body.as_mut() {
                    match Pin::new(body).poll_frame(cx) {
                        Poll::Ready(frame) => {
                            self.take(frame, &mut conn.write).map_err(SendError::Body)?;
                            continue;
                        }
                        Poll::Pending => {}
                    }
                }
            }
            if self.pos < conn.write.len() {
                match Pin::new(&mut conn.io).poll_write(cx, &conn.write[self.pos..]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(SendError::Io(io::ErrorKind::WriteZero.into())))
                    }
                    Poll::Ready(Ok(n)) => self.pos += n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(SendError::Io(e))),
                    Poll::Pending => return Poll::Pending,
                }
                if self.pos == conn.write.len() && !self.keep {
                    conn.write.clear();
                    self.pos = 0;
                }
                continue;
            }
            return if self.body.is_none() {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            };
        }
    }

    /// Queues one polled body frame (or the body's end) in `out`.
    fn take(
        &mut self,
        frame: Option<Result<Frame<Bytes>, BoxError>>,
        out: &mut Vec<u8>,
    ) -> Result<(), BoxError> {
        match frame {
            None => {
                self.body = None;
                match self.framing {
                    RequestFraming::Chunked => out.extend_from_slice(codec::LAST_CHUNK),
                    RequestFraming::Length(_) if self.left != 0 => {
                        return Err("request body shorter than its content-length".into())
                    }
                    _ => {}
                }
            }
            Some(Err(e)) => {
                self.body = None;
                return Err(e);
            }
            Some(Ok(frame)) => {
                // Trailers from the client are not passed on.
                if let Ok(data) = frame.into_data() {
                    match self.framing {
                        RequestFraming::Length(_) => {
                            if data.len() as u64 > self.left {
                                self.body = None;
                                return Err("request body longer than its content-length".into());
                            }
                            self.left -= data.len() as u64;
                            out.extend_from_slice(&data);
                        }
                        RequestFraming::Chunked => codec::encode_chunk(out, &data),
                        RequestFraming::Empty => {}
                    }
                }
            }
        }
        Ok(())
    }
}

/// Sends `req` over `conn` and waits for the response head; `forwarding`
/// is written into the head in place of the client's fields of those
/// names. A request that still carries `Upgrade` asks to switch protocols:
/// a `101` to it hands over the socket ([`DynoBody::into_upgraded`]).
///
/// A pooled connection can be closed by the dyno (its keep-alive timeout)
/// while the request is on its way: the dyno never saw it. When that
/// connection ends without a byte of response, and the request has no
/// body and an idempotent method (RFC 9110 §9.2.2; a proxy must not retry
/// any other, RFC 9112 §9.3.1.1), the same bytes go once more over a new
/// connection, made within `connect_timeout`; `retried` is called. Any
/// other early end is [`Error::Closed`] (H13).
pub async fn round_trip(
    mut conn: Box<Conn>,
    req: Request<RequestBody>,
    forwarding: Option<Forwarding<'_>>,
    connect_timeout: Duration,
    retried: impl FnOnce(),
) -> Result<Response<DynoBody>, Error> {
    let (parts, body) = req.into_parts();
    let upgrade = parts.headers.contains_key(header::UPGRADE);
    let head_request = parts.method == http::Method::HEAD;
    let framing = match parts.headers.get(header::CONTENT_LENGTH) {
        Some(v) => RequestFraming::Length(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0),
        ),
        None if body.is_end_stream() => RequestFraming::Empty,
        None => RequestFraming::Chunked,
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    conn.write.clear();
    codec::encode_request_head(
        &mut conn.write,
        &parts.method,
        path,
        &parts.headers,
        framing,
        forwarding.as_ref(),
    );
    let mut out = Outbound {
        body: (framing != RequestFraming::Empty && !body.is_end_stream()).then_some(body),
        framing,
        left: match framing {
            RequestFraming::Length(n) => n,
            _ => 0,
        },
        pos: 0,
        keep: false,
    };
    if out.body.is_none() {
        // Nothing will come: a promised length is owed all the same.
        if let RequestFraming::Length(n) = framing {
            if n != 0 {
                return Err(Error::Body(
                    "request body shorter than its content-length".into(),
                ));
            }
        }
    }
    // The whole request is in `conn.write`: it can be sent again.
    let replayable = out.body.is_none()
        && matches!(
            parts.method,
            http::Method::GET
                | http::Method::HEAD
                | http::Method::OPTIONS
                | http::Method::TRACE
                | http::Method::PUT
                | http::Method::DELETE
        );
    out.keep = replayable;
    let mut retried = Some(retried);
    let (head, sending, write_error) = loop {
        let mut sending = true;
        let mut write_error = None;
        let head = std::future::poll_fn(|cx| {
            if sending {
                match out.poll_send(&mut conn, cx) {
                    Poll::Ready(Ok(())) => sending = false,
                    Poll::Ready(Err(SendError::Body(e))) => {
                        return Poll::Ready(Err(Error::Body(e)))
                    }
                    Poll::Ready(Err(SendError::Io(e))) => {
                        // The dyno may have answered before it stopped
                        // reading (413 to an upload): look for that answer.
                        sending = false;
                        out.body = None;
                        write_error = Some(e);
                    }
                    Poll::Pending => {}
                }
            }
            conn.poll_head(cx, head_request)
        })
        .await;
        match head {
            Ok(head) => break (head, sending, write_error),
            Err(Error::Closed(e)) => {
                let e = e.or(write_error);
                let stale = replayable && conn.reused && conn.read.is_empty();
                match (stale, conn.peer, retried.take()) {
                    (true, Some(addr), Some(retried)) => {
                        let Ok(mut fresh) = connect(addr, connect_timeout).await else {
                            return Err(Error::Closed(e));
                        };
                        retried();
                        fresh.write = std::mem::take(&mut conn.write);
                        out.pos = 0;
                        conn = fresh;
                    }
                    _ => return Err(Error::Closed(e)),
                }
            }
            Err(e) => return Err(e),
        }
    };
    let switching = head.status == http::StatusCode::SWITCHING_PROTOCOLS;
    if switching && !upgrade {
        return Err(Error::Malformed(Malformed::Head(
            "101 Switching Protocols to a request that asked for no upgrade",
        )));
    }
    let state = match head.framing {
        Framing::Empty => State::Done,
        Framing::Length(n) => State::Length(n),
        Framing::Chunked => State::Chunked(Chunked::default()),
        Framing::Close => State::Close,
    };
    let body = DynoBody {
        conn: Some(conn),
        state,
        out: (sending && write_error.is_none()).then(|| Box::new(out)),
        keep_alive: head.keep_alive && write_error.is_none(),
        upgrade: switching,
    };
    let mut response = Response::new(body);
    *response.status_mut() = head.status;
    *response.version_mut() = head.version;
    *response.headers_mut() = head.headers;
    Ok(response)
}

/// Where a response body stands.
#[derive(Debug)]
enum State {
    /// This many bytes to go.
    Length(u64),
    /// A chunked body.
    Chunked(Chunked),
    /// Until the dyno closes.
    Close,
    /// Ended cleanly.
    Done,
    /// Failed; the error goes out on the next poll, so that what came
    /// before it is flushed to the client first (hyper drops a
    /// connection's unwritten bytes when a body fails).
    Failing(Option<BoxError>),
    /// Ended in an error.
    Failed,
}

/// A dyno's response body, read straight off its connection.
#[derive(Debug)]
pub struct DynoBody {
    conn: Option<Box<Conn>>,
    state: State,
    /// What is left of the request body, still being sent.
    out: Option<Box<Outbound>>,
    /// The dyno allows another request on the connection.
    keep_alive: bool,
    /// The response is `101` to an upgrade: the socket is handed over.
    upgrade: bool,
}

impl DynoBody {
    /// The connection, when both messages ended cleanly and it may carry
    /// another request.
    pub fn take_reusable(&mut self) -> Option<Box<Conn>> {
        let clean = matches!(self.state, State::Done)
            && self.keep_alive
            && self.out.is_none()
            && !self.upgrade;
        match self.conn.take() {
            Some(mut conn) if clean && conn.read.is_empty() => {
                // Reads are bounded by MAX_READ; the write buffer grows to
                // the largest body frame of an upload, which an idle
                // connection should not keep for the pool's idle window.
                if conn.write.capacity() > KEEP_BUFFER {
                    conn.write = Vec::new();
                }
                conn.reused = true;
                Some(conn)
            }
            _ => None,
        }
    }

    /// After `101 Switching Protocols`: the dyno's socket for the pipe.
    pub fn into_upgraded(&mut self) -> Option<Upgraded> {
        if !self.upgrade {
            return None;
        }
        let conn = self.conn.take()?;
        let Conn { io, read, .. } = *conn;
        Some(Upgraded {
            io,
            pre: read.freeze(),
        })
    }

    fn fail(
        &mut self,
        why: BoxError,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.state = State::Failing(Some(why));
        self.keep_alive = false;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Body for DynoBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(out) = this.out.as_mut() {
            match out.poll_send(conn, cx) {
                Poll::Ready(Ok(())) => this.out = None,
                Poll::Ready(Err(_)) => {
                    // The response goes on; the connection will not.
                    this.out = None;
                    this.keep_alive = false;
                }
                Poll::Pending => {}
            }
        }
        loop {
            match &mut this.state {
                State::Done | State::Failed => return Poll::Ready(None),
                State::Failing(why) => {
                    let why = why.take();
                    this.state = State::Failed;
                    return Poll::Ready(why.map(Err));
                }
                State::Length(left) => {
                    if !conn.read.is_empty() {
                        let take = (conn.read.len() as u64).min(*left) as usize;
                        let data = conn.read.split_to(take).freeze();
                        *left -= take as u64;
                        if *left == 0 {
                            this.state = State::Done;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                State::Chunked(decoder) => match decoder.decode(&mut conn.read) {
                    Ok(Chunk::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Chunk::End) => {
                        this.state = State::Done;
                        return Poll::Ready(None);
                    }
                    Ok(Chunk::More) => {}
                    Err(m) => return this.fail(m.message().into(), cx),
                },
                State::Close => {
                    if !conn.read.is_empty() {
                        let data = conn.read.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if matches!(this.state, State::Close) => {
                    this.state = State::Done;
                    this.keep_alive = false;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    return this.fail(
                        Box::new(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "dyno closed the connection mid-body",
                        )),
                        cx,
                    )
                }
                Ok(_) => {}
                Err(e) => return this.fail(Box::new(e), cx),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done | State::Failed) || self.conn.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(left) => SizeHint::with_exact(left),
            State::Done | State::Failed => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// The dyno's socket after `101 Switching Protocols`, starting with any
/// bytes it sent right behind its head.
#[derive(Debug)]
pub struct Upgraded {
    io: TcpStream,
    pre: Bytes,
}

impl AsyncRead for Upgraded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.pre.is_empty() {
            let n = this.pre.len().min(buf.remaining());
            buf.put_slice(&this.pre[..n]);
            this.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
