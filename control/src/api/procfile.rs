//! The Procfile (`/apps/{app}/procfile`): the command of each process type
//! and the directory to run them in, for the dyno manager
//! (`switchyard serve --dynos`). Heroku reads it from the slug; Switchyard
//! runs code already on the machine, so it is set through the API:
//!
//! ```text
//! PUT /apps/{app}/procfile {"processes": {"web": "python3 -m http.server $PORT"}, "dir": "/srv/demo"}
//! ```
//!
//! Setting it records each command in the app's formation (what `heroku
//! ps` shows) and, like a first deploy on Heroku, scales a new `web` type
//! to one dyno; other new types start at zero (`heroku ps:scale
//! worker=1`). Process types missing from a new Procfile are scaled to
//! zero. Each change is a release.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::{json, Value};

use super::apps::{add_release, by, find_app_txn};
use super::{find_app, json, Api, Body};
use crate::error::ApiError;
use crate::model::{key, now, uuid, FormationRecord, ProcfileRecord};

pub(crate) fn routes() -> axum::Router<Api> {
    axum::Router::new()
        .route("/apps/{app}/procfile", get(show).put(set))
        .route("/apps/{app}/formations/{kind}", delete(restart_type))
        .route(
            "/apps/{app}/formations/{kind}/actions/stop",
            post(restart_type),
        )
        .route("/apps/{app}/dynos/{name}/actions/stop", post(restart_dyno))
}

/// Whether `name`'s process type is one the app's Procfile runs: such a
/// dyno is the manager's, and `DELETE /apps/{app}/dynos/{name}` restarts it
/// (Heroku's meaning) instead of removing a registration.
pub(crate) fn managed(state: &crate::state::State, app_id: &str, name: &str) -> bool {
    let kind = name.split('.').next().unwrap_or(name);
    state
        .get::<ProcfileRecord>(&key::procfile(app_id))
        .is_some_and(|p| p.processes.contains_key(kind))
}

/// Asks the dyno manager to restart `target` (`""`: every dyno, a type or
/// a dyno name). `heroku ps:stop` does the same: the formation still asks
/// for the dyno, so the manager starts it again, as Heroku's does.
pub(crate) async fn restart(api: &Api, app: &str, target: &str) -> Result<Response, ApiError> {
    let by = by(api);
    api.control
        .change(|txn| {
            let app = find_app_txn(txn, app)?;
            let mut procfile: ProcfileRecord =
                txn.get(&key::procfile(&app.id)).ok_or_else(|| {
                    ApiError::invalid(
                        "app",
                        "has no Procfile: Switchyard runs no dynos for it (PUT /apps/{app}/procfile)",
                    )
                })?;
            *procfile.restarts.entry(target.to_string()).or_default() += 1;
            txn.put(key::procfile(&app.id), &procfile);
            let what = if target.is_empty() {
                "all dynos".to_string()
            } else {
                target.to_string()
            };
            txn.audit(Some(&app), "dyno.restart", format!("Restart {what} {by}"));
            Ok(())
        })
        .await?;
    Ok(json(StatusCode::ACCEPTED, &json!({})))
}

pub(crate) async fn restart_all(
    State(api): State<Api>,
    Path(app): Path<String>,
) -> Result<Response, ApiError> {
    restart(&api, &app, "").await
}

async fn restart_type(
    State(api): State<Api>,
    Path((app, kind)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    crate::validate::process_type(&kind)?;
    restart(&api, &app, &kind).await
}

async fn restart_dyno(
    State(api): State<Api>,
    Path((app, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    restart(&api, &app, &name).await
}

/// The body of `PUT`.
#[derive(Debug, Deserialize)]
struct Procfile {
    processes: BTreeMap<String, String>,
    dir: String,
}

fn procfile_json(p: &ProcfileRecord) -> Value {
    json!({ "processes": p.processes, "dir": p.dir, "updated_at": p.updated_at })
}

async fn show(State(api): State<Api>, Path(app): Path<String>) -> Result<Response, ApiError> {
    let state = api.control.read();
    let app = find_app(&state, &app)?;
    let p: ProcfileRecord = state
        .get(&key::procfile(&app.id))
        .ok_or_else(|| ApiError::not_found("procfile", &app.name))?;
    Ok(json(StatusCode::OK, &procfile_json(&p)))
}

fn check(p: &Procfile) -> Result<(), ApiError> {
    if p.processes.is_empty() || p.processes.len() > 32 {
        return Err(ApiError::invalid(
            "processes",
            "must name 1 to 32 process types",
        ));
    }
    for (kind, command) in &p.processes {
        crate::validate::process_type(kind)?;
        if command.trim().is_empty() || command.len() > 4096 || command.contains('\0') {
            return Err(ApiError::invalid(
                "processes",
                format!("the command of {kind} must be 1 to 4096 characters"),
            ));
        }
    }
    if !std::path::Path::new(&p.dir).is_absolute() || p.dir.len() > 4096 || p.dir.contains('\0') {
        return Err(ApiError::invalid("dir", "must be an absolute path"));
    }
    Ok(())
}

async fn set(
    State(api): State<Api>,
    Path(app): Path<String>,
    Body(body): Body<Procfile>,
) -> Result<Response, ApiError> {
    check(&body)?;
    let by = by(&api);
    let record = api
        .control
        .change(|txn| {
            let mut app = find_app_txn(txn, &app)?;
            let at = now();
            let restarts = txn
                .get::<ProcfileRecord>(&key::procfile(&app.id))
                .map(|p| p.restarts)
                .unwrap_or_default();
            let record = ProcfileRecord {
                processes: body.processes.clone(),
                dir: body.dir.clone(),
                updated_at: at.clone(),
                restarts,
            };
            for f in txn.list::<FormationRecord>(&key::under("formation", &app.id)) {
                if !record.processes.contains_key(&f.r#type) && f.quantity > 0 {
                    let gone = FormationRecord {
                        quantity: 0,
                        command: String::new(),
                        updated_at: at.clone(),
                        ..f
                    };
                    txn.put(key::formation(&app.id, &gone.r#type), &gone);
                }
            }
            for (kind, command) in &record.processes {
                let f = match txn.get::<FormationRecord>(&key::formation(&app.id, kind)) {
                    Some(f) => FormationRecord {
                        command: command.clone(),
                        updated_at: at.clone(),
                        ..f
                    },
                    None => FormationRecord {
                        id: uuid(),
                        r#type: kind.clone(),
                        quantity: u32::from(kind == "web"),
                        size: "standard-1X".into(),
                        command: command.clone(),
                        created_at: at.clone(),
                        updated_at: at.clone(),
                    },
                };
                txn.put(key::formation(&app.id, kind), &f);
            }
            txn.put(key::procfile(&app.id), &record);
            let types: Vec<&str> = record.processes.keys().map(String::as_str).collect();
            let description = format!("Deploy Procfile ({})", types.join(", "));
            txn.audit(Some(&app), "procfile.update", format!("{description} {by}"));
            add_release(txn, &mut app, description, &by);
            Ok(record)
        })
        .await?;
    Ok(json(StatusCode::OK, &procfile_json(&record)))
}
