//! Following etcd directly: no control node in the router's path.
//!
//! The store's layout ([`crate::store::EtcdStore`]) gives a router all it
//! needs: `<prefix>/kv/routes/<app-id>` holds each app's route and
//! `<prefix>/log/<revision>` each committed batch, with Switchyard's
//! revision inside.
//!
//! - **Sync** reads `<prefix>/rev` and the `routes/` keys at one etcd
//!   revision E (a transaction, then further pages pinned at E), so the
//!   table is exactly the store at Switchyard revision S.
//! - **Watch** `<prefix>/log/` from E + 1, with progress notifications. Each
//!   batch is applied if it is S + 1 (and the next, and so on); one already
//!   applied is skipped; a gap or an entry that does not decode re-lists.
//!   Deletions under `log/` are the log being trimmed, and are ignored.
//! - **Compaction**: a watch whose start etcd has compacted away is
//!   cancelled with the compact revision; the follower re-lists once and
//!   watches from the new E + 1. It never misses or reorders a change.
//! - **A hung etcd** (SIGSTOP, a frozen VM, a black-holed link): the gRPC
//!   channel sends HTTP/2 pings every second and gives up after two more;
//!   independently the follower asks for watch progress every heartbeat and
//!   counts three heartbeats without any answer as a broken link. Either way
//!   it is seen within about three seconds, shown as
//!   `switchyard_store_connected 0` and in `/readyz`, and the router keeps
//!   serving its table while it reconnects, resuming after the last etcd
//!   revision it saw.
//!
//! Metrics: `switchyard_store_connected`, `switchyard_store_revision` (the
//! newest Switchyard revision seen), `switchyard_store_relists_total`, and
//! `switchyard_store_watch_lag_seconds` (from the commit, by the committing
//! node's clock, to the change being routable here).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use etcd_client::{Client, WatchOptions};

use super::{connected, step, Failure, RouteCopy, Step};
use crate::publish::AppRoute;
use crate::store::{read_consistent, unix_ms, EtcdConfig, EtcdKeys, LogEntry};
use crate::watch::ROUTES_PREFIX;

const GAUGE: &str = "switchyard_store_connected";

/// The etcd side of a follower.
pub(super) struct EtcdLink {
    config: EtcdConfig,
    keys: EtcdKeys,
    heartbeat: Duration,
    client: Option<Client>,
    /// The etcd revision the copy reflects; the watch resumes after it.
    /// `None`: the copy is not from this store yet (list first).
    etcd_revision: Option<i64>,
}

fn broken(what: &str, e: impl std::fmt::Display) -> Failure {
    Failure::Broken(format!("etcd {what}: {e}"))
}

impl EtcdLink {
    pub(super) fn new(config: EtcdConfig, heartbeat: Duration) -> Self {
        EtcdLink {
            keys: EtcdKeys::new(&config.prefix),
            config,
            heartbeat,
            client: None,
            etcd_revision: None,
        }
    }

    pub(super) fn synced(&self) -> bool {
        self.etcd_revision.is_some()
    }

    pub(super) fn forget(&mut self) {
        self.etcd_revision = None;
    }

    async fn client(&mut self) -> Result<Client, Failure> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let (endpoints, options) = self
            .config
            .client_options()
            .map_err(|e| broken("settings", e))?;
        let client = tokio::time::timeout(
            Duration::from_secs(10),
            Client::connect(endpoints, Some(options)),
        )
        .await
        .map_err(|_| Failure::Broken("etcd connect timed out".into()))?
        .map_err(|e| broken("connect", e))?;
        self.client = Some(client.clone());
        Ok(client)
    }

    pub(super) async fn sync(&mut self, copy: &mut RouteCopy) -> Result<(), Failure> {
        let result = self.list(copy).await;
        if matches!(result, Err(Failure::Broken(_))) {
            self.client = None;
        }
        result
    }

    pub(super) async fn watch(&mut self, copy: &mut RouteCopy) -> Result<(), Failure> {
        let result = self.follow_log(copy).await;
        if matches!(result, Err(Failure::Broken(_))) {
            self.client = None;
        }
        result
    }

    /// Reads the revision and every route at one etcd revision.
    async fn list(&mut self, copy: &mut RouteCopy) -> Result<(), Failure> {
        let client = self.client().await?;
        let prefix = format!("{}{ROUTES_PREFIX}", self.keys.kv());
        let listing = tokio::time::timeout(
            Duration::from_secs(60),
            read_consistent(&client, self.keys.rev(), prefix),
        )
        .await
        .map_err(|_| Failure::Broken("etcd list timed out".into()))?
        .map_err(|e| broken("list", e))?;
        let revision = match &listing.counter {
            None => 0,
            Some(v) => std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| Failure::Broken("etcd: the revision key is not a number".into()))?,
        };
        let mut apps = Vec::with_capacity(listing.kvs.len());
        for (key, value) in listing.kvs {
            match serde_json::from_slice::<AppRoute>(&value) {
                Ok(route) => apps.push(route),
                Err(e) => tracing::warn!(
                    key = %String::from_utf8_lossy(&key),
                    error = %e,
                    "skipping a route entry that does not decode"
                ),
            }
        }
        copy.replace(revision, apps);
        // Counted once the table is in place: a reader that sees the count
        // sees the table it counts.
        copy.status.syncs.fetch_add(1, Ordering::Release);
        connected(copy, GAUGE);
        metrics::gauge!("switchyard_store_revision").set(revision as f64);
        self.etcd_revision = Some(listing.etcd_revision);
        tracing::debug!(
            revision,
            etcd_revision = listing.etcd_revision,
            "route table listed from etcd"
        );
        Ok(())
    }

    /// Applies the change log from the last etcd revision seen until the
    /// link breaks or a re-list is needed.
    async fn follow_log(&mut self, copy: &mut RouteCopy) -> Result<(), Failure> {
        let Some(seen) = self.etcd_revision else {
            return Err(Failure::Resync("nothing listed yet".into()));
        };
        let mut client = self.client().await?;
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(seen + 1)
            .with_progress_notify();
        let stream = tokio::time::timeout(
            Duration::from_secs(10),
            client.watch(self.keys.log(), Some(options)),
        )
        .await
        .map_err(|_| Failure::Broken("etcd watch timed out".into()))?
        .map_err(|e| broken("watch", e))?;
        let (mut requests, mut responses) = stream.split();
        let mut tick = tokio::time::interval(self.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let silence = self.heartbeat * 3;
        let mut heard = Instant::now();
        loop {
            let resp = tokio::select! {
                _ = tick.tick() => {
                    if heard.elapsed() >= silence {
                        return Err(Failure::Broken(format!(
                            "etcd did not answer for {} ms", silence.as_millis()
                        )));
                    }
                    requests
                        .request_progress()
                        .await
                        .map_err(|e| broken("progress request", e))?;
                    continue;
                }
                msg = responses.message() => match msg {
                    Ok(Some(resp)) => resp,
                    Ok(None) => return Err(Failure::Broken("etcd ended the watch".into())),
                    Err(e) => return Err(broken("watch", e)),
                },
            };
            heard = Instant::now();
            connected(copy, GAUGE);
            if resp.compact_revision() > 0 {
                return Err(Failure::Resync(format!(
                    "etcd compacted its history past revision {} (now {})",
                    seen + 1,
                    resp.compact_revision()
                )));
            }
            if resp.canceled() {
                return Err(Failure::Broken(format!(
                    "etcd cancelled the watch: {}",
                    resp.cancel_reason()
                )));
            }
            if resp.events().is_empty() {
                // A progress answer: every change up to its revision has
                // been sent, so a resumed watch can start after it.
                if !resp.created() {
                    if let Some(h) = resp.header() {
                        self.etcd_revision = self.etcd_revision.max(Some(h.revision()));
                    }
                }
                continue;
            }
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                // A deletion (the log being trimmed) carries no value.
                if kv.value().is_empty() {
                    self.etcd_revision = self.etcd_revision.max(Some(kv.mod_revision()));
                    continue;
                }
                let entry: LogEntry = serde_json::from_slice(kv.value()).map_err(|e| {
                    Failure::Resync(format!(
                        "a change-log entry this router cannot read ({}): {e}",
                        String::from_utf8_lossy(kv.key())
                    ))
                })?;
                let revision = entry.batch.revision;
                metrics::gauge!("switchyard_store_revision").set(revision as f64);
                if copy.revision.is_some_and(|r| revision <= r) {
                    // Already applied (a watch resumed before a progress mark).
                } else {
                    match step(copy.revision, revision, entry.batch.changes) {
                        Step::Apply { revision, updates } => copy.apply(revision, updates),
                        Step::Resync(why) => return Err(Failure::Resync(why)),
                        Step::Idle => {}
                    }
                    if let Some(at) = entry.committed_at_ms {
                        let lag = unix_ms().saturating_sub(at);
                        metrics::histogram!("switchyard_store_watch_lag_seconds")
                            .record(lag as f64 / 1000.0);
                    }
                }
                self.etcd_revision = self.etcd_revision.max(Some(kv.mod_revision()));
            }
        }
    }
}
