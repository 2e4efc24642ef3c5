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

use std::sync::{Arc, RwLock, RwLockReadGuard};

use tokio::sync::{watch, Mutex};

use crate::error::ApiError;
use crate::model::AuditRecord;
use crate::publish::{self, LogBackend};
use crate::state::{State, Txn};
use crate::store::{Store, StoreError};

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
    /// Serialises changes (held across the store commit).
    writer: Mutex<()>,
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
        let (revision, _) = watch::channel(state.revision);
        let control = Arc::new(Control {
            store,
            state: RwLock::new(state),
            writer: Mutex::new(()),
            revision,
            routes,
            logs,
            settings,
        });
        control.publish(&control.read());
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

    /// Runs `f` as one atomic, durable change (see the module docs).
    pub async fn change<R>(
        &self,
        f: impl FnOnce(&mut Txn<'_>) -> Result<R, ApiError>,
    ) -> Result<R, ApiError> {
        let _writer = self.writer.lock().await;
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
        let store = self.store.clone();
        let batch = changes.clone();
        let started = std::time::Instant::now();
        let revision = tokio::task::spawn_blocking(move || store.commit(base, &batch))
            .await
            .map_err(|e| ApiError::unavailable(format!("store task failed: {e}")))??;
        metrics::histogram!("control_store_commit_seconds").record(started.elapsed().as_secs_f64());
        {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            state.apply(revision, &changes);
        }
        self.publish(&self.read());
        self.revision.send_replace(revision);
        metrics::gauge!("switchyard_control_revision").set(revision as f64);
        metrics::counter!("switchyard_control_commits_total").increment(1);
        self.emit_audit(&audit);
        Ok(out)
    }

    fn publish(&self, state: &State) {
        if let Some(routes) = &self.routes {
            let apps = publish::routes_of(state);
            let builder = publish::table_builder(state.revision, &self.settings.base_domain, &apps);
            if let Err(e) = routes.publish(builder) {
                tracing::error!(error = %e, revision = state.revision, "route table rejected; keeping the previous one");
            }
        }
        if let Some(logs) = &self.logs {
            logs.configure(publish::logplex_config(state));
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
