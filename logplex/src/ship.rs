//! The shipper: router lines of a router running apart, sent to the log
//! router that owns each app's channel over octet-counted syslog. A log
//! router of a cluster forwards the lines it ingests for channels a peer
//! owns through one too ([`Shipper::forward`], [`Sender::LogRouter`]):
//! those are whole frames already, and skip step 2's formatting.
//!
//! # The path of a line
//!
//! 1. **Request path** ([`Shipper::enqueue`]): the line's bytes go into the
//!    calling worker thread's own lane of an [`Inbox`] (a mutex only that
//!    thread and the shipper's task take, reused buffers): no allocation
//!    once warm, no await, no lock another worker takes. A full lane turns
//!    the line away and counts it by app.
//! 2. **The shipper's task** takes every lane in a batch (after a short
//!    linger), asks the [`Directory`] for each app's input token (its
//!    `heroku` token, so the line reads `heroku[router]`) and destination
//!    (`HOST:PORT` of a log router's syslog TCP listener), and appends one
//!    RFC 5424 frame per line, octet-counted (RFC 6587), to that
//!    destination's batch: `<158>1 TIMESTAMP HOST TOKEN router - - at=info …`,
//!    PRI 158 (`local3.info`) as Heroku's router lines have.
//! 3. **One [`Link`] per destination**: one persistent TCP connection, fed
//!    whole batches through a small bounded queue and written in large
//!    writes; reconnected with capped exponential back-off.
//!
//! # Loss is counted, then reported
//!
//! A line that cannot go — its lane was full, the app has no log router
//! (no live member, no `--logplex-syslog`), its link is down, or the write
//! of its batch failed — is dropped, counted in
//! `router_log_lines_dropped_total{reason}` and in a per-app book (count
//! and the time of the first loss). When the app's destination link is up
//! again, the shipper first sends one line into the app's stream saying so,
//! in Logplex's L10 wording ([`message::l10_router`]), with PRI 172 as
//! `heroku[router]`; the count goes back into the book if that batch fails
//! too. A line handed to the kernel is counted as shipped: TCP gives no
//! receipt, so what a log router that dies had read but not published is
//! its loss, not the sender's (the link reads its socket and notices the
//! peer's close before its next write).
//!
//! An app without a token (a store not yet upgraded) cannot have its lines
//! written or its loss reported: they are counted (`reason="no_token"`).
//!
//! # Measured
//!
//! `cargo run --release -p logplex --example ship_rate 2000000 1 RATE`
//! (typical router lines to a local reader, 2 cores shared with other
//! builds): offered 1 M lines/s from one worker thread, all shipped, none
//! dropped; offered 2 M lines/s, 1.68 M/s shipped and 7.7 % counted
//! dropped (`queue_full`). Queuing a line costs the worker 40–90 ns.

mod link;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use self::link::Link;
use crate::inbox::{Inbox, Pending, Queued, Signals};
use crate::message::{self, LogLine, PRI_HEROKU, PRI_LOSS};

/// Where an app's lines go and what they carry, asked per line by the
/// shipper's task (never on the request path).
pub trait Directory: Send + Sync + 'static {
    /// The input token the app's platform lines are written with (its
    /// `heroku` token), if it has one.
    fn token(&self, app_id: &str) -> Option<Arc<str>>;
    /// `HOST:PORT` of the syslog TCP listener of the log router that owns
    /// the app's channel now, if any is known.
    fn destination(&self, app_id: &str) -> Option<Arc<str>>;
    /// Takes back a whole frame queued by [`Shipper::forward`] that has no
    /// destination now (this log router came to own the app's channel
    /// while the frame waited): true if it was delivered here instead, so
    /// that it is neither sent nor dropped. Nothing is taken back by
    /// default.
    fn take_back(&self, _app_id: &str, _frame: &str) -> bool {
        false
    }
}

/// Limits and timers of a [`Shipper`].
#[derive(Debug, Clone)]
pub struct ShipSettings {
    /// The frames' HOSTNAME: this router's name (Logplex discards it).
    pub host: String,
    /// How long the task waits for more lines after the first.
    pub linger: Duration,
    /// A lane with this many lines cuts the linger short.
    pub batch_lines: usize,
    /// At most this many lines wait in one worker's lane.
    pub lane_lines: usize,
    /// Batches waiting for one link's connection (each up to a linger's
    /// worth of lines).
    pub link_batches: usize,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// Connect (and TLS handshake) and write timeout.
    pub io_timeout: Duration,
    /// Syslog over TLS (RFC 5425) to the log routers' TLS listeners, with
    /// this client configuration; `None`: plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Longest message in one frame; a longer one is split (Logplex reads
    /// frames up to 10240 bytes).
    pub max_line_bytes: usize,
    /// Who ships: its metric names and how its loss reports read.
    pub sender: Sender,
}

/// Who runs a [`Shipper`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// A router running apart: `router_log_lines_{shipped,dropped}_total`,
    /// reports as `heroku[router]` naming the router.
    Router,
    /// A control node running apart, shipping its `heroku[api]` lines: the
    /// router's metrics, reports as `heroku[api]` naming the node.
    Control,
    /// A log router of a cluster forwarding lines to the node that owns
    /// their channel: `logplex_forwarded_lines_total`,
    /// `logplex_forward_dropped_lines_total`, reports as `heroku[logplex]`
    /// naming the node.
    LogRouter,
}

impl Sender {
    fn shipped_metric(self) -> &'static str {
        match self {
            Sender::Router | Sender::Control => "router_log_lines_shipped_total",
            Sender::LogRouter => "logplex_forwarded_lines_total",
        }
    }

    fn dropped_metric(self) -> &'static str {
        match self {
            Sender::Router | Sender::Control => "router_log_lines_dropped_total",
            Sender::LogRouter => "logplex_forward_dropped_lines_total",
        }
    }

    pub(crate) fn links_metric(self) -> &'static str {
        match self {
            Sender::Router | Sender::Control => "router_log_links_up",
            Sender::LogRouter => "logplex_forward_links_up",
        }
    }

    /// The loss report's PROCESS and text.
    fn report(self, host: &str, loss: Loss) -> (&'static str, String) {
        match self {
            Sender::Router => ("router", message::l10_router(host, loss.count, loss.since)),
            Sender::Control => ("api", message::l10_control(host, loss.count, loss.since)),
            Sender::LogRouter => (
                "logplex",
                message::l10_log_router(host, loss.count, loss.since),
            ),
        }
    }
}

impl Default for ShipSettings {
    fn default() -> Self {
        ShipSettings {
            host: "router".into(),
            linger: Duration::from_millis(10),
            batch_lines: 256,
            lane_lines: 16_384,
            link_batches: 64,
            max_backoff: Duration::from_secs(5),
            io_timeout: Duration::from_secs(5),
            tls: None,
            max_line_bytes: 10_000,
            sender: Sender::Router,
        }
    }
}

/// Why a line was dropped: the `reason` label of
/// `router_log_lines_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The worker's lane was full (the task fell behind).
    QueueFull,
    /// No log router is known for the app.
    NoLogRouter,
    /// The link to the app's log router is down, or its queue is full.
    LinkDown,
    /// The write of the line's batch failed.
    WriteFailed,
    /// The app has no `heroku` token.
    NoToken,
}

impl DropReason {
    fn label(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::NoLogRouter => "no_log_router",
            DropReason::LinkDown => "link_down",
            DropReason::WriteFailed => "write_failed",
            DropReason::NoToken => "no_token",
        }
    }
}

/// Counters of a [`Shipper`], for tests and tools (the same numbers go to
/// the metrics).
#[derive(Debug, Default)]
pub struct ShipStats {
    /// Router lines handed to a log router's connection.
    pub shipped: AtomicU64,
    /// Router lines dropped, for any reason.
    pub dropped: AtomicU64,
    /// Loss reports handed to a log router's connection.
    pub reported: AtomicU64,
}

/// Lines lost for one app since the last report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loss {
    /// How many.
    pub count: u64,
    /// When the first went.
    pub since: DateTime<Utc>,
}

/// The per-app loss book, shared by the task and its links.
#[derive(Debug, Default)]
pub struct Book {
    apps: HashMap<String, Loss>,
}

impl Book {
    /// Adds `count` lines lost for `app_id` at `at` (an earlier loss keeps
    /// its time).
    pub fn add(&mut self, app_id: &str, count: u64, at: DateTime<Utc>) {
        if count == 0 {
            return;
        }
        match self.apps.get_mut(app_id) {
            Some(l) => {
                l.count += count;
                l.since = l.since.min(at);
            }
            None => {
                self.apps
                    .insert(app_id.to_string(), Loss { count, since: at });
            }
        }
    }

    /// Takes the loss of `app_id`, to report it.
    pub fn take(&mut self, app_id: &str) -> Option<Loss> {
        self.apps.remove(app_id)
    }

    /// The apps with a loss to report.
    pub fn apps(&self) -> Vec<String> {
        self.apps.keys().cloned().collect()
    }

    /// The loss of `app_id` not yet reported.
    pub fn get(&self, app_id: &str) -> Option<Loss> {
        self.apps.get(app_id).copied()
    }
}

/// What the task and the links share.
pub(crate) struct Shared {
    book: Mutex<Book>,
    stats: ShipStats,
    pub(crate) sender: Sender,
    /// A link connected: reports may go.
    pub(crate) link_up: tokio::sync::Notify,
}

impl Shared {
    pub(crate) fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts `count` lines of `app_id` dropped for `reason` (and books
    /// them for a report when `app_id` is given).
    pub(crate) fn dropped(
        &self,
        app_id: Option<&str>,
        count: u64,
        at: DateTime<Utc>,
        reason: DropReason,
    ) {
        if count == 0 {
            return;
        }
        self.stats.dropped.fetch_add(count, Ordering::Relaxed);
        metrics::counter!(self.sender.dropped_metric(), "reason" => reason.label())
            .increment(count);
        if let Some(app) = app_id {
            self.book().add(app, count, at);
        }
    }

    /// A batch that will not be delivered: its lines are dropped and its
    /// reports go back into the book.
    pub(crate) fn failed(&self, batch: &Batch, reason: DropReason) {
        let at = batch.made;
        for (app, n) in &batch.lines {
            self.dropped(Some(app), *n, at, reason);
        }
        let mut book = self.book();
        for (app, loss) in &batch.reports {
            book.add(app, loss.count, loss.since);
        }
    }

    pub(crate) fn delivered(&self, batch: &Batch) {
        let lines: u64 = batch.lines.iter().map(|(_, n)| n).sum();
        self.stats.shipped.fetch_add(lines, Ordering::Relaxed);
        metrics::counter!(self.sender.shipped_metric()).increment(lines);
        let reports = batch.reports.len() as u64;
        self.stats.reported.fetch_add(reports, Ordering::Relaxed);
    }
}

/// Frames for one destination, with what they account for.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// Octet-counted frames, back to back.
    pub(crate) bytes: Vec<u8>,
    /// Router lines in `bytes`, by app.
    pub(crate) lines: Vec<(String, u64)>,
    /// Loss reports in `bytes`, by app.
    pub(crate) reports: Vec<(String, Loss)>,
    /// When it was made (the loss time of its lines if it fails).
    pub(crate) made: DateTime<Utc>,
    /// Flushes waiting for it: dropped with the batch once it is written
    /// or counted dropped.
    pub(crate) done: Vec<oneshot::Sender<()>>,
}

impl Batch {
    fn count_line(&mut self, app_id: &str) {
        match self.lines.last_mut() {
            Some((app, n)) if app == app_id => *n += 1,
            _ => self.lines.push((app_id.to_string(), 1)),
        }
    }

    /// Appends `other` (a later batch to the same destination).
    pub(crate) fn append(&mut self, mut other: Batch) {
        self.bytes.append(&mut other.bytes);
        self.lines.append(&mut other.lines);
        self.reports.append(&mut other.reports);
        self.done.append(&mut other.done);
        self.made = self.made.min(other.made);
    }
}

/// Appends the frame of one platform line of `process` (`router`, `api`)
/// or a loss report to `out`:
/// `<len> <pri>1 TIMESTAMP HOST TOKEN PROCESS - - MSG\n`.
pub fn write_frame(
    out: &mut Vec<u8>,
    time: DateTime<Utc>,
    pri: u8,
    host: &str,
    token: &str,
    process: &str,
    msg: &str,
) {
    LogLine::new(time.fixed_offset(), pri, token, process, msg).write_frame(host, true, out);
}

/// Ships router lines to log routers (see the module docs). Dropping it
/// ends its task; lines still queued then are counted as dropped.
pub struct Shipper {
    inbox: Inbox,
    shared: Arc<Shared>,
    /// Asks the task to send everything now ([`Shipper::flush`]).
    flushes: mpsc::Sender<FlushReply>,
}

/// Where the task answers a flush: one receiver per link, which resolves
/// once the link has written (or counted dropped) everything before it.
type FlushReply = oneshot::Sender<Vec<oneshot::Receiver<()>>>;

impl std::fmt::Debug for Shipper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shipper").finish_non_exhaustive()
    }
}

impl Shipper {
    /// A shipper sending through `directory`; its task runs on the current
    /// tokio runtime.
    pub fn start(settings: ShipSettings, directory: Arc<dyn Directory>) -> Arc<Shipper> {
        let inbox = Inbox::new(settings.batch_lines, settings.lane_lines);
        let signals = inbox.signals();
        let (flushes, flush_rx) = mpsc::channel(4);
        let shipper = Arc::new(Shipper {
            flushes,
            inbox,
            shared: Arc::new(Shared {
                book: Mutex::new(Book::default()),
                stats: ShipStats::default(),
                sender: settings.sender,
                link_up: tokio::sync::Notify::new(),
            }),
        });
        tokio::spawn(run(
            Arc::downgrade(&shipper),
            signals,
            flush_rx,
            directory,
            settings,
        ));
        shipper
    }

    /// Queues one router line of `app_id` that happened `at` (see the
    /// module docs: no await, no lock another worker takes).
    pub fn enqueue(&self, app_id: &str, line: &str, at: Instant) {
        self.enqueue_as(app_id, "router", line, at);
    }

    /// Queues one platform line of `process` (`api` for a control node's
    /// change lines), written `heroku[<process>]`.
    pub fn enqueue_as(&self, app_id: &str, process: &'static str, line: &str, at: Instant) {
        let queued = Queued::new(app_id, "heroku", process, line, at);
        if !self.inbox.push(queued) {
            // This thread is exiting: it cannot have a lane.
            self.shared
                .dropped(Some(app_id), 1, Utc::now(), DropReason::QueueFull);
        }
    }

    /// Queues one line another log router forwards to the owner of
    /// `app_id`'s channel: `frame` is its whole octet-counted frame, sent
    /// as it is (it carries its own token, so no [`Directory::token`] is
    /// needed for it).
    pub fn forward(&self, app_id: &str, frame: &str, at: Instant) {
        let queued = Queued::new(app_id, "", RAW_FRAME, frame, at);
        if !self.inbox.push(queued) {
            self.shared
                .dropped(Some(app_id), 1, Utc::now(), DropReason::QueueFull);
        }
    }

    /// Sends every queued line now and waits, at most `within`, until each
    /// link has written (or counted dropped) what it was given: for
    /// shutdown. True when everything was accounted for in time.
    pub async fn flush(&self, within: Duration) -> bool {
        let (reply, answer) = oneshot::channel();
        if self.flushes.send(reply).await.is_err() {
            return true;
        }
        let Ok(markers) = answer.await else {
            return true;
        };
        tokio::time::timeout(within, async {
            for marker in markers {
                // Resolved (with an error) when the marker's batch is dropped.
                let _ = marker.await;
            }
        })
        .await
        .is_ok()
    }

    /// The counters.
    pub fn stats(&self) -> &ShipStats {
        &self.shared.stats
    }

    /// The loss of `app_id` not yet reported.
    pub fn unreported(&self, app_id: &str) -> Option<Loss> {
        self.shared.book().get(app_id)
    }
}

/// The PROCESS of a queued line that is a whole frame already
/// ([`Shipper::forward`]): no real process is spelled with a NUL.
const RAW_FRAME: &str = "\0frame";

/// How often the task looks for losses to report when nothing else wakes
/// it (a link coming up wakes it at once).
const REPORT_TICK: Duration = Duration::from_millis(500);

/// A link no line was routed to for this long is closed (a log router
/// that left, or an app's channel that moved): it is opened again when
/// a line needs it.
const LINK_IDLE: Duration = Duration::from_secs(120);

/// The shipper's task: batches, routes and hands lines to the links.
async fn run(
    shipper: Weak<Shipper>,
    signals: Arc<Signals>,
    mut flushes: mpsc::Receiver<FlushReply>,
    directory: Arc<dyn Directory>,
    settings: ShipSettings,
) {
    let mut links: HashMap<Arc<str>, Link> = HashMap::new();
    let shared = match shipper.upgrade() {
        Some(s) => s.shared.clone(),
        None => return,
    };
    let mut tick = tokio::time::interval(REPORT_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut flush = None;
        tokio::select! {
            Some(reply) = flushes.recv() => flush = Some(reply),
            _ = signals.arrived.notified() => {
                tokio::select! {
                    _ = tokio::time::sleep(settings.linger) => {}
                    _ = signals.full.notified() => {}
                }
            }
            _ = shared.link_up.notified() => {}
            _ = tick.tick() => {}
        }
        let Some(shipper) = shipper.upgrade() else {
            return;
        };
        let mut batches: HashMap<Arc<str>, Batch> = HashMap::new();
        let mut pass = Pass {
            directory: &*directory,
            settings: &settings,
            shared: &shared,
            links: &mut links,
            batches: &mut batches,
        };
        shipper.inbox.take(|pending| pass.lines(pending));
        pass.reports();
        drop(shipper);
        for (dest, batch) in batches {
            match links.get(&dest) {
                Some(link) => link.send(batch, &shared),
                None => shared.failed(&batch, DropReason::LinkDown),
            }
        }
        links.retain(|_, link| link.used().elapsed() < LINK_IDLE);
        if let Some(reply) = flush {
            let mut markers = Vec::with_capacity(links.len());
            for link in links.values() {
                let (done, marker) = oneshot::channel();
                let batch = Batch {
                    made: Utc::now(),
                    done: vec![done],
                    ..Batch::default()
                };
                link.send(batch, &shared);
                markers.push(marker);
            }
            let _ = reply.send(markers);
        }
    }
}

/// An app's destination and token (lines [`Shipper::forward`]ed carry their
/// own token, and go without the app's).
type Route = (Arc<str>, Option<Arc<str>>);

/// One pass of the task: lines and reports into per-destination batches.
struct Pass<'a> {
    directory: &'a dyn Directory,
    settings: &'a ShipSettings,
    shared: &'a Arc<Shared>,
    links: &'a mut HashMap<Arc<str>, Link>,
    batches: &'a mut HashMap<Arc<str>, Batch>,
}

impl Pass<'_> {
    /// The link to `dest`, started on first use.
    fn link(&mut self, dest: &Arc<str>) -> &Link {
        let link = self
            .links
            .entry(dest.clone())
            .or_insert_with(|| Link::start(dest.clone(), self.settings, self.shared.clone()));
        link.touch();
        link
    }

    fn batch(&mut self, dest: &Arc<str>) -> &mut Batch {
        self.batches.entry(dest.clone()).or_insert_with(|| Batch {
            made: Utc::now(),
            ..Batch::default()
        })
    }

    /// Where `app_id`'s lines go now: an accepting link, and its token
    /// (which only `raw` lines, whole frames, may go without).
    fn route(&mut self, app_id: &str, raw: bool) -> Result<Route, DropReason> {
        let token = self.directory.token(app_id);
        if token.is_none() && !raw {
            return Err(DropReason::NoToken);
        }
        let dest = self
            .directory
            .destination(app_id)
            .ok_or(DropReason::NoLogRouter)?;
        if !self.link(&dest).accepting() {
            return Err(DropReason::LinkDown);
        }
        Ok((dest, token))
    }

    /// Appends the report of `app_id`'s booked loss, if any, to the batch
    /// for `dest`.
    fn report(&mut self, app_id: &str, dest: &Arc<str>, token: &str) {
        let Some(loss) = self.shared.book().take(app_id) else {
            return;
        };
        let (process, text) = self.settings.sender.report(&self.settings.host, loss);
        let host = self.settings.host.clone();
        let batch = self.batch(dest);
        write_frame(
            &mut batch.bytes,
            Utc::now(),
            PRI_LOSS,
            &host,
            token,
            process,
            &text,
        );
        batch.reports.push((app_id.to_string(), loss));
    }

    /// One lane's lines, and what its bound turned away.
    fn lines(&mut self, pending: &Pending) {
        let (wall, mono) = (Utc::now(), Instant::now());
        for d in pending.dropped() {
            self.shared
                .dropped(Some(&d.app_id), d.count, d.since, DropReason::QueueFull);
        }
        let mut last: Option<(&str, bool, Result<Route, DropReason>)> = None;
        for (app_id, msg, entry) in pending.lines() {
            let ago = mono.saturating_duration_since(entry.at);
            let time = wall - chrono::TimeDelta::from_std(ago).unwrap_or_default();
            let raw = entry.process == RAW_FRAME;
            let route = match &last {
                Some((id, r, route)) if *id == app_id && *r == raw => route.clone(),
                _ => {
                    let route = self.route(app_id, raw);
                    if let Ok((dest, Some(token))) = &route {
                        // Reported before the app's next line.
                        self.report(app_id, dest, token);
                    }
                    last = Some((app_id, raw, route.clone()));
                    route
                }
            };
            let (dest, token) = match route {
                Ok((dest, token)) => (dest, token.unwrap_or_else(|| Arc::from(""))),
                Err(DropReason::NoLogRouter) if raw && self.directory.take_back(app_id, msg) => {
                    continue;
                }
                Err(reason) => {
                    let app = (reason != DropReason::NoToken).then_some(app_id);
                    self.shared.dropped(app, 1, time, reason);
                    continue;
                }
            };
            if raw {
                let batch = self.batch(&dest);
                batch.bytes.extend_from_slice(msg.as_bytes());
                batch.count_line(app_id);
                continue;
            }
            let host = self.settings.host.clone();
            let max = self.settings.max_line_bytes;
            let batch = self.batch(&dest);
            for part in message::pieces(msg, max) {
                write_frame(
                    &mut batch.bytes,
                    time,
                    PRI_HEROKU,
                    &host,
                    &token,
                    entry.process,
                    part,
                );
            }
            batch.count_line(app_id);
        }
    }

    /// Reports of apps whose loss is booked and whose link is up, without
    /// waiting for their next line.
    fn reports(&mut self) {
        let apps = self.shared.book().apps();
        for app_id in apps {
            let Some(dest) = self.directory.destination(&app_id) else {
                continue;
            };
            let Some(token) = self.directory.token(&app_id) else {
                // The app is gone (or lost its token): nowhere to report
                // to; the metric has counted the lines.
                self.shared.book().take(&app_id);
                continue;
            };
            if self.link(&dest).is_up() {
                self.report(&app_id, &dest, &token);
            }
        }
    }
}

#[cfg(test)]
mod tests;
