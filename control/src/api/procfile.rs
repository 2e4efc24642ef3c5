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
use axum::routing::get;
use serde::Deserialize;
use serde_json::{json, Value};

use super::apps::{add_release, by, find_app_txn};
use super::{find_app, json, Api, Body};
use crate::error::ApiError;
use crate::model::{key, now, uuid, FormationRecord, ProcfileRecord};

pub(crate) fn routes() -> axum::Router<Api> {
    axum::Router::new().route("/apps/{app}/procfile", get(show).put(set))
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
            let record = ProcfileRecord {
                processes: body.processes.clone(),
                dir: body.dir.clone(),
                updated_at: at.clone(),
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
