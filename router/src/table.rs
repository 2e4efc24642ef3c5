//! The route table: an immutable snapshot of hosts, apps, settings and dynos.
//!
//! The control plane builds a new [`RouteTable`] for every committed change and
//! publishes it through [`Routes`], which swaps it in with `arc-swap`: readers on
//! the hot path take a snapshot with one atomic load and never block writers.
//!
//! Live per-dyno and per-app state (in-flight counts, quarantine, the app's
//! queue) is *not* part of the snapshot's value: it lives in `Arc`s that a new
//! table inherits from the one it replaces, keyed by app id and dyno name +
//! address, so a table swap never resets a counter or drops a queued request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::live::{AppLive, DynoLive};
use crate::settings::AppSettings;
use crate::tls::{CertSpec, Certs};

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
}

impl App {
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
    /// A domain that is not a hostname or a leftmost-label wildcard.
    #[error("invalid domain {0:?}")]
    InvalidDomain(String),
}

/// An immutable routing snapshot. Cheap to read; built once per change.
#[derive(Debug, Default)]
pub struct RouteTable {
    revision: u64,
    base_domain: Box<str>,
    apps: Vec<Arc<App>>,
    exact: HashMap<Box<str>, usize>,
    wildcard: HashMap<Box<str>, usize>,
    by_name: HashMap<Box<str>, usize>,
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

    /// Every app in the table.
    pub fn apps(&self) -> &[Arc<App>] {
        &self.apps
    }

    /// TLS certificates by server name.
    pub fn certs(&self) -> &Certs {
        &self.certs
    }

    /// Finds an app by name.
    pub fn app(&self, name: &str) -> Option<&Arc<App>> {
        self.by_name.get(name).map(|&i| &self.apps[i])
    }

    /// Finds the app for a `Host` header value: case-insensitive, port
    /// ignored, a trailing dot ignored. Exact domains beat wildcards, which
    /// beat `<app>.<base-domain>`. Does not allocate.
    pub fn lookup(&self, host: &str) -> Option<&Arc<App>> {
        let mut buf = [0u8; MAX_HOST];
        let host = normalize_host(host, &mut buf)?;
        if let Some(&i) = self.exact.get(host) {
            return Some(&self.apps[i]);
        }
        if let Some((_, parent)) = host.split_once('.') {
            if let Some(&i) = self.wildcard.get(parent) {
                return Some(&self.apps[i]);
            }
            if parent == &*self.base_domain {
                let label = &host[..host.len() - parent.len() - 1];
                if let Some(&i) = self.by_name.get(label) {
                    return Some(&self.apps[i]);
                }
            }
        }
        None
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
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Builds a [`RouteTable`], reusing live state from a previous table.
#[derive(Debug)]
pub struct RouteTableBuilder {
    revision: u64,
    base_domain: String,
    apps: Vec<AppSpec>,
    certs: Vec<CertSpec>,
}

impl RouteTableBuilder {
    /// Sets the revision.
    pub fn revision(mut self, revision: u64) -> Self {
        self.revision = revision;
        self
    }

    /// Sets the base domain (`<app>.<base>` always routes to the app).
    pub fn base_domain(mut self, base: impl Into<String>) -> Self {
        self.base_domain = base.into();
        self
    }

    /// Adds an app.
    pub fn app(mut self, app: AppSpec) -> Self {
        self.apps.push(app);
        self
    }

    /// Adds many apps.
    pub fn apps(mut self, apps: impl IntoIterator<Item = AppSpec>) -> Self {
        self.apps.extend(apps);
        self
    }

    /// Adds a TLS certificate (an SNI endpoint).
    pub fn cert(mut self, cert: CertSpec) -> Self {
        self.certs.push(cert);
        self
    }

    /// Adds many certificates.
    pub fn certs(mut self, certs: impl IntoIterator<Item = CertSpec>) -> Self {
        self.certs.extend(certs);
        self
    }

    /// Builds a fresh table (all live counters start at zero).
    pub fn build(self) -> Result<RouteTable, TableError> {
        self.build_from(None)
    }

    /// Builds a table that inherits live state from `previous`.
    pub fn build_from(self, previous: Option<&RouteTable>) -> Result<RouteTable, TableError> {
        let mut table = RouteTable {
            revision: self.revision,
            base_domain: self
                .base_domain
                .trim_matches('.')
                .to_ascii_lowercase()
                .into(),
            certs: Certs::build(&self.certs),
            ..RouteTable::default()
        };
        // Live state is inherited by app id. Index the previous table once:
        // a linear search per app made every publication quadratic in the
        // number of apps (about 2 minutes for 40 000 apps; see
        // BENCHMARKS.md, "Table scale").
        // The first app with an id wins, as the linear search did.
        let mut previous_by_id: HashMap<&str, &Arc<App>> = HashMap::new();
        for app in previous.map(|p| p.apps.as_slice()).unwrap_or_default() {
            previous_by_id.entry(&*app.id).or_insert(app);
        }
        for spec in self.apps {
            let index = table.apps.len();
            let name: Box<str> = spec.name.to_ascii_lowercase().into();
            if table.by_name.insert(name.clone(), index).is_some() {
                return Err(TableError::DuplicateApp(spec.name));
            }
            let old = previous_by_id.get(spec.id.as_str()).copied();
            for domain in &spec.domains {
                let domain = domain.trim_end_matches('.').to_ascii_lowercase();
                let (map, key) = match domain.strip_prefix("*.") {
                    Some(parent) => (&mut table.wildcard, parent.to_string()),
                    None => (&mut table.exact, domain.clone()),
                };
                if key.is_empty() || key.contains('*') || key.contains(':') {
                    return Err(TableError::InvalidDomain(domain));
                }
                if let Some(&first) = map.get(key.as_str()) {
                    if first != index {
                        return Err(TableError::DuplicateDomain {
                            domain,
                            first: table.apps[first].name.to_string(),
                            second: spec.name.clone(),
                        });
                    }
                }
                map.insert(key.into(), index);
            }
            let mut web: Vec<Dyno> = spec
                .dynos
                .iter()
                .filter(|d| d.name.split('.').next() == Some("web"))
                .map(|d| {
                    let live = old
                        .and_then(|o| {
                            o.web
                                .iter()
                                .find(|od| *od.name == *d.name && od.address == d.address)
                        })
                        .map(|od| od.live.clone())
                        .unwrap_or_default();
                    Dyno {
                        name: d.name.as_str().into(),
                        address: d.address,
                        state: d.state,
                        live,
                    }
                })
                .collect();
            web.sort_by(|a, b| dyno_order(&a.name, &b.name));
            let live = old.map(|o| o.live.clone()).unwrap_or_default();
            table.apps.push(Arc::new(App {
                id: spec.id.into(),
                name: Arc::from(name),
                settings: spec.settings,
                web: web.into_boxed_slice(),
                live,
            }));
        }
        Ok(table)
    }
}

/// Orders `web.2` before `web.10`.
fn dyno_order(a: &str, b: &str) -> std::cmp::Ordering {
    let split = |s: &str| -> (String, u64) {
        match s.rsplit_once('.') {
            Some((t, n)) => (t.to_string(), n.parse().unwrap_or(u64::MAX)),
            None => (s.to_string(), u64::MAX),
        }
    };
    split(a).cmp(&split(b)).then_with(|| a.cmp(b))
}

/// The published table: one atomic pointer, swapped on every change.
#[derive(Debug, Default)]
pub struct Routes {
    current: ArcSwap<RouteTable>,
    changed: tokio::sync::Notify,
}

impl Routes {
    /// Starts with `table`.
    pub fn new(table: RouteTable) -> Self {
        let table = Arc::new(table);
        for app in table.apps() {
            app.live.queue.published(app);
        }
        Routes {
            current: ArcSwap::new(table),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// The current snapshot (one atomic load; hold it for one request).
    pub fn load(&self) -> Arc<RouteTable> {
        self.current.load_full()
    }

    /// Builds a table from `builder`, inheriting live state from the current
    /// one, and swaps it in. Returns the new revision.
    pub fn publish(&self, builder: RouteTableBuilder) -> Result<u64, TableError> {
        let previous = self.current.load();
        let table = builder.build_from(Some(&previous))?;
        let revision = table.revision;
        crate::metrics::table_swapped(revision);
        let table = Arc::new(table);
        self.current.store(table.clone());
        // Requests queued on the old snapshot are served by the new one's
        // dynos (see `capacity`): new dynos, dynos now up, a raised limit.
        for app in table.apps() {
            app.live.queue.published(app);
        }
        self.changed.notify_waiters();
        Ok(revision)
    }

    /// Resolves at the next publication (create it before re-checking the
    /// table, so a publication in between is not missed).
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn table() -> RouteTable {
        RouteTable::builder()
            .app(
                AppSpec::new("demo")
                    .domain("www.example.com")
                    .domain("*.example.com"),
            )
            .app(AppSpec::new("api").domain("API.example.com"))
            .app(AppSpec::new("other").domain("*.other.org"))
            .build()
            .expect("valid table")
    }

    fn name(t: &RouteTable, host: &str) -> Option<String> {
        t.lookup(host).map(|a| a.name.to_string())
    }

    #[test]
    fn exact_beats_wildcard_beats_base_domain() {
        let t = table();
        assert_eq!(name(&t, "www.example.com").as_deref(), Some("demo"));
        assert_eq!(name(&t, "api.example.com").as_deref(), Some("api"));
        assert_eq!(name(&t, "x.example.com").as_deref(), Some("demo"));
        assert_eq!(name(&t, "demo.localhost").as_deref(), Some("demo"));
        assert_eq!(name(&t, "api.localhost").as_deref(), Some("api"));
    }

    #[test]
    fn case_port_and_trailing_dot_are_ignored() {
        let t = table();
        assert_eq!(name(&t, "API.Example.COM:8080").as_deref(), Some("api"));
        assert_eq!(name(&t, "demo.localhost.").as_deref(), Some("demo"));
        assert_eq!(name(&t, "Demo.LocalHost:80").as_deref(), Some("demo"));
    }

    #[test]
    fn wildcard_covers_only_the_leftmost_label() {
        let t = table();
        assert_eq!(name(&t, "a.b.example.com"), None);
        assert_eq!(name(&t, "example.com"), None);
        assert_eq!(name(&t, "a.other.org").as_deref(), Some("other"));
        assert_eq!(name(&t, "a.b.localhost"), None);
        assert_eq!(name(&t, "nope.localhost"), None);
        assert_eq!(name(&t, ""), None);
        assert_eq!(name(&t, "[::1]:80"), None);
    }

    #[test]
    fn duplicate_domains_are_refused() {
        let err = RouteTable::builder()
            .app(AppSpec::new("a").domain("x.example.com"))
            .app(AppSpec::new("b").domain("X.example.com"))
            .build()
            .expect_err("conflict");
        assert!(matches!(err, TableError::DuplicateDomain { .. }));
    }

    #[test]
    fn live_state_survives_a_swap() {
        let routes = Routes::new(
            RouteTable::builder()
                .app(
                    AppSpec::new("demo")
                        .dyno("web.1", addr(1))
                        .dyno("web.2", addr(2)),
                )
                .build()
                .expect("table"),
        );
        let t1 = routes.load();
        let d1 = &t1.app("demo").expect("app").web[0];
        d1.live.acquire();
        routes
            .publish(
                RouteTable::builder().revision(2).app(
                    AppSpec::new("demo")
                        .dyno("web.1", addr(1))
                        .dyno("web.3", addr(3)),
                ),
            )
            .expect("publish");
        let t2 = routes.load();
        assert_eq!(t2.revision(), 2);
        let app = t2.app("demo").expect("app");
        assert_eq!(app.web[0].live.in_flight(), 1);
        assert!(Arc::ptr_eq(&app.live, &t1.app("demo").expect("app").live));
        assert_eq!(app.web[1].live.in_flight(), 0);
        // A dyno that moved to a new address is a new dyno.
        routes
            .publish(RouteTable::builder().app(AppSpec::new("demo").dyno("web.1", addr(9))))
            .expect("publish");
        assert_eq!(
            routes.load().app("demo").expect("app").web[0]
                .live
                .in_flight(),
            0
        );
    }

    #[test]
    fn only_web_dynos_are_kept_in_numeric_order() {
        let t = RouteTable::builder()
            .app(
                AppSpec::new("demo")
                    .dyno("web.10", addr(10))
                    .dyno("worker.1", addr(11))
                    .dyno("web.2", addr(2)),
            )
            .build()
            .expect("table");
        let names: Vec<_> = t
            .app("demo")
            .expect("app")
            .web
            .iter()
            .map(|d| d.name.to_string())
            .collect();
        assert_eq!(names, ["web.2", "web.10"]);
    }
}
