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
//! Not yet: preboot, daily cycling, and routing-table entries for non-web
//! types (they run, but `heroku ps` lists only web dynos). The port is found by binding port 0 and letting
//! it go, as foreman does: another process could take it in between, which
//! the dyno's crash and restart on a new port would absorb.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use control::model::{key, AppRecord, DynoRecord, FormationRecord, ProcfileRecord};
use tokio::sync::{mpsc, watch};

/// One dyno this manager runs.
struct Running {
    /// What it was started with (without `port`, to compare with the wish).
    spec: dynos::DynoSpec,
    /// `Stop` ends it.
    control: watch::Sender<dynos::Control>,
    /// The address it is registered at (web dynos).
    address: Option<String>,
    /// Restarts asked of it so far (`heroku ps:restart`).
    restarts: u64,
    task: tokio::task::JoinHandle<()>,
}

/// A state change a supervisor reported: app id, dyno name, state.
type StateChange = (String, String, dynos::State);

/// Where a dyno's output and life cycle go.
struct FleetSink {
    app_id: String,
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
                .send((self.app_id.clone(), dyno.to_string(), to));
        }
    }
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
    let mut running: HashMap<(String, String), Running> = HashMap::new();
    reconcile(&control, &logs, timers, &states_tx, &mut running).await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            changed = revisions.changed() => {
                if changed.is_err() {
                    break;
                }
                reconcile(&control, &logs, timers, &states_tx, &mut running).await;
            }
            Some((app, dyno, state)) = states.recv() => {
                let address = running
                    .get(&(app.clone(), dyno.clone()))
                    .and_then(|r| r.address.clone());
                if let Some(address) = address {
                    set_state(&control, &app, &dyno, &address, state).await;
                }
            }
        }
    }
    let mut tasks = Vec::new();
    for ((app, dyno), r) in running.drain() {
        if r.address.is_some() {
            unregister(&control, &app, &dyno).await;
        }
        r.control.send_replace(dynos::Control::Stop);
        tasks.push(r.task);
    }
    for task in tasks {
        let _ = task.await;
    }
}

/// What should run: (app id, dyno name) → spec (its `port` not chosen
/// yet) and the restarts asked of it so far.
fn wanted(state: &control::state::State) -> BTreeMap<(String, String), (dynos::DynoSpec, u64)> {
    let mut out = BTreeMap::new();
    for app in state.list::<AppRecord>("apps/") {
        let Some(procfile) = state.get::<ProcfileRecord>(&key::procfile(&app.id)) else {
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
                out.insert((app.id.clone(), name), (spec, restarts));
            }
        }
    }
    out
}

async fn reconcile(
    control: &Arc<control::Control>,
    logs: &Option<Arc<dyn control::LogBackend>>,
    timers: dynos::Timers,
    states: &mpsc::UnboundedSender<StateChange>,
    running: &mut HashMap<(String, String), Running>,
) {
    let wanted = wanted(&control.read());
    let gone: Vec<(String, String)> = running
        .iter()
        .filter(|(k, r)| wanted.get(*k).map(|(spec, _)| spec) != Some(&r.spec))
        .map(|(k, _)| k.clone())
        .collect();
    for k in gone {
        if let Some(r) = running.remove(&k) {
            // Out of routing first, then SIGTERM.
            if r.address.is_some() {
                unregister(control, &k.0, &k.1).await;
            }
            r.control.send_replace(dynos::Control::Stop);
        }
    }
    for (k, (spec, restarts)) in wanted {
        if let Some(r) = running.get_mut(&k) {
            if restarts > r.restarts {
                // SIGTERM, then started again at once on the same port;
                // its state events take it out of routing and back.
                r.restarts = restarts;
                r.control.send_replace(dynos::Control::Run { restarts });
            }
            continue;
        }
        let mut launch = spec.clone();
        let mut address = None;
        if spec.process_type() == "web" {
            let port = match free_port() {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, dyno = %spec.name, "no free port for a web dyno");
                    continue;
                }
            };
            launch.port = Some(port);
            let addr = format!("127.0.0.1:{port}");
            register(control, &k.0, &k.1, &addr).await;
            address = Some(addr);
        }
        let (tx, rx) = watch::channel(dynos::Control::Run { restarts });
        let sink = Arc::new(FleetSink {
            app_id: k.0.clone(),
            logs: logs.clone(),
            states: states.clone(),
        });
        let task = tokio::spawn(dynos::supervise(launch, timers, rx, sink));
        running.insert(
            k,
            Running {
                spec,
                control: tx,
                address,
                restarts,
                task,
            },
        );
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Registers a web dyno as `starting` at `address`.
async fn register(control: &Arc<control::Control>, app: &str, dyno: &str, address: &str) {
    let result = control
        .change(|txn| {
            let at = control::model::now();
            let record = DynoRecord {
                id: txn
                    .get::<DynoRecord>(&key::dyno(app, dyno))
                    .map_or_else(control::model::uuid, |d| d.id),
                name: dyno.to_string(),
                r#type: "web".into(),
                address: address.to_string(),
                state: dynos::State::Starting.as_str().into(),
                created_at: at.clone(),
                updated_at: at,
            };
            txn.put(key::dyno(app, dyno), &record);
            Ok(())
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, dyno, "cannot register a dyno the manager started");
    }
}

/// Takes a web dyno out of the routing table.
async fn unregister(control: &Arc<control::Control>, app: &str, dyno: &str) {
    let result = control
        .change(|txn| {
            txn.delete(key::dyno(app, dyno));
            Ok(())
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, dyno, "cannot remove a stopped dyno from routing");
    }
}

/// Records a web dyno's new state, if it is still the one at `address`.
async fn set_state(
    control: &Arc<control::Control>,
    app: &str,
    dyno: &str,
    address: &str,
    state: dynos::State,
) {
    let result = control
        .change(|txn| {
            if let Some(mut record) = txn.get::<DynoRecord>(&key::dyno(app, dyno)) {
                if record.address == address && record.state != state.as_str() {
                    record.state = state.as_str().into();
                    record.updated_at = control::model::now();
                    txn.put(key::dyno(app, dyno), &record);
                }
            }
            Ok(())
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, dyno, "cannot record a dyno's state");
    }
}
