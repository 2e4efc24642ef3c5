//! The control plane's core: one writer, a mirror for readers, publication.
//!
//! [`Control`] owns the [`Store`], the in-memory [`State`] that mirrors it,
//! and the handles it publishes into (the in-process router's
//! [`router::Routes`] and a [`LogBackend`]). Every change goes through
//! [`Control::change`]:
//!
//! 1. take the writer lock (changes are serialised; reads never wait for it);
//! 2. run the caller's closure over a [`Txn`] — it validates and writes;
//! 3. re-derive `routes/<app>` for the touched apps;
//! 4. commit the batch to the store (durable before we go on);
//! 5. apply it to the mirror, publish the route table and logplex config,
//!    announce the revision to watchers, and write the audit lines into each
//!    app's log as `heroku[api]`.
//!
//! If the commit fails nothing is applied or published, and the client gets
//! a 503: an acknowledged change is always a durable one.
//!
//! # Cancellation
//!
//! An API handler's future is dropped when its client goes away. Steps 1–3
//! change nothing outside the closure, so dropping the future there is
//! harmless. Steps 4–5 run in a task of their own that owns the writer lock
//! ([`tokio::sync::Mutex::lock_owned`]): once a batch is handed to the store,
//! commit, apply, publish, announce and audit run to completion whatever the
//! client does, and the handler only awaits the outcome. The in-memory
//! revision therefore never falls behind the store because of a client.
//!
//! # Conflicts
//!
//! The store refuses a commit whose base revision is not its own
//! ([`StoreError::Conflict`]): another writer (a second control node on the
//! same store, an operator's import) got there first, or an earlier commit
//! failed after it was durable. The mirror is then reloaded from the store
//! and republished, and the caller's closure runs again on the fresh state
//! (it is `FnMut` for that reason): a change that is still valid commits on
//! the new base, and one that no longer is gets the very answer a single
//! node gives (two nodes creating the same app: one 201, one 422 "name is
//! already taken"). The conflict stays invisible to clients unless other
//! writers win [`CONFLICT_ATTEMPTS`] times in a row; then the change answers
//! 409 `conflict` asking for a retry. The same reload follows any other
//! commit failure after which the store is no longer at the mirror's
//! revision. Uniqueness therefore holds across control nodes through the
//! store's compare-and-swap, not through the process-local writer lock.
//!
//! A node's reads come from its mirror, which other nodes' commits do not
//! touch: [`Control::catch_up`] applies them from the store's change log (or
//! re-lists past its end), and a node on a shared store runs it every few
//! hundred milliseconds (the binary's `follow_store`).

use std::sync::{Arc, RwLock, RwLockReadGuard};

use tokio::sync::{watch, Mutex};

use crate::error::ApiError;
use crate::model::AuditRecord;
use crate::publish::{self, LogBackend, Published};
use crate::state::{State, Txn};
use crate::store::{Change, Store, StoreError};

/// How many times a change runs against a store that other writers keep
/// moving before it answers 409 `conflict`.
pub const CONFLICT_ATTEMPTS: usize = 5;

/// How long [`Control::refresh`] waits for a shared store's revision.
pub const FRESHNESS_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Why a commit did not go through.
enum CommitError {
    /// The store is at `actual`, not at the change's base; the mirror has
    /// been reloaded, so the change can run again.
    Conflict { expected: u64, actual: u64 },
    /// Anything else: the client gets this error.
    Failed(ApiError),
}

/// What the control plane needs to know about the deployment.
#[derive(Debug, Clone)]
pub struct ControlSettings {
    /// Apps answer on `<app>.<base_domain>`.
    pub base_domain: String,
    /// The router's public HTTP port, for `web_url` (`None`: port 80).
    pub router_http_port: Option<u16>,
    /// The e-mail shown as the account and release user.
    pub owner_email: String,
}

impl Default for ControlSettings {
    fn default() -> Self {
        ControlSettings {
            base_domain: "localhost".into(),
            router_http_port: Some(8080),
            owner_email: "admin@switchyard.local".into(),
        }
    }
}

/// The control plane: store, mirror, writer lock and publication targets.
pub struct Control {
    /// Durable state; written only under `writer`.
    store: Arc<dyn Store>,
    /// Mirror of the store as of the last commit; handlers read it.
    state: RwLock<State>,
    /// Serialises changes. Held from the caller's closure until the change
    /// is published; the commit task owns it (see "Cancellation").
    writer: Arc<Mutex<()>>,
    /// Per-app specs as last published; changed only under `writer` (and
    /// at open), so a commit re-derives only the apps it touched.
    published: std::sync::Mutex<Published>,
    /// The last committed revision, for watchers.
    revision: watch::Sender<u64>,
    /// The in-process router's table, when this process routes.
    routes: Option<Arc<router::Routes>>,
    /// Logplex, when this process carries logs.
    logs: Option<Arc<dyn LogBackend>>,
    /// Deployment settings.
    settings: ControlSettings,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("revision", &*self.revision.borrow())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Control {
    /// Loads `store` and publishes its current state into `routes` and `logs`.
    pub fn open(
        store: Arc<dyn Store>,
        settings: ControlSettings,
        routes: Option<Arc<router::Routes>>,
        logs: Option<Arc<dyn LogBackend>>,
    ) -> Result<Arc<Self>, StoreError> {
        let state = State::from(store.load()?);
        let published = std::sync::Mutex::new(Published::of(&state));
        let (revision, _) = watch::channel(state.revision);
        let control = Arc::new(Control {
            store,
            state: RwLock::new(state),
            writer: Arc::new(Mutex::new(())),
            published,
            revision,
            routes,
            logs,
            settings,
        });
        control.publish(control.read().revision, true);
        Ok(control)
    }

    /// The deployment settings.
    pub fn settings(&self) -> &ControlSettings {
        &self.settings
    }

    /// The store (for watchers replaying the change log).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// A read view of the state. Hold it briefly: commits wait for it.
    pub fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows the committed revision.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }

    /// The log backend, if any.
    pub fn logs(&self) -> Option<&Arc<dyn LogBackend>> {
        self.logs.as_ref()
    }

    /// Runs `f` as one atomic, durable change (see the module docs). Once
    /// the batch goes to the store, dropping the returned future no longer
    /// stops the change: it is committed, applied and published regardless.
    /// `f` runs again on the reloaded state when another writer committed
    /// first ("Conflicts").
    pub async fn change<R>(
        self: &Arc<Self>,
        mut f: impl FnMut(&mut Txn<'_>) -> Result<R, ApiError>,
    ) -> Result<R, ApiError> {
        let mut attempt = 1;
        loop {
            let writer = Arc::clone(&self.writer).lock_owned().await;
            let (base, changes, audit, out) = {
                let state = self.read();
                let mut txn = Txn::new(&state);
                let out = f(&mut txn)?;
                publish::refresh_routes(&mut txn);
                let (changes, audit) = txn.into_changes();
                (state.revision, changes, audit, out)
            };
            if changes.is_empty() {
                return Ok(out);
            }
            let this = Arc::clone(self);
            let task = tokio::spawn(async move {
                let result = this.commit(base, changes, audit).await;
                drop(writer);
                result
            });
            let result = task
                .await
                .map_err(|e| ApiError::unavailable(format!("the change task failed: {e}")))?;
            match result {
                Ok(()) => return Ok(out),
                Err(CommitError::Conflict { .. }) if attempt < CONFLICT_ATTEMPTS => {
                    metrics::counter!("switchyard_control_conflict_retries_total").increment(1);
                    attempt += 1;
                }
                Err(CommitError::Conflict { expected, actual }) => {
                    return Err(ApiError::conflict(format!(
                        "The change was not stored: the store is at revision {actual}, \
                         not {expected} (other writers committed first {CONFLICT_ATTEMPTS} \
                         times). The control plane has reloaded; retry the request."
                    )));
                }
                Err(CommitError::Failed(e)) => return Err(e),
            }
        }
    }

    /// Steps 4–5 of a change; runs in the commit task under the writer lock.
    async fn commit(
        &self,
        base: u64,
        changes: Vec<Change>,
        audit: Vec<AuditRecord>,
    ) -> Result<(), CommitError> {
        let store = self.store.clone();
        let started = std::time::Instant::now();
        let joined = tokio::task::spawn_blocking(move || {
            let result = store.commit(base, &changes);
            (result, changes)
        })
        .await;
        let (result, changes) = match joined {
            Ok(done) => done,
            Err(e) => {
                // The store panicked: whether the batch landed is unknown.
                self.reconcile().await;
                return Err(CommitError::Failed(ApiError::unavailable(format!(
                    "store task failed: {e}"
                ))));
            }
        };
        metrics::histogram!("control_store_commit_seconds").record(started.elapsed().as_secs_f64());
        let revision = match result {
            Ok(revision) => revision,
            Err(StoreError::Conflict { expected, actual }) => {
                tracing::warn!(
                    expected,
                    actual,
                    "the store moved ahead of this control plane; reloading it"
                );
                self.reload().await.map_err(CommitError::Failed)?;
                return Err(CommitError::Conflict { expected, actual });
            }
            Err(e) => {
                self.reconcile().await;
                return Err(CommitError::Failed(e.into()));
            }
        };
        {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            state.apply(revision, &changes);
        }
        let channels_changed = self.published().update(&self.read(), &changes);
        self.publish(revision, channels_changed);
        self.announce(revision);
        metrics::counter!("switchyard_control_commits_total").increment(1);
        self.emit_audit(&audit);
        Ok(())
    }

    /// Applies what other writers committed to the store since the mirror's
    /// revision (another control node on the same etcd), publishes it and
    /// announces the new revision; re-lists when the store's log no longer
    /// reaches back. Returns the mirror's revision. A node that shares its
    /// store runs this periodically so its reads follow the other nodes'
    /// writes; its own writes never need it (a conflict reloads).
    pub async fn catch_up(&self) -> Result<u64, ApiError> {
        const PAGE: usize = 256;
        let _writer = Arc::clone(&self.writer).lock_owned().await;
        loop {
            let since = self.read().revision;
            let store = self.store.clone();
            let read = tokio::task::spawn_blocking(move || store.changes_since(since, PAGE))
                .await
                .map_err(|e| ApiError::unavailable(format!("store task failed: {e}")))?;
            let batches = match read {
                Ok(batches) => batches,
                Err(StoreError::Compacted { .. } | StoreError::Future { .. }) => {
                    self.reload().await?;
                    return Ok(self.read().revision);
                }
                Err(e) => return Err(e.into()),
            };
            let Some(last) = batches.last().map(|b| b.revision) else {
                return Ok(since);
            };
            let mut channels_changed = false;
            for batch in &batches {
                {
                    let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
                    state.apply(batch.revision, &batch.changes);
                }
                channels_changed |= self.published().update(&self.read(), &batch.changes);
            }
            self.publish(last, channels_changed);
            self.announce(last);
            if batches.len() < PAGE {
                return Ok(last);
            }
        }
    }

    /// On a shared store, brings the mirror up to the store before a
    /// request is answered: a client that wrote through another control
    /// node then reads its write here, and a change made here validates
    /// against it (creating an app on one node and registering its dyno
    /// through another works at once, not after the next poll). One small
    /// store read when nothing changed. A store that does not answer within
    /// [`FRESHNESS_WAIT`] leaves the mirror as it is: reads are answered
    /// from it, and a write still meets the store's compare-and-swap.
    pub async fn refresh(&self) {
        if !self.store.shared() {
            return;
        }
        let store = self.store.clone();
        let read = tokio::time::timeout(
            FRESHNESS_WAIT,
            tokio::task::spawn_blocking(move || store.revision()),
        )
        .await;
        match read {
            Ok(Ok(Ok(revision))) if revision != self.read().revision => {
                if let Err(e) = self.catch_up().await {
                    tracing::warn!(error = %e, "cannot read the shared store; answering from this node's copy");
                }
            }
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(e))) => {
                tracing::debug!(error = %e, "cannot read the shared store; answering from this node's copy");
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "store task failed"),
            Err(_) => tracing::debug!("the shared store is slow; answering from this node's copy"),
        }
    }

    /// Reloads the mirror from the store, republishes it and announces its
    /// revision. Called under the writer lock.
    async fn reload(&self) -> Result<(), ApiError> {
        let store = self.store.clone();
        let snapshot = tokio::task::spawn_blocking(move || store.load())
            .await
            .map_err(|e| ApiError::unavailable(format!("store task failed: {e}")))??;
        let revision = snapshot.revision;
        {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            *state = State::from(snapshot);
        }
        *self.published() = Published::of(&self.read());
        self.publish(revision, true);
        self.announce(revision);
        metrics::counter!("switchyard_control_reloads_total").increment(1);
        tracing::info!(revision, "control plane reloaded from the store");
        Ok(())
    }

    /// After a failed commit: reloads when the store is not where the mirror
    /// is (the batch may have landed before the failure was reported).
    async fn reconcile(&self) {
        let store = self.store.clone();
        let current = tokio::task::spawn_blocking(move || store.revision()).await;
        let mirrored = self.read().revision;
        match current {
            Ok(Ok(r)) if r == mirrored => {}
            Ok(Ok(_)) => {
                if let Err(e) = self.reload().await {
                    tracing::error!(error = %e, "could not reload the store after a failed commit");
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "could not read the store revision"),
            Err(e) => tracing::error!(error = %e, "store task failed"),
        }
    }

    fn announce(&self, revision: u64) {
        self.revision.send_replace(revision);
        metrics::gauge!("switchyard_control_revision").set(revision as f64);
    }

    fn published(&self) -> std::sync::MutexGuard<'_, Published> {
        self.published.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes the per-app specs, stamped `revision`, into the router, and
    /// into logplex when `channels_changed`.
    fn publish(&self, revision: u64, channels_changed: bool) {
        let mut published = self.published();
        let (routes, base_domain) = (self.routes.as_deref(), &self.settings.base_domain);
        if let Err(e) = published.publish_routes(routes, revision, base_domain) {
            tracing::error!(error = %e, revision, "route table rejected; keeping the previous one");
        }
        if let (Some(logs), true) = (&self.logs, channels_changed) {
            logs.configure(published.logplex(revision));
        }
    }

    fn emit_audit(&self, audit: &[AuditRecord]) {
        for a in audit {
            tracing::info!(revision = a.revision, app = a.app_name.as_deref().unwrap_or("-"), action = %a.action, "{}", a.message);
            if let (Some(logs), Some(app_id)) = (&self.logs, &a.app_id) {
                logs.emit(app_id, "heroku", "api", &a.message);
            }
        }
    }
}
