//! Log sessions: what `heroku logs [--tail]` reads.
//!
//! The control plane creates a session ([`Logplex::create_session`]) and
//! hands the client the URL `http://<logplex-http>/sessions/<id>`. A `GET`
//! there streams recent lines first, then live lines if tailing, as
//! Server-Sent Events (`data: <line>\n\n`) when the client accepts
//! `text/event-stream` (the `heroku` CLI does), else as chunked `text/plain`
//! (one line per `\n`). A session not fetched within `session_ttl` of its
//! creation or last fetch expires.
//!
//! [`Logplex::create_session`]: crate::Logplex::create_session

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::time::Instant;

use crate::channel::LiveTail;
use crate::drain::Loss;
use crate::message::{self, LogLine, PRI_LOSS};

/// Lines a session shows by default.
pub const DEFAULT_LINES: usize = 100;

/// What a log session shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionParams {
    /// Recent lines first (default 100, at most the history size, 1500).
    pub lines: Option<usize>,
    /// Keep streaming live lines after the recent ones.
    pub tail: bool,
    /// Only lines of this source: `app` or `heroku`.
    pub source: Option<String>,
    /// Only lines of this dyno (`web.1`) or process type (`web`).
    pub dyno: Option<String>,
}

#[derive(Debug)]
struct Entry {
    app_id: String,
    params: SessionParams,
    expires: Instant,
}

/// The sessions created and not yet expired.
#[derive(Debug)]
pub struct Sessions {
    ttl: Duration,
    map: Mutex<HashMap<String, Entry>>,
    /// Opens grants signed by control nodes running apart.
    grants: Option<crate::GrantKey>,
}

impl Sessions {
    /// No sessions; each lives `ttl` after creation or last use. With
    /// `grants`, a signed grant ([`crate::grant`]) opens too.
    pub fn new(ttl: Duration, grants: Option<crate::GrantKey>) -> Self {
        Self {
            ttl,
            map: Mutex::new(HashMap::new()),
            grants,
        }
    }

    /// Registers a session; returns its id.
    pub fn create(&self, app_id: &str, params: SessionParams) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, e| e.expires > now);
        map.insert(
            id.clone(),
            Entry {
                app_id: app_id.to_string(),
                params,
                expires: now + self.ttl,
            },
        );
        id
    }

    /// The session's app and parameters, if it exists and has not expired;
    /// using it extends its life.
    pub fn open(&self, id: &str) -> Option<(String, SessionParams)> {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(id) {
            Some(e) if e.expires > now => {
                e.expires = now + self.ttl;
                Some((e.app_id.clone(), e.params.clone()))
            }
            Some(_) => {
                map.remove(id);
                None
            }
            None => {
                drop(map);
                let key = self.grants.as_ref()?;
                match key.verify(id, crate::grant::unix_now()) {
                    Ok(opened) => Some(opened),
                    Err(e) => {
                        tracing::debug!(error = %e, "a session id that does not open");
                        None
                    }
                }
            }
        }
    }

    /// Sessions alive.
    pub fn len(&self) -> usize {
        let now = Instant::now();
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.values().filter(|e| e.expires > now).count()
    }

    /// Whether no session is alive.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How a session's lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `data: <line>\n\n`.
    EventStream,
    /// `<line>\n`.
    Text,
}

impl Format {
    fn write(self, line: &LogLine, out: &mut Vec<u8>) {
        if self == Format::EventStream {
            out.extend_from_slice(b"data: ");
        }
        // One line, even if a message held a newline: an SSE event must not
        // be cut short by one.
        line.write_text(out);
        out.extend_from_slice(if self == Format::EventStream {
            b"\n\n"
        } else {
            b"\n"
        });
    }
}

/// Coalesce at most this many bytes into one body chunk.
const CHUNK: usize = 32 * 1024;

/// An idle SSE tail sends a comment this often, so proxies and clients
/// keep the stream open and a gone client is noticed.
pub const KEEPALIVE: Duration = Duration::from_secs(25);

/// Live lines taken from the tail's queue per lock: a batch from the
/// channel is usually written as one chunk.
const TAKE_LINES: usize = 256;

/// The response body of a session: recent lines, then live ones.
#[derive(Debug)]
pub struct SessionBody {
    format: Format,
    recent: VecDeque<LogLine>,
    live: Option<LiveTail>,
    /// Lines taken from the tail's queue, formatted outside its lock.
    taken: Vec<LogLine>,
    keepalive: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl SessionBody {
    /// A body over `recent` lines and, when tailing, a live queue.
    pub fn new(format: Format, recent: Vec<LogLine>, live: Option<LiveTail>) -> Self {
        let keepalive = (format == Format::EventStream && live.is_some())
            .then(|| Box::pin(tokio::time::sleep(KEEPALIVE)));
        Self {
            format,
            recent: recent.into(),
            live,
            taken: Vec::new(),
            keepalive,
        }
    }

    fn write_loss(&self, loss: Loss, out: &mut Vec<u8>) {
        let line = LogLine::now(
            PRI_LOSS,
            "heroku",
            "logplex",
            &message::l11(loss.count, loss.since),
        );
        self.format.write(&line, out);
    }
}

impl Body for SessionBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        let mut out = Vec::new();
        while out.len() < CHUNK {
            match this.recent.pop_front() {
                Some(line) => this.format.write(&line, &mut out),
                None => break,
            }
        }
        if !out.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
        }
        let Some(live) = this.live.as_ref() else {
            return Poll::Ready(None);
        };
        let mut wrote = false;
        while out.len() < CHUNK {
            match live.poll_take(cx, &mut this.taken, TAKE_LINES) {
                Poll::Ready(Some(loss)) => {
                    if out.is_empty() {
                        let bytes: usize = this.taken.iter().map(|l| l.msg().len() + 64).sum();
                        out.reserve(bytes.min(2 * CHUNK));
                    }
                    for line in this.taken.drain(..) {
                        this.format.write(&line, &mut out);
                    }
                    if let Some(loss) = loss {
                        this.write_loss(loss, &mut out);
                    }
                    wrote = true;
                }
                Poll::Ready(None) if !wrote => {
                    this.live = None;
                    return Poll::Ready(None);
                }
                // The channel is gone: end after this chunk. Or nothing
                // more waiting: the next batch wakes this task.
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        if wrote {
            if let Some(k) = this.keepalive.as_mut() {
                k.as_mut().reset(Instant::now() + KEEPALIVE);
            }
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
        }
        let Some(k) = this.keepalive.as_mut() else {
            return Poll::Pending;
        };
        if k.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        k.as_mut().reset(Instant::now() + KEEPALIVE);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
            b": keep-alive\n\n",
        )))))
    }

    fn is_end_stream(&self) -> bool {
        self.recent.is_empty() && self.live.is_none()
    }
}
