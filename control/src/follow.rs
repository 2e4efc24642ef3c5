//! A remote router's side of publication: follow a control plane's route
//! table over HTTP and keep serving the last table when it is away.
//!
//! The follower is a small state machine (see [`crate::publish`] for the
//! protocol):
//!
//! 1. **Sync**: `GET /routes`; replace the local copy, publish it.
//! 2. **Watch**: `GET /routes/watch?since=R`; apply each `change` event to
//!    the local copy, publish, advance R. A `heartbeat` only proves the
//!    connection is alive; no bytes for three heartbeat intervals means the
//!    connection is dead.
//! 3. **Resync** event → back to 1. So is a change the follower cannot use:
//!    a revision out of order, a line that is not an event it knows (a newer
//!    control plane's), or a route entry that does not decode. Such a change
//!    is never half-applied and R never advances past it: the follower keeps
//!    serving its table and re-reads `GET /routes`. Repeated resyncs at the
//!    same revision back off like errors. [`decide`] is that rule, sans I/O.
//! 4. **Error** (refused, reset, timeout, bad status) → keep serving the
//!    current table, wait with capped exponential backoff, and resume the
//!    watch from R (no full re-read unless the control plane asks for one).
//!
//! With a cache file, the follower also keeps the last table on disk
//! (written at most once a second: temp file, fsync, rename) and starts from
//! it, so a router restarted while the control plane is down still serves.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::publish::{table_builder, AppRoute};
use crate::watch::{WatchEvent, ROUTES_PREFIX};

/// Where and how to follow.
#[derive(Debug, Clone)]
pub struct FollowSettings {
    /// Control plane base URL, e.g. `http://127.0.0.1:5000`.
    pub control_url: String,
    /// API key.
    pub api_key: String,
    /// Base domain for `<app>.<base>` (the router's own setting).
    pub base_domain: String,
    /// Heartbeat interval asked of the control plane.
    pub heartbeat: Duration,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// Where to keep the last table across restarts (`None`: memory only).
    pub cache: Option<std::path::PathBuf>,
}

impl FollowSettings {
    /// Settings with a 5 s heartbeat and a 5 s backoff cap.
    pub fn new(
        control_url: impl Into<String>,
        api_key: impl Into<String>,
        base_domain: impl Into<String>,
    ) -> Self {
        FollowSettings {
            control_url: control_url.into().trim_end_matches('/').to_string(),
            api_key: api_key.into(),
            base_domain: base_domain.into(),
            heartbeat: Duration::from_secs(5),
            max_backoff: Duration::from_secs(5),
            cache: None,
        }
    }
}

/// What a follower exposes for health and tests.
#[derive(Debug, Default)]
pub struct FollowStatus {
    /// The revision of the table being served (0: none yet).
    pub revision: AtomicU64,
    /// Full re-reads of `GET /routes` so far.
    pub syncs: AtomicU64,
    /// Times the control plane was unreachable or the stream broke.
    pub failures: AtomicU64,
}

#[derive(Debug, Deserialize, serde::Serialize)]
struct Snapshot {
    revision: u64,
    apps: Vec<AppRoute>,
}

#[derive(Debug)]
enum Failure {
    Resync(String),
    Broken(String),
}

/// What the follower does with one line of the watch stream.
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
    /// Keep the table, do not advance, and re-read `GET /routes`.
    Resync(String),
}

/// The follower's rule for one watch line, given the revision it serves
/// (`None`: nothing yet). A line it cannot use in full asks for a resync,
/// so a change is applied whole or not at all and the revision never
/// moves past a change the follower did not apply.
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
        WatchEvent::Change { revision, changes } => {
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
    }
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

struct Follower {
    settings: FollowSettings,
    routes: Arc<router::Routes>,
    status: Arc<FollowStatus>,
    client: HttpClient,
    apps: BTreeMap<String, AppRoute>,
    revision: Option<u64>,
    /// Hands the latest table to the cache writer (when caching).
    cache: Option<tokio::sync::watch::Sender<Option<Arc<Snapshot>>>>,
}

/// Follows the control plane until `shutdown` resolves, publishing into
/// `routes`. Never gives up; never clears the table because of an error.
pub async fn follow(
    settings: FollowSettings,
    routes: Arc<router::Routes>,
    status: Arc<FollowStatus>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let mut f = Follower {
        cache: None,
        settings,
        routes,
        status,
        client: Client::builder(TokioExecutor::new()).build_http(),
        apps: BTreeMap::new(),
        revision: None,
    };
    let mut writer = None;
    if let Some(path) = f.settings.cache.clone() {
        match read_cache(&path).await {
            Some(snap) => {
                tracing::info!(revision = snap.revision, path = %path.display(), "serving the cached route table");
                f.apps = snap.apps.into_iter().map(|a| (a.id.clone(), a)).collect();
                f.publish(snap.revision);
            }
            None => tracing::info!(path = %path.display(), "no cached route table"),
        }
        let (tx, rx) = tokio::sync::watch::channel(None);
        f.cache = Some(tx);
        writer = Some(tokio::spawn(write_cache(path, rx)));
    }
    tokio::select! {
        _ = f.run() => {}
        _ = shutdown => {}
    }
    drop(f);
    if let Some(w) = writer {
        let _ = w.await;
    }
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
    mut rx: tokio::sync::watch::Receiver<Option<Arc<Snapshot>>>,
) {
    loop {
        let ended = rx.changed().await.is_err();
        let latest = rx.borrow_and_update().clone();
        if let Some(snap) = latest {
            let p = path.clone();
            let written = tokio::task::spawn_blocking(move || store_atomically(&p, &snap)).await;
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

impl Follower {
    async fn run(&mut self) {
        let mut backoff = Duration::from_millis(100);
        // The revision served at the last resync: a second resync there made
        // no progress and waits like an error does.
        let mut last_resync: Option<Option<u64>> = None;
        loop {
            let result = match self.revision {
                None => self.sync().await,
                Some(rev) => self.watch(rev).await,
            };
            match result {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(Failure::Resync(why)) => {
                    metrics::counter!("switchyard_table_resyncs_total").increment(1);
                    tracing::info!(revision = ?self.revision, reason = %why, "re-reading the route table");
                    if last_resync == Some(self.revision) {
                        tokio::time::sleep(jitter(backoff)).await;
                        backoff = (backoff * 2).min(self.settings.max_backoff);
                    }
                    last_resync = Some(self.revision);
                    self.revision = None;
                }
                Err(Failure::Broken(why)) => {
                    self.status.failures.fetch_add(1, Ordering::Relaxed);
                    metrics::gauge!("switchyard_control_connected").set(0.0);
                    tracing::warn!(error = %why, revision = ?self.revision, "control plane unreachable; serving the last table");
                    tokio::time::sleep(jitter(backoff)).await;
                    backoff = (backoff * 2).min(self.settings.max_backoff);
                }
            }
        }
    }

    fn request(&self, path: &str) -> Result<hyper::Request<Empty<Bytes>>, Failure> {
        hyper::Request::get(format!("{}{}", self.settings.control_url, path))
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", self.settings.api_key),
            )
            .body(Empty::new())
            .map_err(|e| Failure::Broken(format!("bad control URL: {e}")))
    }

    async fn sync(&mut self) -> Result<(), Failure> {
        let req = self.request("/routes")?;
        let res = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .map_err(|_| Failure::Broken("GET /routes timed out".into()))?
            .map_err(|e| Failure::Broken(format!("GET /routes: {e}")))?;
        if !res.status().is_success() {
            return Err(Failure::Broken(format!(
                "GET /routes: status {}",
                res.status()
            )));
        }
        let body = tokio::time::timeout(Duration::from_secs(30), res.into_body().collect())
            .await
            .map_err(|_| Failure::Broken("GET /routes body timed out".into()))?
            .map_err(|e| Failure::Broken(format!("GET /routes body: {e}")))?
            .to_bytes();
        let snap: Snapshot = serde_json::from_slice(&body)
            .map_err(|e| Failure::Broken(format!("GET /routes: bad JSON: {e}")))?;
        self.apps = snap.apps.into_iter().map(|a| (a.id.clone(), a)).collect();
        self.status.syncs.fetch_add(1, Ordering::Relaxed);
        self.publish(snap.revision);
        Ok(())
    }

    async fn watch(&mut self, since: u64) -> Result<(), Failure> {
        let hb = self.settings.heartbeat.as_millis();
        let req = self.request(&format!("/routes/watch?since={since}&heartbeat_ms={hb}"))?;
        let res = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .map_err(|_| Failure::Broken("watch request timed out".into()))?
            .map_err(|e| Failure::Broken(format!("watch: {e}")))?;
        if !res.status().is_success() {
            return Err(Failure::Broken(format!("watch: status {}", res.status())));
        }
        metrics::gauge!("switchyard_control_connected").set(1.0);
        let mut body = res.into_body();
        let mut buf = BytesMut::new();
        let silence = self.settings.heartbeat * 3;
        loop {
            let frame = match tokio::time::timeout(silence, body.frame()).await {
                Err(_) => return Err(Failure::Broken("watch: no heartbeat".into())),
                Ok(None) => return Err(Failure::Broken("watch stream ended".into())),
                Ok(Some(Err(e))) => return Err(Failure::Broken(format!("watch: {e}"))),
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                let line = buf.split_to(pos + 1);
                match decide(self.revision, &line[..pos]) {
                    Step::Idle => {}
                    Step::Resync(why) => return Err(Failure::Resync(why)),
                    Step::Apply { revision, updates } => {
                        for (id, route) in updates {
                            match route {
                                Some(route) => self.apps.insert(id, route),
                                None => self.apps.remove(&id),
                            };
                        }
                        self.publish(revision);
                    }
                }
            }
            if buf.len() > 64 << 20 {
                buf.advance(buf.len());
                return Err(Failure::Broken("watch: event too large".into()));
            }
        }
    }

    fn publish(&mut self, revision: u64) {
        let builder = table_builder(revision, &self.settings.base_domain, self.apps.values());
        if let Err(e) = self.routes.publish(builder) {
            tracing::error!(error = %e, revision, "route table rejected; keeping the previous one");
        }
        self.revision = Some(revision);
        self.status.revision.store(revision, Ordering::Relaxed);
        metrics::gauge!("switchyard_table_revision").set(revision as f64);
        if let Some(cache) = &self.cache {
            cache.send_replace(Some(Arc::new(Snapshot {
                revision,
                apps: self.apps.values().cloned().collect(),
            })));
        }
    }
}

fn jitter(d: Duration) -> Duration {
    let ms = d.as_millis() as u64;
    Duration::from_millis(ms / 2 + rand::random::<u64>() % (ms / 2 + 1))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{decide, Step};

    fn route(id: &str) -> serde_json::Value {
        json!({
            "id": id, "name": id, "domains": [], "dynos": [], "certs": [],
            "settings": { "maintenance": false, "session_affinity": false,
                          "error_page_url": null, "maintenance_page_url": null },
        })
    }

    fn change(revision: u64, changes: serde_json::Value) -> Vec<u8> {
        json!({ "type": "change", "revision": revision, "changes": changes })
            .to_string()
            .into_bytes()
    }

    #[test]
    fn heartbeats_and_blank_lines_change_nothing() {
        assert_eq!(
            decide(Some(3), br#"{"type":"heartbeat","revision":3}"#),
            Step::Idle
        );
        assert_eq!(decide(Some(3), b"  "), Step::Idle);
    }

    #[test]
    fn the_next_revision_is_applied_whole() {
        let line = change(
            4,
            json!([
                { "key": "routes/a", "value": route("a") },
                { "key": "routes/b", "value": null },
                { "key": "apps/a", "value": { "ignored": true } },
            ]),
        );
        let Step::Apply { revision, updates } = decide(Some(3), &line) else {
            panic!("not applied");
        };
        assert_eq!(revision, 4);
        assert_eq!(updates.len(), 2);
        assert_eq!(updates[0].0, "a");
        assert_eq!(updates[0].1.as_ref().map(|r| r.name.as_str()), Some("a"));
        assert_eq!(updates[1], ("b".to_string(), None));
        // An empty change still moves the revision on.
        assert_eq!(
            decide(Some(4), &change(5, json!([]))),
            Step::Apply {
                revision: 5,
                updates: vec![]
            }
        );
    }

    #[test]
    fn what_cannot_be_used_whole_is_a_resync_not_a_skip() {
        // One good entry and one that does not decode: nothing is applied.
        let line = change(
            4,
            json!([
                { "key": "routes/a", "value": route("a") },
                { "key": "routes/b", "value": { "id": "b", "dynos": "many" } },
            ]),
        );
        assert!(matches!(decide(Some(3), &line), Step::Resync(why) if why.contains("app b")));
        // A gap, a repeat, an event kind from a newer control plane, garbage.
        assert!(matches!(
            decide(Some(3), &change(5, json!([]))),
            Step::Resync(_)
        ));
        assert!(matches!(
            decide(Some(3), &change(3, json!([]))),
            Step::Resync(_)
        ));
        assert!(matches!(
            decide(Some(3), br#"{"type":"compacted","revision":9}"#),
            Step::Resync(_)
        ));
        assert!(matches!(decide(Some(3), b"{not json"), Step::Resync(_)));
        assert!(matches!(
            decide(Some(3), br#"{"type":"resync","revision":9,"oldest":7}"#),
            Step::Resync(_)
        ));
    }
}
