//! The route table: an immutable snapshot of hosts, apps, settings and dynos.
//!
//! The control plane publishes a new [`RouteTable`] for every committed change
//! through [`Routes`], which swaps it in with `arc-swap`: readers on the hot
//! path take a snapshot with one atomic load and never block writers.
//!
//! # Publication costs O(changed apps)
//! A table's indexes (host → app, app name → app, app id → app) are
//! persistent hash maps (hash array mapped tries, `rpds`): a new table made by
//! [`Routes::update`] shares every node with the one it replaces except the
//! paths to the entries a change touches, and an unchanged app keeps its very
//! `Arc<App>`. A one-app change at 100 000 apps is published in tens of
//! microseconds instead of the ~1 s a whole rebuild took (BENCHMARKS.md,
//! "Table scale"); a lookup still measures under 100 ns, because the maps
//! hash with foldhash (seeded per process) rather than SipHash.
//! [`Routes::publish`] still takes a whole table (at start, on reload, for
//! followers and tests); both paths go through the same insertion code, so
//! their results cannot drift apart.
//!
//! Live per-dyno and per-app state (in-flight counts, quarantine, the app's
//! queue) is *not* part of the snapshot's value: it lives in `Arc`s that a new
//! table inherits from the one it replaces, keyed by app id and dyno name +
//! address, so a table swap never resets a counter or drops a queued request.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::live::{AppLive, DynoLive};
use crate::settings::AppSettings;
use crate::tls::Certs;

mod build;

pub use build::{RouteTableBuilder, TableUpdate};

/// Lifecycle state of a dyno, as the fleet manager reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DynoState {
    /// Booting: requests wait for it (up to the boot timeout, then H20).
    Starting,
    /// Accepting requests.
    Up,
    /// Crashed: when every web dyno is crashed the router answers H10.
    Crashed,
    /// Stopped on purpose; never routed to.
    Down,
}

impl DynoState {
    /// The lowercase name used in APIs and logs (`starting`, `up`, `crashed`, `down`).
    pub fn as_str(self) -> &'static str {
        match self {
            DynoState::Starting => "starting",
            DynoState::Up => "up",
            DynoState::Crashed => "crashed",
            DynoState::Down => "down",
        }
    }

    /// Parses the lowercase name produced by [`DynoState::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "starting" => DynoState::Starting,
            "up" => DynoState::Up,
            "crashed" => DynoState::Crashed,
            "down" => DynoState::Down,
            _ => return None,
        })
    }
}

/// What the control plane says about one dyno.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynoSpec {
    /// `TYPE.N`, e.g. `web.1`; the type is the part before the dot.
    pub name: String,
    /// Where the dyno listens for HTTP/1.1.
    pub address: SocketAddr,
    /// Lifecycle state.
    pub state: DynoState,
}

/// What the control plane says about one app.
#[derive(Debug, Clone, PartialEq)]
pub struct AppSpec {
    /// Stable identity (a UUID in the control plane); keys live state and logs.
    pub id: String,
    /// Heroku-style app name; the app answers on `<name>.<base-domain>`.
    pub name: String,
    /// Custom domains: exact names or `*.example.com` wildcards (leftmost label).
    pub domains: Vec<String>,
    /// Timers, limits, balancing and features.
    pub settings: AppSettings,
    /// Every registered dyno, of every type.
    pub dynos: Vec<DynoSpec>,
    /// The input token a router apart from logplex writes this app's
    /// router lines with (the app's `heroku` token); `None`: its lines
    /// cannot be shipped.
    pub log_token: Option<LogToken>,
    /// ACME HTTP-01 challenges in flight for the app's domains, as
    /// `(token, key authorization)`: the router answers
    /// `GET /.well-known/acme-challenge/<token>` on plain HTTP itself.
    pub acme_challenges: Vec<(String, String)>,
}

/// A logplex input token (`t.<uuid>`): a credential, so its `Debug` does
/// not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct LogToken(Arc<str>);

impl LogToken {
    /// Wraps `token`.
    pub fn new(token: &str) -> Self {
        LogToken(token.into())
    }

    /// The token itself, for the frame that carries it.
    pub fn expose(&self) -> &Arc<str> {
        &self.0
    }
}

impl std::fmt::Debug for LogToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogToken(…)")
    }
}

impl AppSpec {
    /// An app with default settings, no domains and no dynos; its id is its name.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        AppSpec {
            id: name.clone(),
            name,
            domains: Vec::new(),
            settings: AppSettings::default(),
            dynos: Vec::new(),
            log_token: None,
            acme_challenges: Vec::new(),
        }
    }

    /// Adds a custom domain (builder style, for tests and tools).
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.domains.push(domain.into());
        self
    }

    /// Adds a dyno in state `up`.
    pub fn dyno(self, name: impl Into<String>, address: SocketAddr) -> Self {
        self.dyno_in(name, address, DynoState::Up)
    }

    /// Adds a dyno in the given state.
    pub fn dyno_in(
        mut self,
        name: impl Into<String>,
        address: SocketAddr,
        state: DynoState,
    ) -> Self {
        self.dynos.push(DynoSpec {
            name: name.into(),
            address,
            state,
        });
        self
    }

    /// Replaces the settings.
    pub fn settings(mut self, settings: AppSettings) -> Self {
        self.settings = settings;
        self
    }
}

/// Where ACME HTTP-01 challenges are asked for (RFC 8555 §8.3).
pub const ACME_CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

/// One dyno inside a snapshot.
#[derive(Debug)]
pub struct Dyno {
    /// `web.1`.
    pub name: Box<str>,
    /// Where it listens.
    pub address: SocketAddr,
    /// Lifecycle state at the time of the snapshot.
    pub state: DynoState,
    /// Live counters shared with earlier and later snapshots.
    pub live: Arc<DynoLive>,
}

impl Dyno {
    /// True for dynos of process type `web`.
    pub fn is_web(&self) -> bool {
        self.name.split('.').next() == Some("web")
    }
}

/// One app inside a snapshot.
#[derive(Debug)]
pub struct App {
    /// Stable id (UUID in the control plane).
    pub id: Arc<str>,
    /// App name.
    pub name: Arc<str>,
    /// Settings as published.
    pub settings: AppSettings,
    /// Web dynos only, in name order; other process types never take HTTP.
    pub web: Box<[Dyno]>,
    /// Live per-app state (queue, in-flight total) shared across snapshots.
    pub live: Arc<AppLive>,
    /// Where this app's router lines are written with ([`AppSpec::log_token`]).
    pub log_token: Option<LogToken>,
    /// ACME HTTP-01 challenges, `(token, key authorization)`; a few at most.
    pub acme_challenges: Box<[(Box<str>, Box<str>)]>,
}

impl App {
    /// The key authorization to answer an ACME HTTP-01 request for
    /// `path` (`/.well-known/acme-challenge/<token>`) with, if the app has
    /// that challenge in flight.
    pub fn acme_answer(&self, path: &str) -> Option<&str> {
        let token = path.strip_prefix(ACME_CHALLENGE_PATH)?;
        self.acme_challenges
            .iter()
            .find(|(t, _)| **t == *token)
            .map(|(_, answer)| &**answer)
    }

    /// Number of web dynos in state `up`.
    pub fn up_count(&self) -> usize {
        self.web.iter().filter(|d| d.state == DynoState::Up).count()
    }

    /// The H11 bound: in-flight plus queued requests this router accepts for
    /// the app (`max_in_flight`, else 200 × web dynos, at least 200).
    pub fn in_flight_limit(&self) -> usize {
        match self.settings.max_in_flight {
            Some(n) => n as usize,
            None => 200 * self.web.len().max(1),
        }
    }
}

/// Why a table could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    /// Two apps claim the same domain.
    #[error("domain {domain} belongs to both {first} and {second}")]
    DuplicateDomain {
        /// The contested domain.
        domain: String,
        /// App that claimed it first.
        first: String,
        /// App that claimed it again.
        second: String,
    },
    /// Two apps share a name.
    #[error("two apps are named {0}")]
    DuplicateApp(String),
    /// Two apps share an id (the id keys live state: it must be unique).
    #[error("two apps have the id {0}")]
    DuplicateAppId(String),
    /// A domain that is not a hostname or a leftmost-label wildcard.
    #[error("invalid domain {0:?}")]
    InvalidDomain(String),
    /// An update whose revision is not newer than the published table's.
    #[error("revision {offered} is not newer than the published revision {current}")]
    StaleRevision {
        /// The published table's revision.
        current: u64,
        /// The update's revision.
        offered: u64,
    },
}

/// The persistent map behind every index of a table: a hash array mapped
/// trie whose copies share all but the paths an update touches. Keys are
/// normalised (lowercase) names; foldhash with a per-process seed keeps a
/// lookup cheap.
pub(crate) type Map<V> = rpds::HashTrieMapSync<Arc<str>, V, foldhash::fast::RandomState>;

/// What the table keeps per app id: the app and the host keys it claims,
/// so a change can take them out again without a scan.
#[derive(Debug, Clone)]
struct Entry {
    app: Arc<App>,
    /// Keys of `RouteTable::exact` pointing at `app`.
    exact: Arc<[Arc<str>]>,
    /// Keys of `RouteTable::wildcard` pointing at `app`.
    wildcard: Arc<[Arc<str>]>,
}

/// An immutable routing snapshot. Cheap to read; a new one shares
/// structure with the one it replaces (see the module docs).
#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    revision: u64,
    base_domain: Arc<str>,
    /// App id → app and the host keys it claims.
    by_id: Map<Entry>,
    /// Exact custom domain → app.
    exact: Map<Arc<App>>,
    /// Parent of a `*.` wildcard domain → app.
    wildcard: Map<Arc<App>>,
    /// Lowercase app name → app (`<name>.<base-domain>`).
    by_name: Map<Arc<App>>,
    certs: Certs,
}

/// Longest host name we ever look up (DNS limit is 253).
const MAX_HOST: usize = 255;

impl RouteTable {
    /// Starts a builder with base domain `localhost` and revision 0.
    pub fn builder() -> RouteTableBuilder {
        RouteTableBuilder {
            revision: 0,
            base_domain: "localhost".into(),
            apps: Vec::new(),
            certs: Vec::new(),
        }
    }

    /// The control plane's revision this table was built from.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The base domain (`localhost` by default).
    pub fn base_domain(&self) -> &str {
        &self.base_domain
    }

    /// Every app in the table (in no particular order).
    pub fn apps(&self) -> Apps<'_> {
        Apps(&self.by_id)
    }

    /// TLS certificates by server name.
    pub fn certs(&self) -> &Certs {
        &self.certs
    }

    /// Finds an app by name.
    pub fn app(&self, name: &str) -> Option<&Arc<App>> {
        self.by_name.get(name)
    }

    /// Finds an app by id.
    pub fn app_by_id(&self, id: &str) -> Option<&Arc<App>> {
        self.by_id.get(id).map(|e| &e.app)
    }

    /// Finds the app for a `Host` header value: case-insensitive, port
    /// ignored, a trailing dot ignored. Exact domains beat wildcards, which
    /// beat `<app>.<base-domain>`. Does not allocate.
    pub fn lookup(&self, host: &str) -> Option<&Arc<App>> {
        let mut buf = [0u8; MAX_HOST];
        let host = normalize_host(host, &mut buf)?;
        if let Some(app) = self.exact.get(host) {
            return Some(app);
        }
        // Hosts are short: a byte loop beats the searcher's set-up.
        if let Some(dot) = host.bytes().position(|b| b == b'.') {
            let parent = &host[dot + 1..];
            if !self.wildcard.is_empty() {
                if let Some(app) = self.wildcard.get(parent) {
                    return Some(app);
                }
            }
            if parent == &*self.base_domain {
                let label = &host[..host.len() - parent.len() - 1];
                return self.by_name.get(label);
            }
        }
        None
    }
}

/// The apps of a [`RouteTable`] ([`RouteTable::apps`]).
#[derive(Debug, Clone, Copy)]
pub struct Apps<'t>(&'t Map<Entry>);

impl<'t> Apps<'t> {
    /// Every app, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &'t Arc<App>> + 't {
        self.0.values().map(|e| &e.app)
    }

    /// Number of apps.
    pub fn len(&self) -> usize {
        self.0.size()
    }

    /// True when the table has no app.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Lowercases `host` into `buf`, dropping the port and a trailing dot.
/// Returns `None` for empty or over-long hosts and for non-ASCII input.
pub(crate) fn normalize_host<'b>(host: &str, buf: &'b mut [u8; MAX_HOST]) -> Option<&'b str> {
    let host = strip_port(host);
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > MAX_HOST || !host.is_ascii() {
        return None;
    }
    let out = &mut buf[..host.len()];
    for (o, b) in out.iter_mut().zip(host.bytes()) {
        *o = b.to_ascii_lowercase();
    }
    std::str::from_utf8(out).ok()
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // IPv6 literal: keep the brackets' content.
        return rest.split(']').next().unwrap_or(rest);
    }
    // From the end, the port's digits and then `:`; a byte loop, since
    // hosts are too short for a searcher's set-up to pay.
    let b = host.as_bytes();
    let digits = b.iter().rev().take_while(|c| c.is_ascii_digit()).count();
    match b.len().checked_sub(digits + 1) {
        Some(colon) if b[colon] == b':' => &host[..colon],
        _ => host,
    }
}

/// The published table: one atomic pointer, swapped on every change.
#[derive(Debug, Default)]
pub struct Routes {
    current: ArcSwap<RouteTable>,
    changed: tokio::sync::Notify,
    /// Serialises publishers, so that an update is always applied to the
    /// table it was computed against. Never taken by readers.
    writer: Mutex<()>,
}

impl Routes {
    /// Starts with `table`.
    pub fn new(table: RouteTable) -> Self {
        let table = Arc::new(table);
        for app in table.apps().iter() {
            app.live.queue.published(app);
        }
        Routes {
            current: ArcSwap::new(table),
            changed: tokio::sync::Notify::new(),
            writer: Mutex::new(()),
        }
    }

    /// The current snapshot (one atomic load; hold it for one request).
    pub fn load(&self) -> Arc<RouteTable> {
        self.current.load_full()
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Builds a whole table from `builder`, inheriting live state from the
    /// current one, and swaps it in. O(all apps): for a start, a reload or
    /// a resync; a commit uses [`Routes::update`]. Returns the new revision.
    pub fn publish(&self, builder: RouteTableBuilder) -> Result<u64, TableError> {
        let _writer = self.lock_writer();
        let previous = self.current.load();
        let table = Arc::new(builder.build_from(Some(&previous))?);
        drop(previous);
        self.swap(table.clone());
        // Requests queued on the old snapshot are served by the new one's
        // dynos (see `capacity`): new dynos, dynos now up, a raised limit.
        for app in table.apps().iter() {
            app.live.queue.published(app);
        }
        self.changed.notify_waiters();
        Ok(table.revision)
    }

    /// Applies one change to the current table ([`RouteTable::updated`])
    /// and swaps the result in: O(changed apps). On error the current table
    /// stays. Returns the new revision.
    ///
    /// Only the changed apps' queues are shown the new table: an unchanged
    /// app keeps its `Arc<App>`, which is the newest snapshot its queue
    /// already holds, so there is nothing new to dispatch to.
    pub fn update(&self, update: TableUpdate) -> Result<u64, TableError> {
        let _writer = self.lock_writer();
        let previous = self.current.load();
        if update.revision <= previous.revision {
            return Err(TableError::StaleRevision {
                current: previous.revision,
                offered: update.revision,
            });
        }
        let changed: Vec<String> = update.apps.iter().map(|a| a.id.clone()).collect();
        let table = Arc::new(previous.updated(update)?);
        drop(previous);
        self.swap(table.clone());
        for id in &changed {
            if let Some(app) = table.app_by_id(id) {
                app.live.queue.published(app);
            }
        }
        self.changed.notify_waiters();
        Ok(table.revision)
    }

    fn swap(&self, table: Arc<RouteTable>) {
        crate::metrics::table_swapped(table.revision);
        self.current.store(table);
    }

    /// Resolves at the next publication (create it before re-checking the
    /// table, so a publication in between is not missed).
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }
}

#[cfg(test)]
mod tests;
