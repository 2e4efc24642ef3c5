//! A router apart from the control plane: follow the route table from a
//! control plane over HTTP ([`http`]) or straight from etcd ([`etcd`]),
//! and keep serving the last table whenever the source is away.
//!
//! Both sources run the same state machine:
//!
//! 1. **Sync**: read the whole table at one revision; replace the local
//!    copy and publish it whole.
//! 2. **Watch**: apply each later change, in order, to the local copy and
//!    hand the router only the apps it touched
//!    ([`router::Routes::update`]: O(changed apps), whatever the table's
//!    size). The source proves it is alive at a fixed interval (the control
//!    plane's heartbeat; etcd's answer to a progress request); silence for
//!    three intervals means the link is dead.
//! 3. **Resync** → back to 1: the source asked for it, the change log no
//!    longer reaches back (etcd compaction, a trimmed log), or a change the
//!    follower cannot use whole (a revision out of order, an event it does
//!    not know, a route entry that does not decode). Such a change is never
//!    half-applied and the revision never moves past it. Repeated resyncs at
//!    the same revision back off like errors. [`decide`] and [`step`] are
//!    that rule, sans I/O.
//! 4. **Error** (refused, reset, timed out, silent) → keep serving the
//!    current table, wait with capped exponential backoff and jitter, and
//!    resume the watch where it stopped (no full re-read unless the source
//!    cannot resume). Silence never removes a dyno: only an explicit change
//!    does.
//!
//! With a cache file, the follower also keeps the last table on disk
//! (written at most once a second: temp file, fsync, rename) and starts from
//! it, so a router restarted while its source is down still serves.

pub mod etcd;
pub mod http;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::publish::{AppRoute, Published};
use crate::store::{Change, EtcdConfig};
use crate::watch::{WatchEvent, ROUTES_PREFIX};

/// Where the table comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A control plane's `GET /routes` and `GET /routes/watch`.
    Control {
        /// Base URL, e.g. `http://127.0.0.1:5000`.
        url: String,
        /// API key.
        api_key: String,
    },
    /// The store itself: etcd, under a prefix (see [`crate::store::EtcdStore`]).
    Etcd(EtcdConfig),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Control { url, .. } => write!(f, "control plane {url}"),
            Source::Etcd(c) => write!(f, "etcd {} under {}", c.endpoints.join(","), c.prefix),
        }
    }
}

/// Where and how to follow.
#[derive(Debug, Clone)]
pub struct FollowSettings {
    /// The source of the table.
    pub source: Source,
    /// Base domain for `<app>.<base>` (the router's own setting).
    pub base_domain: String,
    /// How often the source must prove it is alive; three silent intervals
    /// break the link.
    pub heartbeat: Duration,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// Where to keep the last table across restarts (`None`: memory only).
    pub cache: Option<std::path::PathBuf>,
}

impl FollowSettings {
    /// Follow a control plane: 5 s heartbeat, 5 s backoff cap.
    pub fn new(
        control_url: impl Into<String>,
        api_key: impl Into<String>,
        base_domain: impl Into<String>,
    ) -> Self {
        FollowSettings {
            source: Source::Control {
                url: control_url.into().trim_end_matches('/').to_string(),
                api_key: api_key.into(),
            },
            base_domain: base_domain.into(),
            heartbeat: Duration::from_secs(5),
            max_backoff: Duration::from_secs(5),
            cache: None,
        }
    }

    /// Follow etcd directly: a progress request every second, so a hung
    /// etcd is noticed within about three (the gRPC channel's HTTP/2
    /// keep-alive usually notices first); 2 s backoff cap.
    pub fn etcd(config: EtcdConfig, base_domain: impl Into<String>) -> Self {
        FollowSettings {
            source: Source::Etcd(config),
            base_domain: base_domain.into(),
            heartbeat: Duration::from_secs(1),
            max_backoff: Duration::from_secs(2),
            cache: None,
        }
    }
}

/// What a follower exposes for health and tests.
#[derive(Debug, Default)]
pub struct FollowStatus {
    /// The revision of the table being served.
    pub revision: AtomicU64,
    /// A table is served (from the source or from the cache file).
    pub loaded: AtomicBool,
    /// The source answered last time (false until it first does).
    pub connected: AtomicBool,
    /// Full reads of the table so far (the first one included), each
    /// counted once its table is in place.
    pub syncs: AtomicU64,
    /// Times the source was unreachable, silent or broke the stream.
    pub failures: AtomicU64,
}

impl FollowStatus {
    /// One line for `/readyz`: the source's state and the served revision.
    pub fn describe(&self) -> String {
        let revision = self.revision.load(Ordering::Acquire);
        if self.connected.load(Ordering::Acquire) {
            format!("source connected, serving revision {revision}")
        } else if self.loaded.load(Ordering::Acquire) {
            format!("source unreachable, serving the last table (revision {revision})")
        } else {
            "source unreachable, no table yet".to_string()
        }
    }
}

/// The table as kept in the cache file.
#[derive(Debug, Deserialize, Serialize)]
struct Snapshot {
    revision: u64,
    apps: Vec<AppRoute>,
}

/// Why a sync or a watch ended.
#[derive(Debug)]
enum Failure {
    /// Re-read the whole table (the link is fine).
    Resync(String),
    /// The link is down or silent.
    Broken(String),
}

/// What the follower does with one change or one watch line.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Nothing to apply (a heartbeat, a blank line).
    Idle,
    /// Apply these `routes/` updates (`None`: the app is gone) and move to
    /// `revision`. Every entry decoded.
    Apply {
        /// The revision the change creates.
        revision: u64,
        /// App id and its new route.
        updates: Vec<(String, Option<AppRoute>)>,
    },
    /// Keep the table, do not advance, and re-read it whole.
    Resync(String),
}

/// The follower's rule for one control-plane watch line, given the
/// revision it serves (`None`: nothing yet). A line it cannot use in full
/// asks for a resync, so a change is applied whole or not at all and the
/// revision never moves past a change the follower did not apply.
pub fn decide(current: Option<u64>, line: &[u8]) -> Step {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Step::Idle;
    }
    let event: WatchEvent = match serde_json::from_slice(line) {
        Ok(e) => e,
        Err(e) => return Step::Resync(format!("an event this router cannot read: {e}")),
    };
    match event {
        WatchEvent::Heartbeat { .. } => Step::Idle,
        WatchEvent::Resync { .. } => Step::Resync("the control plane asked for it".into()),
        WatchEvent::Change { revision, changes } => step(current, revision, changes),
    }
}

/// The rule for one committed batch, whichever source carried it: the next
/// revision, every `routes/` entry decoded, or a resync.
pub fn step(current: Option<u64>, revision: u64, changes: Vec<Change>) -> Step {
    let expected = current.map_or(0, |r| r + 1);
    if revision != expected {
        return Step::Resync(format!("revision {revision} after {current:?}"));
    }
    let mut updates = Vec::with_capacity(changes.len());
    for c in changes {
        let Some(id) = c.key.strip_prefix(ROUTES_PREFIX) else {
            continue;
        };
        let route = match c.value.map(serde_json::from_value::<AppRoute>) {
            None => None,
            Some(Ok(route)) => Some(route),
            Some(Err(e)) => {
                return Step::Resync(format!(
                    "revision {revision}: the route of app {id} does not decode: {e}"
                ))
            }
        };
        updates.push((id.to_string(), route));
    }
    Step::Apply { revision, updates }
}

/// The follower's copy of the table and what it hands the router.
struct RouteCopy {
    /// Every app's route, by id; a persistent map, so handing the cache
    /// writer a snapshot is O(1).
    apps: rpds::RedBlackTreeMapSync<String, AppRoute>,
    /// The router's specs, for O(changed app) updates.
    published: Published,
    /// The revision served (`None`: nothing from the source yet).
    revision: Option<u64>,
    routes: Arc<router::Routes>,
    base_domain: String,
    status: Arc<FollowStatus>,
    /// Hands the latest table to the cache writer (when caching).
    cache: Option<tokio::sync::watch::Sender<Option<CacheCopy>>>,
}

/// What the cache writer is handed: O(1) to make.
#[derive(Clone)]
struct CacheCopy {
    revision: u64,
    apps: rpds::RedBlackTreeMapSync<String, AppRoute>,
}

impl RouteCopy {
    /// Replaces the whole table (a sync, or the cache at start).
    fn replace(&mut self, revision: u64, apps: Vec<AppRoute>) {
        self.apps = apps.into_iter().map(|a| (a.id.clone(), a)).collect();
        self.published = Published::of_routes(self.apps.values());
        self.publish(revision);
    }

    /// Applies one change's updates.
    fn apply(&mut self, revision: u64, updates: Vec<(String, Option<AppRoute>)>) {
        for (id, route) in updates {
            self.published.set_route(&id, route.as_ref());
            match route {
                Some(route) => self.apps.insert_mut(id, route),
                None => {
                    self.apps.remove_mut(&id);
                }
            }
        }
        self.publish(revision);
    }

    fn publish(&mut self, revision: u64) {
        let routes = Some(&*self.routes);
        if let Err(e) = self
            .published
            .publish_routes(routes, revision, &self.base_domain)
        {
            tracing::error!(error = %e, revision, "route table rejected; keeping the previous one");
        }
        self.revision = Some(revision);
        self.status.revision.store(revision, Ordering::Release);
        self.status.loaded.store(true, Ordering::Release);
        metrics::gauge!("switchyard_table_revision").set(revision as f64);
        if let Some(cache) = &self.cache {
            cache.send_replace(Some(CacheCopy {
                revision,
                apps: self.apps.clone(),
            }));
        }
    }
}

/// Follows `settings.source` until `shutdown` resolves, publishing into
/// `routes`. Never gives up; never clears the table because of an error.
pub async fn follow(
    settings: FollowSettings,
    routes: Arc<router::Routes>,
    status: Arc<FollowStatus>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let mut copy = RouteCopy {
        apps: rpds::RedBlackTreeMapSync::new_sync(),
        published: Published::default(),
        revision: None,
        routes,
        base_domain: settings.base_domain.clone(),
        status: status.clone(),
        cache: None,
    };
    let mut writer = None;
    if let Some(path) = settings.cache.clone() {
        match read_cache(&path).await {
            Some(snap) => {
                tracing::info!(revision = snap.revision, path = %path.display(), "serving the cached route table");
                copy.replace(snap.revision, snap.apps);
                // The cache is not the source: the first sync replaces it
                // whole, whatever its revision.
                copy.revision = None;
            }
            None => tracing::info!(path = %path.display(), "no cached route table"),
        }
        let (tx, rx) = tokio::sync::watch::channel(None);
        copy.cache = Some(tx);
        writer = Some(tokio::spawn(write_cache(path, rx)));
    }
    tokio::select! {
        _ = run(&settings, &mut copy) => {}
        _ = shutdown => {}
    }
    drop(copy);
    if let Some(w) = writer {
        let _ = w.await;
    }
}

/// The source side of the state machine.
#[allow(clippy::large_enum_variant)] // one per follower, never moved
enum Link {
    Http(http::HttpLink),
    Etcd(etcd::EtcdLink),
}

impl Link {
    fn synced(&self) -> bool {
        match self {
            Link::Http(l) => l.synced,
            Link::Etcd(l) => l.synced(),
        }
    }

    fn forget(&mut self) {
        match self {
            Link::Http(l) => l.synced = false,
            Link::Etcd(l) => l.forget(),
        }
    }

    async fn sync(&mut self, copy: &mut RouteCopy) -> Result<(), Failure> {
        match self {
            Link::Http(l) => l.sync(copy).await,
            Link::Etcd(l) => l.sync(copy).await,
        }
    }

    async fn watch(&mut self, copy: &mut RouteCopy) -> Result<(), Failure> {
        match self {
            Link::Http(l) => l.watch(copy).await,
            Link::Etcd(l) => l.watch(copy).await,
        }
    }

    fn connected_gauge(&self) -> &'static str {
        match self {
            Link::Http(_) => "switchyard_control_connected",
            Link::Etcd(_) => "switchyard_store_connected",
        }
    }

    fn resync_counter(&self) -> &'static str {
        match self {
            Link::Http(_) => "switchyard_table_resyncs_total",
            Link::Etcd(_) => "switchyard_store_relists_total",
        }
    }
}

async fn run(settings: &FollowSettings, copy: &mut RouteCopy) {
    let mut link = match &settings.source {
        Source::Control { url, api_key } => {
            Link::Http(http::HttpLink::new(url, api_key, settings.heartbeat))
        }
        Source::Etcd(config) => Link::Etcd(etcd::EtcdLink::new(config.clone(), settings.heartbeat)),
    };
    let status = copy.status.clone();
    let mut backoff = Duration::from_millis(100);
    // The revision served at the last resync: a second resync there made
    // no progress and waits like an error does.
    let mut last_resync: Option<Option<u64>> = None;
    loop {
        let result = if link.synced() {
            link.watch(copy).await
        } else {
            link.sync(copy).await
        };
        match result {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(Failure::Resync(why)) => {
                metrics::counter!(link.resync_counter()).increment(1);
                tracing::info!(revision = ?copy.revision, reason = %why, "re-reading the route table");
                if last_resync == Some(copy.revision) {
                    tokio::time::sleep(jitter(backoff)).await;
                    backoff = (backoff * 2).min(settings.max_backoff);
                }
                last_resync = Some(copy.revision);
                link.forget();
            }
            Err(Failure::Broken(why)) => {
                let failures = status.failures.fetch_add(1, Ordering::Relaxed);
                let was_connected = status.connected.swap(false, Ordering::AcqRel);
                metrics::gauge!(link.connected_gauge()).set(0.0);
                if was_connected || failures == 0 {
                    tracing::warn!(source = %settings.source, error = %why, revision = ?copy.revision, "route source unreachable; serving the last table");
                } else {
                    tracing::debug!(error = %why, "route source still unreachable");
                }
                tokio::time::sleep(jitter(backoff)).await;
                backoff = (backoff * 2).min(settings.max_backoff);
            }
        }
    }
}

/// Marks the source as answering (and says so when it was not).
fn connected(copy: &RouteCopy, gauge: &'static str) {
    if !copy.status.connected.swap(true, Ordering::AcqRel) {
        tracing::info!(revision = ?copy.revision, "route source answers; following it");
    }
    metrics::gauge!(gauge).set(1.0);
}

async fn read_cache(path: &std::path::Path) -> Option<Snapshot> {
    let bytes = tokio::fs::read(path).await.ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), "ignoring an unreadable route-table cache");
            None
        }
    }
}

/// Writes the latest table at most once a second until the follower ends
/// (then once more, so the last table is on disk).
async fn write_cache(
    path: std::path::PathBuf,
    mut rx: tokio::sync::watch::Receiver<Option<CacheCopy>>,
) {
    loop {
        let ended = rx.changed().await.is_err();
        let latest = rx.borrow_and_update().clone();
        if let Some(copy) = latest {
            let p = path.clone();
            let written = tokio::task::spawn_blocking(move || {
                let snap = Snapshot {
                    revision: copy.revision,
                    apps: copy.apps.values().cloned().collect(),
                };
                store_atomically(&p, &snap)
            })
            .await;
            if let Ok(Err(e)) = written {
                tracing::warn!(error = %e, path = %path.display(), "cannot write the route-table cache");
            }
        }
        if ended {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn store_atomically(path: &std::path::Path, snap: &Snapshot) -> std::io::Result<()> {
    use std::io::Write as _;
    let bytes = serde_json::to_vec(snap).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

fn jitter(d: Duration) -> Duration {
    let ms = d.as_millis() as u64;
    Duration::from_millis(ms / 2 + rand::random::<u64>() % (ms / 2 + 1))
}

#[cfg(test)]
mod tests;
