//! The dyno manager of `switchyard serve --dynos`: runs the processes of
//! every app that has a Procfile (`PUT /apps/{app}/procfile`), as many of
//! each type as its formation asks (`heroku ps:scale web=3`).
//!
//! After every commit it compares what should run (Procfile × formation,
//! with the app's config vars) with what runs, and:
//! - starts what is missing: a `web` dyno gets a free port as `PORT` and is
//!   registered in the routing table as `starting` at `127.0.0.1:PORT`, then
//!   `up` once the port accepts (the supervisor's events set its state, so
//!   `heroku ps` and the router follow it, and a crashed dyno gets no
//!   requests);
//! - stops what is no longer wanted, removing a web dyno from routing
//!   *before* it gets SIGTERM;
//! - replaces a dyno whose command, directory or config vars changed (a
//!   config change restarts dynos, as on Heroku).
//!
//! Each dyno runs under [`dynos::supervise`] (crash restarts, R10, R12);
//! its output goes into the app's stream as `app[web.1]:` lines and its
//! life cycle as Heroku's `heroku[web.1]:` lines.
//!
//! `heroku ps:restart` (`DELETE /apps/{app}/dynos[/{name}]`,
//! `DELETE /apps/{app}/formations/{type}`) and `heroku ps:stop` count a
//! restart in the Procfile record; the dyno is stopped with SIGTERM and
//! started again at once on its port (stop means the same on Heroku when
//! the formation still asks for the dyno).
//!
//! With the app's `preboot` feature (`heroku features:enable preboot`), a
//! web dyno that is restarted or replaced is started again *beside* the
//! old one, on a new port; once the new one is up the routing table points
//! the dyno at it, and the old one gets SIGTERM after [`PREBOOT_DRAIN`], so
//! the requests it was serving finish. Without it, Heroku's behaviour: the
//! old one leaves routing and stops, then the new one boots (requests wait
//! in the router's queue meanwhile).
//!
//! Every dyno is cycled once a day ([`dynos::Timers::cycle`]). Dynos of
//! other types are registered too, with no address: `heroku ps` lists
//! them, the router never routes to them. The port is found by binding port 0 and letting
//! it go, as foreman does: another process could take it in between, which
//! the dyno's crash and restart on a new port would absorb.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use control::model::{key, AppRecord, DynoRecord, FormationRecord, ProcfileRecord};
use tokio::sync::{mpsc, watch};

/// With preboot, how long an old web dyno keeps running after the routing
/// table points at its replacement, so that its requests finish.
pub const PREBOOT_DRAIN: Duration = Duration::from_secs(2);

/// Tells dyno instances apart (a replacement runs beside the old one
/// under the same name).
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// One dyno process instance this manager runs.
struct Running {
    /// What it was started with (without `port`, to compare with the wish).
    spec: dynos::DynoSpec,
    /// `Stop` ends it.
    control: watch::Sender<dynos::Control>,
    /// The address it is registered at: `ip:port` for a web dyno, empty
    /// for other types (listed by `heroku ps`, never routed to).
    address: Option<String>,
    /// Restarts asked of it so far (`heroku ps:restart`).
    restarts: u64,
    /// This instance.
    generation: u64,
    task: tokio::task::JoinHandle<()>,
}

/// A state change a supervisor reported: app id, dyno name, instance, state.
type StateChange = (String, String, u64, dynos::State);

/// (app id, dyno name).
type Key = (String, String);

/// Where a dyno's output and life cycle go.
struct FleetSink {
    app_id: String,
    generation: u64,
    logs: Option<Arc<dyn control::LogBackend>>,
    states: mpsc::UnboundedSender<StateChange>,
}

impl dynos::Sink for FleetSink {
    fn line(&self, dyno: &str, line: &str) {
        if let Some(logs) = &self.logs {
            logs.emit(&self.app_id, "app", dyno, line);
        }
    }

    fn event(&self, dyno: &str, event: dynos::Event) {
        if let (Some(logs), Some(line)) = (&self.logs, event.heroku_line()) {
            logs.emit(&self.app_id, "heroku", dyno, &line);
        }
        if let dynos::Event::Changed { to, .. } = event {
            let _ = self
                .states
                .send((self.app_id.clone(), dyno.to_string(), self.generation, to));
        }
    }
}

/// The manager's state.
struct Fleet {
    control: Arc<control::Control>,
    logs: Option<Arc<dyn control::LogBackend>>,
    timers: dynos::Timers,
    states: mpsc::UnboundedSender<StateChange>,
    /// The instance each dyno's name stands for (routed, for web).
    running: HashMap<Key, Running>,
    /// Preboot: replacements booting beside the instance they replace.
    pending: HashMap<Key, Running>,
}

/// Runs the fleet until `stop`; then stops every dyno (SIGTERM, SIGKILL
/// after the grace period) and removes the web dynos from routing.
pub async fn run(
    control: Arc<control::Control>,
    logs: Option<Arc<dyn control::LogBackend>>,
    timers: dynos::Timers,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut revisions = control.subscribe();
    let (states_tx, mut states) = mpsc::unbounded_channel::<StateChange>();
    let mut fleet = Fleet {
        control,
        logs,
        timers,
        states: states_tx,
        running: HashMap::new(),
        pending: HashMap::new(),
    };
    fleet.reconcile().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            changed = revisions.changed() => {
                if changed.is_err() {
                    break;
                }
                fleet.reconcile().await;
            }
            Some(change) = states.recv() => fleet.changed(change).await,
        }
    }
    fleet.stop_all().await;
}

/// What should run: (app id, dyno name) → spec (its `port` not chosen
/// yet), the restarts asked of it so far, and whether the app preboots.
fn wanted(state: &control::state::State) -> BTreeMap<Key, (dynos::DynoSpec, u64, bool)> {
    let mut out = BTreeMap::new();
    // Only the apps with a Procfile: a commit costs the manager O(its
    // apps), not O(every app of the store).
    let procfiles: Vec<(String, ProcfileRecord)> = state
        .entries("procfile/")
        .filter_map(|(k, v)| {
            let id = k.strip_prefix("procfile/")?.to_string();
            Some((id, serde_json::from_value(v.clone()).ok()?))
        })
        .collect();
    for (app_id, procfile) in procfiles {
        let Some(app) = state.get::<AppRecord>(&key::app(&app_id)) else {
            continue;
        };
        let vars: BTreeMap<String, String> = state.get(&key::config(&app.id)).unwrap_or_default();
        for (kind, command) in &procfile.processes {
            let quantity = state
                .get::<FormationRecord>(&key::formation(&app.id, kind))
                .map_or(0, |f| f.quantity);
            for n in 1..=quantity {
                let name = format!("{kind}.{n}");
                let spec = dynos::DynoSpec {
                    name: name.clone(),
                    command: command.clone(),
                    dir: procfile.dir.clone().into(),
                    env: vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    port: None,
                };
                let restarts = procfile.restarts_of(&name);
                out.insert((app.id.clone(), name), (spec, restarts, app.preboot));
            }
        }
    }
    out
}

impl Fleet {
    async fn reconcile(&mut self) {
        let wanted = wanted(&self.control.read());
        // Gone from the wish: out of routing first, then SIGTERM.
        let gone: Vec<Key> = self
            .running
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        for k in gone {
            if let Some(p) = self.pending.remove(&k) {
                p.control.send_replace(dynos::Control::Stop);
            }
            if let Some(r) = self.running.remove(&k) {
                if r.address.is_some() {
                    unregister(&self.control, &k.0, &k.1).await;
                }
                r.control.send_replace(dynos::Control::Stop);
            }
        }
        for (k, (spec, restarts, preboot)) in wanted {
            let Some(r) = self.running.get(&k) else {
                let launched = self.launch(&k, spec, restarts, true).await;
                if let Some(r) = launched {
                    self.running.insert(k, r);
                }
                continue;
            };
            let replaced = r.spec != spec;
            let restarted = restarts > r.restarts;
            if !replaced && !restarted {
                continue;
            }
            if preboot && spec.process_type() == "web" {
                // Boot the replacement beside it; `changed` swaps them.
                let current = self.pending.get(&k).map(|p| (&p.spec, p.restarts));
                if current == Some((&spec, restarts)) {
                    continue;
                }
                if let Some(p) = self.pending.remove(&k) {
                    p.control.send_replace(dynos::Control::Stop);
                }
                if let Some(p) = self.launch(&k, spec, restarts, false).await {
                    self.pending.insert(k, p);
                }
            } else if replaced {
                if let Some(r) = self.running.remove(&k) {
                    if r.address.is_some() {
                        unregister(&self.control, &k.0, &k.1).await;
                    }
                    r.control.send_replace(dynos::Control::Stop);
                }
                if let Some(r) = self.launch(&k, spec, restarts, true).await {
                    self.running.insert(k, r);
                }
            } else if let Some(r) = self.running.get_mut(&k) {
                // Out of routing first (no new request goes to it), then
                // SIGTERM and a new start on the same port; its state
                // events bring it back once it is up.
                if let Some(address) = &r.address {
                    set_state(&self.control, &k.0, &k.1, address, dynos::State::Down).await;
                }
                r.restarts = restarts;
                r.control.send_replace(dynos::Control::Run { restarts });
            }
        }
    }

    /// Starts an instance of `k`; a web dyno gets a free port and, when
    /// `route`, is registered `starting` there.
    async fn launch(
        &self,
        k: &Key,
        spec: dynos::DynoSpec,
        restarts: u64,
        route: bool,
    ) -> Option<Running> {
        let mut launch = spec.clone();
        let mut addr = String::new();
        if spec.process_type() == "web" {
            let port = match free_port() {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, dyno = %spec.name, "no free port for a web dyno");
                    return None;
                }
            };
            launch.port = Some(port);
            addr = format!("127.0.0.1:{port}");
        }
        if route {
            register(&self.control, &k.0, &k.1, &addr).await;
        }
        let address = Some(addr);
        let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(dynos::Control::Run { restarts });
        let sink = Arc::new(FleetSink {
            app_id: k.0.clone(),
            generation,
            logs: self.logs.clone(),
            states: self.states.clone(),
        });
        let task = tokio::spawn(dynos::supervise(launch, self.timers, rx, sink));
        Some(Running {
            spec,
            control: tx,
            address,
            restarts,
            generation,
            task,
        })
    }

    /// A supervisor reported a state change.
    async fn changed(&mut self, (app, dyno, generation, state): StateChange) {
        let k = (app, dyno);
        if let Some(r) = self.running.get(&k).filter(|r| r.generation == generation) {
            if let Some(address) = r.address.clone() {
                set_state(&self.control, &k.0, &k.1, &address, state).await;
            }
            return;
        }
        let is_pending = self
            .pending
            .get(&k)
            .is_some_and(|p| p.generation == generation);
        if !is_pending || state != dynos::State::Up {
            return;
        }
        // Preboot: the replacement is up. Route to it, then let the old
        // instance finish its requests and stop.
        let Some(new) = self.pending.remove(&k) else {
            return;
        };
        if let Some(address) = &new.address {
            register_up(&self.control, &k.0, &k.1, address).await;
        }
        if let Some(old) = self.running.insert(k, new) {
            tokio::spawn(async move {
                tokio::time::sleep(PREBOOT_DRAIN).await;
                old.control.send_replace(dynos::Control::Stop);
            });
        }
    }

    async fn stop_all(&mut self) {
        let mut tasks = Vec::new();
        for (_, p) in self.pending.drain() {
            p.control.send_replace(dynos::Control::Stop);
            tasks.push(p.task);
        }
        let running: Vec<(Key, Running)> = self.running.drain().collect();
        for ((app, dyno), r) in running {
            if r.address.is_some() {
                unregister(&self.control, &app, &dyno).await;
            }
            r.control.send_replace(dynos::Control::Stop);
            tasks.push(r.task);
        }
        for task in tasks {
            let _ = task.await;
        }
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Registers a dyno as `starting` at `address` (empty: not a web dyno).
async fn register(control: &Arc<control::Control>, app: &str, dyno: &str, address: &str) {
    put_dyno(control, app, dyno, address, dynos::State::Starting).await;
}

/// Points a web dyno at `address`, `up` (a preboot replacement).
async fn register_up(control: &Arc<control::Control>, app: &str, dyno: &str, address: &str) {
    put_dyno(control, app, dyno, address, dynos::State::Up).await;
}

async fn put_dyno(
    control: &Arc<control::Control>,
    app: &str,
    dyno: &str,
    address: &str,
    state: dynos::State,
) {
    commit(
        control,
        dyno,
        "register a dyno the manager started",
        |txn| {
            let at = control::model::now();
            let old = txn.get::<DynoRecord>(&key::dyno(app, dyno));
            let record = DynoRecord {
                id: old
                    .as_ref()
                    .map_or_else(control::model::uuid, |d| d.id.clone()),
                name: dyno.to_string(),
                r#type: dyno.split('.').next().unwrap_or(dyno).into(),
                address: address.to_string(),
                state: state.as_str().into(),
                created_at: old.map_or_else(|| at.clone(), |d| d.created_at),
                updated_at: at,
            };
            txn.put(key::dyno(app, dyno), &record);
        },
    )
    .await;
}

/// Takes a web dyno out of the routing table.
async fn unregister(control: &Arc<control::Control>, app: &str, dyno: &str) {
    commit(control, dyno, "remove a stopped dyno from routing", |txn| {
        txn.delete(key::dyno(app, dyno));
    })
    .await;
}

/// Records a web dyno's new state, if it is still the one at `address`.
async fn set_state(
    control: &Arc<control::Control>,
    app: &str,
    dyno: &str,
    address: &str,
    state: dynos::State,
) {
    commit(control, dyno, "record a dyno's state", |txn| {
        if let Some(mut record) = txn.get::<DynoRecord>(&key::dyno(app, dyno)) {
            if record.address == address && record.state != state.as_str() {
                record.state = state.as_str().into();
                record.updated_at = control::model::now();
                txn.put(key::dyno(app, dyno), &record);
            }
        }
    })
    .await;
}

/// One change of the manager's own; a failure is logged (the next commit
/// or state change tries again).
async fn commit(
    control: &Arc<control::Control>,
    dyno: &str,
    what: &str,
    mut f: impl FnMut(&mut control::state::Txn<'_>),
) {
    let result = control
        .change(|txn| {
            f(txn);
            Ok(())
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, dyno, "cannot {what}");
    }
}
