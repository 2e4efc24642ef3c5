//! [`Logplex`]: the shared state — channels by app, tokens, sessions and
//! ingest counters — and the one path every line takes into a channel.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};

use crate::channel::Channel;
use crate::config::LogplexConfig;
use crate::inbox::{Inbox, Pending, Queued, Signals};
use crate::message::{self, Incoming, LogLine, ParseError, Stamper, PRI_APP, PRI_HEROKU, PRI_LOSS};
use crate::session::{Format, SessionBody, SessionParams, Sessions, DEFAULT_LINES};
use crate::settings::LogplexSettings;
use crate::source::listener::{Counts, Gate};

/// The connection gates: syslog TCP and TLS share one pool of places, the
/// HTTP source has its own.
#[derive(Debug)]
struct Gates {
    tcp: Gate,
    tls: Gate,
    http: Gate,
}

impl Gates {
    fn new(settings: &LogplexSettings) -> Self {
        use tokio::sync::Semaphore;
        let cap = |n: usize| Arc::new(Semaphore::new(n.min(Semaphore::MAX_PERMITS)));
        let stream = cap(settings.max_stream_connections);
        let http = cap(settings.max_http_connections);
        let gate = |slots: &Arc<Semaphore>, t| Gate::new(slots.clone(), Arc::new(Counts::new(t)));
        Gates {
            tcp: gate(&stream, Transport::Tcp),
            tls: gate(&stream, Transport::Tls),
            http: gate(&http, Transport::Http),
        }
    }
}

/// Counters of one drain, from [`Logplex::drain_stats`].
///
/// Once a drain is idle, `accepted == delivered + dropped`; see
/// [`drain::buffer`](crate::drain::buffer) for the rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainStats {
    /// The app's id.
    pub app_id: String,
    /// The drain's id.
    pub drain_id: String,
    /// `syslog`, `syslog+tls`, `https` or `http`.
    pub transport: String,
    /// Lines accepted into the drain's buffer.
    pub accepted: u64,
    /// Lines delivered.
    pub delivered: u64,
    /// Lines dropped (overflow, refused, abandoned).
    pub dropped: u64,
    /// Lines waiting in the buffer.
    pub buffered: u64,
    /// Lines being sent.
    pub in_flight: u64,
    /// Dropped lines reported to the drain in delivered L10 lines.
    pub reported: u64,
}

/// Where a line came in, a bounded metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Syslog over TCP.
    Tcp,
    /// Syslog over UDP.
    Udp,
    /// Syslog over TLS.
    Tls,
    /// `POST /logs`.
    Http,
    /// [`Logplex::emit`].
    InProcess,
}

impl Transport {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::Tls => "tls",
            Transport::Http => "http",
            Transport::InProcess => "in-process",
        }
    }
}

/// Ingest counters, from [`Logplex::ingest_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Frames received on any source (and in-process emits).
    pub received: u64,
    /// Lines published into channels (after splitting long ones).
    pub published: u64,
    /// Frames that were not syslog, or were cut off, or too long.
    pub malformed: u64,
    /// Frames whose token (or app id) matched no channel.
    pub unknown_token: u64,
    /// In-process lines turned away because a worker's queue was full
    /// ([`inbox`](crate::inbox)); each is also reported in its app's stream.
    pub inbox_dropped: u64,
}

/// Connection counters of one stream transport, from
/// [`Logplex::connection_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Connections open now.
    pub open: usize,
    /// Connections closed on arrival because the cap was reached.
    pub refused: u64,
    /// Connections closed after sending nothing for the idle timeout.
    pub idle_closed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    published: AtomicU64,
    malformed: AtomicU64,
    unknown_token: AtomicU64,
    inbox_dropped: AtomicU64,
}

/// The `logplex_frames_*_total` counters of one transport.
#[derive(Debug)]
struct FrameMetrics {
    received: metrics::Counter,
    malformed: metrics::Counter,
    unknown_token: metrics::Counter,
}

impl FrameMetrics {
    /// Handles for every transport, registered once: a labelled lookup in
    /// the recorder on every frame was a visible share of ingest.
    fn all() -> [FrameMetrics; 5] {
        [
            Transport::Tcp,
            Transport::Udp,
            Transport::Tls,
            Transport::Http,
            Transport::InProcess,
        ]
        .map(|t| FrameMetrics {
            received: metrics::counter!("logplex_frames_received_total", "transport" => t.as_str()),
            malformed: metrics::counter!("logplex_frames_malformed_total", "transport" => t.as_str()),
            unknown_token: metrics::counter!("logplex_frames_unknown_token_total", "transport" => t.as_str()),
        })
    }
}

/// A token's channel and name.
#[derive(Debug, Clone)]
pub struct TokenRoute {
    /// The channel.
    pub channel: Arc<Channel>,
    /// What replaces the token on output.
    pub name: String,
    /// The token itself (a line forwarded to the channel's owner carries it).
    pub token: Arc<str>,
}

#[derive(Debug, Default)]
struct Routes {
    channels: HashMap<String, Arc<Channel>>,
    /// Each channel's drains as configured; in a cluster only the channel's
    /// owner runs them ([`Logplex::rebalance`]).
    drains: HashMap<String, Vec<crate::config::DrainSpec>>,
    /// Each channel's `heroku` token (its platform lines' token).
    platform: HashMap<String, Arc<str>>,
    /// Looked up for every frame: SipHash over a 38-byte token cost as
    /// much as the rest of the lookup, so it is hashed with foldhash (seeded
    /// per process, fast on short keys).
    tokens: HashMap<String, TokenRoute, foldhash::fast::RandomState>,
}

/// Why a frame was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// Not a syslog message.
    #[error("malformed: {0}")]
    Malformed(#[from] ParseError),
    /// No channel has this token.
    #[error("unknown token")]
    UnknownToken,
}

/// The log router's shared state. Cheap to share (`Arc`); every method takes
/// `&self` and never waits on a drain.
#[derive(Debug)]
pub struct Logplex {
    settings: Arc<LogplexSettings>,
    /// Channels and tokens, swapped whole by [`configure`](Self::configure);
    /// readers never lock.
    routes: ArcSwap<Routes>,
    /// Serialises `configure` calls (the swap itself is atomic).
    configuring: Mutex<()>,
    sessions: Sessions,
    counters: Counters,
    /// By [`Transport`] (`as usize`).
    frame_metrics: [FrameMetrics; 5],
    /// The runtime `new` was called on, for drains configured from a plain
    /// thread.
    runtime: Option<tokio::runtime::Handle>,
    /// Connection caps and counts of the TCP, TLS and HTTP sources.
    gates: Gates,
    /// Per-thread queues of [`enqueue`](Self::enqueue)d lines, published in
    /// batches by the ingest task (started with the log router when there
    /// is a runtime; without one, `enqueue` publishes at once).
    inbox: Inbox,
    /// `logplex_inbox_dropped_lines_total`.
    inbox_dropped: metrics::Counter,
    /// Set once when this log router is one node of a cluster.
    cluster: std::sync::OnceLock<Cluster>,
}

/// Where an app's channel lives in a cluster of log routers, as
/// [`Placement::owner`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// Not placed yet (a new channel).
    Unknown,
    /// This node owns it: history, tails and drains are here.
    Here,
    /// The live node with this id owns it: lines go there.
    Peer(String),
    /// No node may act as owner now (this node's lease is not surely
    /// alive, or no node is live, or this node has not yet seen its own
    /// registration): lines stay here, and the channel's drains here hold
    /// them (within their bound) and send none, to deliver them once this
    /// node owns the channel, or as they retire if a peer does.
    Nobody,
}

/// Which node of a cluster owns each channel (see [`Logplex::join_cluster`]).
pub trait Placement: Send + Sync + 'static {
    /// This node's id, as the other nodes know it.
    fn node(&self) -> &str;
    /// The owner of `app_id`'s channel now.
    fn owner(&self, app_id: &str) -> Owner;
    /// Whether node `id` is live.
    fn is_live(&self, id: &str) -> bool;
}

/// A log router's place in its cluster.
struct Cluster {
    placement: Arc<dyn Placement>,
    /// Sends lines of channels another node owns to it.
    forward: Arc<crate::ship::Shipper>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.placement.node())
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// The frames of one forwarded line, reused.
    static FORWARD: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Logplex {
    /// A log router with no channels yet.
    pub fn new(settings: LogplexSettings) -> Arc<Logplex> {
        let sessions = Sessions::new(settings.session_ttl, settings.session_grants.clone());
        let runtime = tokio::runtime::Handle::try_current().ok();
        let inbox = Inbox::new(settings.inbox_batch_lines, settings.inbox_lane_lines);
        let signals = inbox.signals();
        Arc::new_cyclic(|me| {
            if let Some(runtime) = &runtime {
                runtime.spawn(ingest(me.clone(), signals, settings.inbox_linger));
            }
            Logplex {
                routes: ArcSwap::from_pointee(Routes::default()),
                configuring: Mutex::new(()),
                sessions,
                counters: Counters::default(),
                frame_metrics: FrameMetrics::all(),
                gates: Gates::new(&settings),
                inbox,
                inbox_dropped: metrics::counter!("logplex_inbox_dropped_lines_total"),
                cluster: std::sync::OnceLock::new(),
                runtime,
                settings: Arc::new(settings),
            }
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> &LogplexSettings {
        &self.settings
    }

    /// Replaces the channel, token and drain configuration. Channels that
    /// remain keep their history and tails; drains whose id, token and URL
    /// are unchanged keep running with their buffers; removed drains stop
    /// (their buffered lines count as dropped). Drains are tasks on the
    /// current tokio runtime, or on the one [`new`](Self::new) ran on.
    ///
    /// In a cluster ([`join_cluster`](Self::join_cluster)) a channel's
    /// drains run only while this node owns it.
    pub fn configure(&self, config: LogplexConfig) {
        let _guard = self.configuring.lock().unwrap_or_else(|e| e.into_inner());
        let clustered = self.cluster.get().is_some();
        let old = self.routes.load_full();
        let mut routes = Routes::default();
        for spec in &config.channels {
            let channel = match old.channels.get(&spec.app_id) {
                Some(c) => {
                    c.set_name(&spec.app_name);
                    c.clone()
                }
                None => Channel::new(
                    &spec.app_id,
                    &spec.app_name,
                    self.settings.clone(),
                    self.runtime.clone(),
                ),
            };
            match channel.owner() {
                _ if !clustered => channel.set_drains(&spec.drains),
                Owner::Here => channel.set_drains(&spec.drains),
                Owner::Nobody => {
                    channel.hold_drains(&spec.drains, self.settings.handover_delay / 2)
                }
                Owner::Unknown | Owner::Peer(_) => {}
            }
            for token in &spec.tokens {
                let t: Arc<str> = token.token.as_str().into();
                if token.name == "heroku" {
                    routes.platform.insert(spec.app_id.clone(), t.clone());
                }
                routes.tokens.insert(
                    token.token.clone(),
                    TokenRoute {
                        channel: channel.clone(),
                        name: token.name.clone(),
                        token: t,
                    },
                );
            }
            routes
                .drains
                .insert(spec.app_id.clone(), spec.drains.clone());
            routes.channels.insert(spec.app_id.clone(), channel);
        }
        for (app_id, channel) in &old.channels {
            if !routes.channels.contains_key(app_id) {
                channel.set_drains(&[]);
            }
        }
        self.routes.store(Arc::new(routes));
        if let Some(cluster) = self.cluster.get() {
            self.rebalance_locked(cluster);
        }
    }

    /// Makes this log router one node of a cluster: each channel is owned
    /// by one node at a time, as `placement` says. The owner keeps the
    /// channel's history, serves its tails and runs its drains; a line
    /// ingested here for a channel a peer owns is forwarded to that peer
    /// through `forward` (once: a line a peer forwarded is published here
    /// even if this node does not think it owns the channel). Call
    /// [`rebalance`](Self::rebalance) whenever the placement may have
    /// changed. Only the first call takes effect.
    pub fn join_cluster(&self, placement: Arc<dyn Placement>, forward: Arc<crate::ship::Shipper>) {
        let _ = self.cluster.set(Cluster { placement, forward });
        self.rebalance();
    }

    /// The `heroku` token of `app_id`'s channel (what a forwarder's loss
    /// reports are written with).
    pub fn platform_token(&self, app_id: &str) -> Option<Arc<str>> {
        self.routes.load().platform.get(app_id).cloned()
    }

    /// Places every channel again: a channel this node now owns starts its
    /// drains (and, taken over from another node, gets one line saying
    /// where its earlier history is); one it no longer owns stops them
    /// (their buffered lines count as dropped). Cheap when nothing moved.
    pub fn rebalance(&self) {
        let Some(cluster) = self.cluster.get() else {
            return;
        };
        let _guard = self.configuring.lock().unwrap_or_else(|e| e.into_inner());
        self.rebalance_locked(cluster);
    }

    fn rebalance_locked(&self, cluster: &Cluster) {
        let routes = self.routes.load();
        let placement = &cluster.placement;
        let mut owned = 0usize;
        for (app_id, channel) in &routes.channels {
            let next = placement.owner(app_id);
            owned += usize::from(next == Owner::Here);
            let previous = channel.owner();
            if next == previous {
                continue;
            }
            channel.set_owner(next.clone());
            match (&previous, &next) {
                (_, Owner::Here) => {
                    let drains = routes.drains.get(app_id).map_or(&[][..], |d| d);
                    // Taken from a dead node: nobody else runs the drains.
                    let hold = match &previous {
                        Owner::Peer(node) if !placement.is_live(node) => Duration::ZERO,
                        _ => self.settings.handover_delay,
                    };
                    channel.set_drains_after(drains, hold);
                    tracing::info!(app = %app_id, from = ?previous, "channel owned here");
                    if let Owner::Peer(node) = &previous {
                        let live = placement.is_live(node);
                        let text = message::channel_moved(placement.node(), node, live, Utc::now());
                        self.publish(
                            channel,
                            LogLine::now(PRI_HEROKU, "heroku", "logplex", &text),
                        );
                    }
                }
                (_, Owner::Nobody) => {
                    if previous == Owner::Here {
                        tracing::info!(app = %app_id, "channel no longer surely owned here; its drains are held");
                    }
                    // No node may send the channel's lines now: its drains
                    // keep what arrives here, to deliver once this node
                    // owns the channel, or as they retire if a peer does.
                    let drains = routes.drains.get(app_id).map_or(&[][..], |d| d);
                    channel.hold_drains(drains, self.settings.handover_delay / 2);
                }
                _ => {
                    if previous == Owner::Here {
                        tracing::info!(app = %app_id, to = ?next, "channel no longer owned here");
                    }
                    // Also drains configured before this node joined. They
                    // deliver what they hold while the next owner holds its
                    // own (half of `handover_delay`), then stop.
                    channel.retire_drains(self.settings.handover_delay / 2);
                    if let Owner::Peer(node) = &next {
                        // Tails here would see nothing more.
                        let text = message::tail_moved(placement.node(), node);
                        channel.end_tails(LogLine::now(PRI_HEROKU, "heroku", "logplex", &text));
                    }
                }
            }
        }
        metrics::gauge!("logplex_channels_owned").set(owned as f64);
    }

    /// Live tail sessions over every channel (sampled for a gauge, never
    /// on a line's path).
    pub fn tail_count(&self) -> usize {
        self.routes
            .load()
            .channels
            .values()
            .map(|c| c.tail_count())
            .sum()
    }

    /// The channel of an app, by id.
    pub fn channel(&self, app_id: &str) -> Option<Arc<Channel>> {
        self.routes.load().channels.get(app_id).cloned()
    }

    /// The channel and name of an input token.
    pub fn token(&self, token: &str) -> Option<TokenRoute> {
        self.routes.load().tokens.get(token).cloned()
    }

    /// Emits one line in-process, e.g. `("heroku", "router", line)` or
    /// `("app", "web.1", msg)`. Unknown apps are counted and dropped.
    pub fn emit(&self, app_id: &str, source: &str, process: &str, msg: &str) {
        self.count_received(Transport::InProcess);
        let Some(channel) = self.channel(app_id) else {
            self.count_unknown(Transport::InProcess);
            return;
        };
        let pri = if source == "heroku" {
            PRI_HEROKU
        } else {
            PRI_APP
        };
        let time = Utc::now().fixed_offset();
        for part in message::pieces(msg, self.settings.max_line_bytes) {
            self.publish(&channel, LogLine::new(time, pri, source, process, part));
        }
    }

    /// Queues one line from a hot path (the router's workers), e.g.
    /// `("heroku", "router", line)`, stamped `at`: it reaches the channel
    /// with the calling thread's next batch, within
    /// [`LogplexSettings::inbox_linger`], in the order this thread queued
    /// it ([`inbox`](crate::inbox)). Never waits and takes no lock another
    /// worker thread takes.
    pub fn enqueue(
        &self,
        app_id: &str,
        source: &'static str,
        process: &'static str,
        msg: &str,
        at: Instant,
    ) {
        self.push(Queued::new(app_id, source, process, msg, at));
    }

    /// [`enqueue`](Self::enqueue) for a message known to hold no carriage
    /// return or line feed, as a router line never does (it escapes
    /// control characters): a live tail writes it without looking for
    /// them. Checked in debug builds.
    pub fn enqueue_flat(
        &self,
        app_id: &str,
        source: &'static str,
        process: &'static str,
        msg: &str,
        at: Instant,
    ) {
        debug_assert!(
            !msg.contains(['\r', '\n']),
            "a line break in a flat line: {msg:?}"
        );
        self.push(Queued {
            flat: true,
            ..Queued::new(app_id, source, process, msg, at)
        });
    }

    fn push(&self, line: Queued<'_>) {
        let Queued {
            app_id,
            source,
            process,
            msg,
            ..
        } = line;
        if self.runtime.is_none() || !self.inbox.push(line) {
            self.emit(app_id, source, process, msg);
        }
    }

    /// Publishes every queued in-process line now.
    pub fn publish_queued(&self) {
        let mut stamper = Stamper::default();
        self.inbox
            .take(|pending| self.publish_pending(pending, &mut stamper));
    }

    /// One lane's lines: stamped, routed, and published one batch per
    /// channel; then what its bound turned away, as L10 lines.
    fn publish_pending(&self, pending: &Pending, stamper: &mut Stamper) {
        let routes = self.routes.load();
        // One clock read for the batch: each line's time is this one less
        // how long ago the line happened.
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mono = Instant::now();
        // One batch per channel, each app's lines in their order, made as
        // the lines are stamped. A lane's lines mostly come in runs of one
        // app, so a channel is looked up once per run; which batch is its
        // is looked up only then too.
        let mut batches: Vec<(&Arc<Channel>, Vec<LogLine>)> = Vec::new();
        let mut which: HashMap<*const Channel, usize> = HashMap::new();
        let mut last: Option<(&str, usize)> = None;
        let mut received = 0;
        let mut published = 0;
        for (app_id, msg, entry) in pending.lines() {
            received += 1;
            let at = match last {
                Some((id, at)) if id == app_id => at,
                _ => match routes.channels.get(app_id) {
                    Some(channel) => {
                        let at = match batches.len() {
                            0 => None,
                            _ if Arc::ptr_eq(batches[0].0, channel) => Some(0),
                            _ => which.get(&Arc::as_ptr(channel)).copied(),
                        };
                        let at = at.unwrap_or_else(|| {
                            let at = batches.len();
                            if at == 0 {
                                batches.push((channel, Vec::with_capacity(pending.len())));
                            } else {
                                batches.push((channel, Vec::new()));
                                which.insert(Arc::as_ptr(channel), at);
                            }
                            at
                        });
                        last = Some((app_id, at));
                        at
                    }
                    None => {
                        self.count_unknown(Transport::InProcess);
                        continue;
                    }
                },
            };
            let lines = &mut batches[at].1;
            let time = wall.saturating_sub(mono.saturating_duration_since(entry.at));
            let (secs, nanos) = (time.as_secs() as i64, time.subsec_nanos());
            let pri = if entry.source == "heroku" {
                PRI_HEROKU
            } else {
                PRI_APP
            };
            for part in message::pieces(msg, self.settings.max_line_bytes) {
                let line = match stamper.spell(secs, nanos) {
                    Some(stamp) => {
                        LogLine::stamped(stamp, pri, entry.source, entry.process, part, entry.flat)
                    }
                    None => LogLine::with_stamp(
                        DateTime::from_timestamp(secs, nanos)
                            .unwrap_or_default()
                            .fixed_offset(),
                        None,
                        pri,
                        entry.source,
                        entry.process,
                        part,
                    ),
                };
                lines.push(line);
                published += 1;
            }
        }
        self.counters
            .received
            .fetch_add(received, Ordering::Relaxed);
        self.frame_metrics[Transport::InProcess as usize]
            .received
            .increment(received);
        self.counters
            .published
            .fetch_add(published, Ordering::Relaxed);
        for (channel, lines) in &batches {
            channel.publish_batch(lines);
        }
        for d in pending.dropped() {
            self.counters
                .inbox_dropped
                .fetch_add(d.count, Ordering::Relaxed);
            self.inbox_dropped.increment(d.count);
            tracing::warn!(app = %d.app_id, lines = d.count, "in-process log queue full; lines dropped");
            if let Some(channel) = routes.channels.get(&d.app_id) {
                let text = message::l10_in_drain(d.count, d.since);
                self.publish(channel, LogLine::now(PRI_LOSS, "heroku", "logplex", &text));
            }
        }
    }

    fn publish(&self, channel: &Channel, line: LogLine) {
        self.counters.published.fetch_add(1, Ordering::Relaxed);
        channel.publish(line);
    }

    pub(crate) fn count_received(&self, transport: Transport) {
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        self.frame_metrics[transport as usize].received.increment(1);
    }

    pub(crate) fn count_malformed(&self, transport: Transport) {
        self.counters.malformed.fetch_add(1, Ordering::Relaxed);
        self.frame_metrics[transport as usize]
            .malformed
            .increment(1);
    }

    fn count_unknown(&self, transport: Transport) {
        self.counters.unknown_token.fetch_add(1, Ordering::Relaxed);
        self.frame_metrics[transport as usize]
            .unknown_token
            .increment(1);
    }

    /// Takes one syslog frame from a source: parses it, routes it by the
    /// token in APP-NAME (or, for HTTP, by the authenticated token), writes
    /// the token's name instead, splits long messages and publishes.
    /// Failures are counted.
    pub fn ingest(&self, frame: &[u8], transport: Transport) -> Result<(), IngestError> {
        self.count_received(transport);
        let incoming = match message::parse(frame) {
            Ok(m) => m,
            Err(e) => {
                self.count_malformed(transport);
                return Err(e.into());
            }
        };
        self.route(incoming, None, transport)
    }

    /// Publishes a parsed message; `auth` is the token a `POST /logs`
    /// authenticated with, which decides the channel.
    pub(crate) fn route(
        &self,
        m: Incoming<'_>,
        auth: Option<&TokenRoute>,
        transport: Transport,
    ) -> Result<(), IngestError> {
        // Looked up in place: cloning the route (its name) cost an
        // allocation per line.
        let routes = self.routes.load();
        let by_name = m.app_name.and_then(|t| routes.tokens.get(t));
        let route = match (auth, by_name) {
            (Some(auth), Some(named)) if Arc::ptr_eq(&auth.channel, &named.channel) => named,
            (Some(auth), _) => auth,
            (None, Some(named)) => named,
            (None, None) => {
                self.count_unknown(transport);
                return Err(IngestError::UnknownToken);
            }
        };
        let time = m.time.unwrap_or_else(|| Utc::now().fixed_offset());
        let process = m.procid.as_deref().unwrap_or_default();
        if route.channel.forwarding() && m.host != Some(message::FORWARDED_HOST) {
            if let Some(cluster) = self.cluster.get() {
                self.forward(cluster, route, &m, time, process);
                return Ok(());
            }
        }
        for part in message::pieces(m.msg, self.settings.max_line_bytes) {
            self.publish(
                &route.channel,
                LogLine::with_stamp(time, m.stamp, m.pri, &route.name, process, part),
            );
        }
        Ok(())
    }

    /// Publishes a frame this log router's forwarder held for a channel no
    /// peer owns now (the line came in while a peer owned the channel, and
    /// the placement moved before it went): `frame` is the octet-counted
    /// frame [`forward`](Self::forward) wrote. The channel is placed again
    /// first (the forwarder can see the move before the rebalance runs), so
    /// the line reaches its drains here, running or held. False if it does
    /// not parse or a peer still owns the channel.
    pub fn take_back(&self, frame: &str) -> bool {
        let body = frame.split_once(' ').map_or(frame, |(_, body)| body);
        let Ok(m) = message::parse(body.as_bytes()) else {
            return false;
        };
        let routes = self.routes.load();
        let Some(route) = m.app_name.and_then(|t| routes.tokens.get(t)) else {
            return false;
        };
        if route.channel.forwarding() {
            // Placed again once, not for every line of the batch.
            self.rebalance();
            if route.channel.forwarding() {
                return false;
            }
        }
        // Marked forwarded, so published here, not forwarded again.
        self.route(m, None, Transport::InProcess).is_ok()
    }

    /// Hands a line of a channel a peer owns to the forwarder, one frame
    /// per piece, with its token, marked [`message::FORWARDED_HOST`].
    fn forward(
        &self,
        cluster: &Cluster,
        route: &TokenRoute,
        m: &Incoming<'_>,
        time: chrono::DateTime<chrono::FixedOffset>,
        process: &str,
    ) {
        let at = Instant::now();
        FORWARD.with_borrow_mut(|buf| {
            for part in message::pieces(m.msg, self.settings.max_line_bytes) {
                buf.clear();
                LogLine::with_stamp(time, m.stamp, m.pri, &route.token, process, part).write_frame(
                    message::FORWARDED_HOST,
                    true,
                    buf,
                );
                // Frames are UTF-8: every part of one is.
                let frame = std::str::from_utf8(buf).unwrap_or_default();
                cluster.forward.forward(&route.channel.app_id, frame, at);
            }
        });
    }

    /// Creates a log session for an app; `None` if the app is unknown. The
    /// session is served at `GET /sessions/{id}` by [`serve_http`](crate::serve_http).
    pub fn create_session(&self, app_id: &str, params: SessionParams) -> Option<String> {
        self.channel(app_id)?;
        Some(self.sessions.create(app_id, params))
    }

    /// The body of session `id`, or `None` if it is unknown or expired.
    pub fn open_session(&self, id: &str, format: Format) -> Option<SessionBody> {
        let (app_id, params) = self.sessions.open(id)?;
        let channel = self.channel(&app_id)?;
        let n = params
            .lines
            .unwrap_or(DEFAULT_LINES)
            .min(self.settings.history_lines);
        let (recent, live) = channel.subscribe(n, params.source, params.dyno, params.tail);
        Some(SessionBody::new(format, recent, live))
    }

    /// The last `n` lines of an app, formatted as sessions show them.
    pub fn recent(&self, app_id: &str, n: usize) -> Vec<String> {
        self.channel(app_id)
            .map(|c| c.recent_text(n))
            .unwrap_or_default()
    }

    /// Counters of every drain.
    pub fn drain_stats(&self) -> Vec<DrainStats> {
        let routes = self.routes.load();
        let mut out = Vec::new();
        for channel in routes.channels.values() {
            for drain in channel.drains().iter() {
                let c = drain.counts();
                out.push(DrainStats {
                    app_id: drain.app_id.clone(),
                    drain_id: drain.spec.id.clone(),
                    transport: drain.transport().to_string(),
                    accepted: c.accepted,
                    delivered: c.delivered,
                    dropped: c.dropped,
                    buffered: c.buffered,
                    in_flight: c.in_flight,
                    reported: c.reported,
                });
            }
        }
        out.sort_by(|a, b| (&a.app_id, &a.drain_id).cmp(&(&b.app_id, &b.drain_id)));
        out
    }

    /// Ingest counters.
    pub fn ingest_stats(&self) -> IngestStats {
        IngestStats {
            received: self.counters.received.load(Ordering::Relaxed),
            published: self.counters.published.load(Ordering::Relaxed),
            malformed: self.counters.malformed.load(Ordering::Relaxed),
            unknown_token: self.counters.unknown_token.load(Ordering::Relaxed),
            inbox_dropped: self.counters.inbox_dropped.load(Ordering::Relaxed),
        }
    }

    /// Connection counters of the TCP, TLS or HTTP source (zeros for the
    /// others).
    pub fn connection_stats(&self, transport: Transport) -> ConnectionStats {
        let Some(gate) = self.gate(transport) else {
            return ConnectionStats::default();
        };
        let c = gate.counts();
        ConnectionStats {
            open: c.open.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            idle_closed: c.idle_closed.load(Ordering::Relaxed),
        }
    }

    /// The connection gate of a stream transport.
    pub(crate) fn gate(&self, transport: Transport) -> Option<&Gate> {
        match transport {
            Transport::Tcp => Some(&self.gates.tcp),
            Transport::Tls => Some(&self.gates.tls),
            Transport::Http => Some(&self.gates.http),
            Transport::Udp | Transport::InProcess => None,
        }
    }

    /// Publishes every queued in-process line, then gives drains up to
    /// `deadline` to deliver what they hold (graceful shutdown). Returns
    /// whether every drain went idle in time.
    pub async fn flush(&self, deadline: Duration) -> bool {
        self.publish_queued();
        let routes = self.routes.load();
        let buffers: Vec<_> = routes
            .channels
            .values()
            .flat_map(|c| {
                // A held drain (a channel no node surely owned) has lines
                // no other node has: it delivers them as this node goes.
                for d in c.drains().iter() {
                    d.release(Duration::ZERO);
                }
                c.drain_buffers()
            })
            .collect();
        let all = async {
            for b in &buffers {
                b.wait_idle().await;
            }
        };
        tokio::time::timeout(deadline, all).await.is_ok()
    }
}

/// The ingest task: publishes queued in-process lines a linger after the
/// first of a batch arrives, or as soon as a worker's queue holds a full
/// batch. Ends with the log router.
async fn ingest(logplex: Weak<Logplex>, signals: Arc<Signals>, linger: Duration) {
    loop {
        signals.arrived.notified().await;
        tokio::select! {
            _ = tokio::time::sleep(linger) => {}
            _ = signals.full.notified() => {}
        }
        match logplex.upgrade() {
            Some(l) => l.publish_queued(),
            None => return,
        }
    }
}
