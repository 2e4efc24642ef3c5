//! Formation (`/apps/{app}/formation`): the desired dyno count per process
//! type, as `ps:scale` sets it. Switchyard records it (a fleet manager reads
//! it and registers dynos through the routing-table API); each change is a
//! release and a `heroku[api]: Scale to web=N` line.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{json, Value};

use super::apps::{add_release, by, find_app_txn};
use super::{app_ref, find_app, json, Api, Body};
use crate::error::ApiError;
use crate::model::{key, now, uuid, AppRecord, FormationRecord};
use crate::state::Txn;

pub(crate) fn routes() -> axum::Router<Api> {
    axum::Router::new()
        .route("/apps/{app}/formation", get(list).patch(batch))
        .route("/apps/{app}/formation/{kind}", get(info).patch(one))
}

fn formation_json(app: &AppRecord, f: &FormationRecord) -> Value {
    json!({
        "app": app_ref(app), "command": f.command, "created_at": f.created_at, "id": f.id,
        "quantity": f.quantity, "size": f.size, "type": f.r#type, "updated_at": f.updated_at,
    })
}

async fn list(State(api): State<Api>, Path(app): Path<String>) -> Result<Response, ApiError> {
    let state = api.control.read();
    let app = find_app(&state, &app)?;
    let out: Vec<Value> = state
        .list::<FormationRecord>(&key::under("formation", &app.id))
        .iter()
        .map(|f| formation_json(&app, f))
        .collect();
    Ok(json(StatusCode::OK, &out))
}

async fn info(
    State(api): State<Api>,
    Path((app, kind)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let state = api.control.read();
    let app = find_app(&state, &app)?;
    let f: FormationRecord = state
        .get(&key::formation(&app.id, &kind))
        .ok_or_else(|| ApiError::not_found("process type", &kind))?;
    Ok(json(StatusCode::OK, &formation_json(&app, &f)))
}

/// The CLI sends `"quantity": "2"`; accept a number or a numeric string.
fn int_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Q {
        N(i64),
        S(String),
    }
    match Option::<Q>::deserialize(d)? {
        None => Ok(None),
        Some(Q::N(n)) => Ok(Some(n)),
        Some(Q::S(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a whole number"))),
    }
}

#[derive(Debug, Deserialize)]
struct Update {
    r#type: Option<String>,
    #[serde(default, deserialize_with = "int_or_string")]
    quantity: Option<i64>,
    size: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Batch {
    updates: Vec<Update>,
}

fn check(u: &Update) -> Result<(), ApiError> {
    if let Some(q) = u.quantity {
        if !(0..=1000).contains(&q) {
            return Err(ApiError::invalid("quantity", "must be between 0 and 1000"));
        }
    }
    if let Some(s) = &u.size {
        if s.is_empty() || s.len() > 32 {
            return Err(ApiError::invalid("size", "must be 1 to 32 characters"));
        }
    }
    Ok(())
}

/// Applies updates; returns the changed formations and the scale summary.
fn apply(
    txn: &mut Txn<'_>,
    app: &AppRecord,
    updates: &[(String, &Update)],
) -> Vec<FormationRecord> {
    let mut out = Vec::new();
    for (kind, u) in updates {
        let at = now();
        let mut f = txn
            .get::<FormationRecord>(&key::formation(&app.id, kind))
            .unwrap_or(FormationRecord {
                id: uuid(),
                r#type: kind.clone(),
                quantity: 0,
                size: "standard-1X".into(),
                command: String::new(),
                created_at: at.clone(),
                updated_at: at.clone(),
            });
        if let Some(q) = u.quantity {
            f.quantity = q as u32;
        }
        if let Some(s) = &u.size {
            f.size = s.clone();
        }
        f.updated_at = at;
        txn.put(key::formation(&app.id, kind), &f);
        out.push(f);
    }
    out
}

async fn scale(
    api: &Api,
    app: &str,
    updates: Vec<(String, Update)>,
) -> Result<(AppRecord, Vec<FormationRecord>), ApiError> {
    for (kind, u) in &updates {
        crate::validate::process_type(kind)?;
        check(u)?;
    }
    let by = by(api);
    api.control
        .change(|txn| {
            let mut app = find_app_txn(txn, app)?;
            let refs: Vec<(String, &Update)> =
                updates.iter().map(|(k, u)| (k.clone(), u)).collect();
            let before: Vec<Option<FormationRecord>> = refs
                .iter()
                .map(|(k, _)| txn.get(&key::formation(&app.id, k)))
                .collect();
            let changed = apply(txn, &app, &refs);
            let moved = changed.iter().zip(&before).any(|(f, b)| {
                b.as_ref()
                    .is_none_or(|b| b.quantity != f.quantity || b.size != f.size)
            });
            if moved {
                let summary: Vec<String> = changed
                    .iter()
                    .map(|f| format!("{}={}:{}", f.r#type, f.quantity, f.size))
                    .collect();
                let description = format!("Scale to {}", summary.join(", "));
                txn.audit(
                    Some(&app),
                    "formation.update",
                    format!("{description} {by}"),
                );
                add_release(txn, &mut app, description, &by);
            }
            Ok((app, changed))
        })
        .await
}

async fn batch(
    State(api): State<Api>,
    Path(app): Path<String>,
    Body(body): Body<Batch>,
) -> Result<Response, ApiError> {
    let mut updates = Vec::new();
    for u in body.updates {
        let kind = u
            .r#type
            .clone()
            .ok_or_else(|| ApiError::invalid("updates.type", "is required"))?;
        updates.push((kind, u));
    }
    let (app, changed) = scale(&api, &app, updates).await?;
    let out: Vec<Value> = changed.iter().map(|f| formation_json(&app, f)).collect();
    Ok(json(StatusCode::OK, &out))
}

async fn one(
    State(api): State<Api>,
    Path((app, kind)): Path<(String, String)>,
    Body(body): Body<Update>,
) -> Result<Response, ApiError> {
    let (app, changed) = scale(&api, &app, vec![(kind, body)]).await?;
    let f = changed
        .first()
        .ok_or_else(|| ApiError::bad_request("no formation was updated"))?;
    Ok(json(StatusCode::OK, &formation_json(&app, f)))
}
