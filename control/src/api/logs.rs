//! Logs: drains (`/apps/{app}/log-drains`), log sessions
//! (`/apps/{app}/log-sessions`, answered with a URL logplex serves) and named
//! log-input tokens (`/apps/{app}/log-tokens`, Switchyard's own) for senders
//! outside the platform. Every app gets an `app` token when created; every
//! drain gets a `d.<uuid>` token.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{json, Value};

use super::apps::{by, find_app_txn};
use super::{find_app, json, Api, Body};
use crate::error::ApiError;
use crate::model::{key, now, uuid, DrainRecord, TokenRecord};
use crate::publish::SessionParams;

pub(crate) fn routes() -> axum::Router<Api> {
    axum::Router::new()
        .route("/apps/{app}/log-drains", get(list_drains).post(add_drain))
        .route(
            "/apps/{app}/log-drains/{drain}",
            get(drain_info).delete(remove_drain),
        )
        .route("/apps/{app}/log-sessions", post(session))
        .route("/apps/{app}/log-tokens", get(list_tokens).post(add_token))
        .route(
            "/apps/{app}/log-tokens/{token}",
            get(token_info).delete(remove_token),
        )
}

fn drain_json(d: &DrainRecord) -> Value {
    json!({
        "addon": null, "created_at": d.created_at, "id": d.id, "token": d.token,
        "updated_at": d.updated_at, "url": d.url,
    })
}

fn find_drain(drains: Vec<DrainRecord>, which: &str) -> Option<DrainRecord> {
    drains
        .into_iter()
        .find(|d| d.id == which || d.url == which || d.token == which)
}

async fn list_drains(
    State(api): State<Api>,
    Path(app): Path<String>,
) -> Result<Response, ApiError> {
    let state = api.control.read();
    let app = find_app(&state, &app)?;
    let drains: Vec<Value> = state
        .list::<DrainRecord>(&key::under("drains", &app.id))
        .iter()
        .map(drain_json)
        .collect();
    Ok(json(StatusCode::OK, &drains))
}

async fn drain_info(
    State(api): State<Api>,
    Path((app, drain)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let state = api.control.read();
    let app = find_app(&state, &app)?;
    let d = find_drain(state.list(&key::under("drains", &app.id)), &drain)
        .ok_or_else(|| ApiError::not_found("log drain", &drain))?;
    Ok(json(StatusCode::OK, &drain_json(&d)))
}

#[derive(Debug, Deserialize)]
struct AddDrain {
    url: String,
}

async fn add_drain(
    State(api): State<Api>,
    Path(app): Path<String>,
    Body(body): Body<AddDrain>,
) -> Result<Response, ApiError> {
    let url = crate::validate::drain_url(&body.url)?;
    let by = by(&api);
    let d = api
        .control
        .change(|txn| {
            let app = find_app_txn(txn, &app)?;
            let existing: Vec<DrainRecord> = txn.list(&key::under("drains", &app.id));
            if existing.iter().any(|d| d.url == url) {
                return Err(ApiError::invalid("url", "has already been taken"));
            }
            let at = now();
            let d = DrainRecord {
                id: uuid(),
                token: format!("d.{}", uuid()),
                url: url.clone(),
                created_at: at.clone(),
                updated_at: at,
            };
            txn.put(key::drain(&app.id, &d.id), &d);
            txn.audit(
                Some(&app),
                "drain.create",
                format!("Add log drain {} {by}", d.token),
            );
            Ok(d)
        })
        .await?;
    Ok(json(StatusCode::CREATED, &drain_json(&d)))
}

async fn remove_drain(
    State(api): State<Api>,
    Path((app, drain)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let by = by(&api);
    let d = api
        .control
        .change(|txn| {
            let app = find_app_txn(txn, &app)?;
            let d = find_drain(txn.list(&key::under("drains", &app.id)), &drain)
                .ok_or_else(|| ApiError::not_found("log drain", &drain))?;
            txn.delete(key::drain(&app.id, &d.id));
            txn.audit(
                Some(&app),
                "drain.destroy",
                format!("Remove log drain {} {by}", d.token),
            );
            Ok(d)
        })
        .await?;
    Ok(json(StatusCode::OK, &drain_json(&d)))
}

#[derive(Debug, Default, Deserialize)]
struct SessionBody {
    dyno: Option<String>,
    lines: Option<u64>,
    source: Option<String>,
    tail: Option<bool>,
}

async fn session(
    State(api): State<Api>,
    Path(app): Path<String>,
    Body(body): Body<SessionBody>,
) -> Result<Response, ApiError> {
    let app = find_app(&api.control.read(), &app)?;
    if let Some(n) = body.lines {
        if n > 1500 {
            return Err(ApiError::invalid("lines", "must be at most 1500"));
        }
    }
    let logs = api
        .control
        .logs()
        .ok_or_else(|| ApiError::unavailable("Logs are not served by this process."))?;
    let params = SessionParams {
        lines: body.lines.map(|n| n as usize),
        tail: body.tail.unwrap_or(false),
        source: body.source.filter(|s| !s.is_empty()),
        dyno: body.dyno.filter(|s| !s.is_empty()),
    };
    let url = logs
        .create_session(&app.id, params)
        .map_err(ApiError::unavailable)?;
    let at = now();
    Ok(json(
        StatusCode::CREATED,
        &json!({ "created_at": at, "id": uuid(), "logplex_url": url, "updated_at": at }),
    ))
}

fn token_json(t: &TokenRecord) -> Value {
    json!({ "token": t.token, "name": t.name, "created_at": t.created_at })
}

async fn list_tokens(
    State(api): State<Api>,
    Path(app): Path<String>,
) -> Result<Response, ApiError> {
    let state = api.control.read();
    let app = find_app(&state, &app)?;
    let tokens: Vec<Value> = state
        .list::<TokenRecord>(&key::under("tokens", &app.id))
        .iter()
        .map(token_json)
        .collect();
    Ok(json(StatusCode::OK, &tokens))
}

async fn token_info(
    State(api): State<Api>,
    Path((app, token)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let state = api.control.read();
    let app = find_app(&state, &app)?;
    let t = state
        .list::<TokenRecord>(&key::under("tokens", &app.id))
        .into_iter()
        .find(|t| t.token == token || t.name == token)
        .ok_or_else(|| ApiError::not_found("log token", &token))?;
    Ok(json(StatusCode::OK, &token_json(&t)))
}

#[derive(Debug, Deserialize)]
struct AddToken {
    name: String,
}

async fn add_token(
    State(api): State<Api>,
    Path(app): Path<String>,
    Body(body): Body<AddToken>,
) -> Result<Response, ApiError> {
    crate::validate::token_name(&body.name)?;
    let by = by(&api);
    let t = api
        .control
        .change(|txn| {
            let app = find_app_txn(txn, &app)?;
            let existing: Vec<TokenRecord> = txn.list(&key::under("tokens", &app.id));
            if existing.iter().any(|t| t.name == body.name) {
                return Err(ApiError::conflict(format!(
                    "A log token named {} already exists.",
                    body.name
                )));
            }
            let t = TokenRecord {
                token: format!("t.{}", uuid()),
                name: body.name.clone(),
                created_at: now(),
            };
            txn.put(key::token(&app.id, &t.token), &t);
            txn.audit(
                Some(&app),
                "token.create",
                format!("Add log token {} {by}", t.name),
            );
            Ok(t)
        })
        .await?;
    Ok(json(StatusCode::CREATED, &token_json(&t)))
}

async fn remove_token(
    State(api): State<Api>,
    Path((app, token)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let by = by(&api);
    let t = api
        .control
        .change(|txn| {
            let app = find_app_txn(txn, &app)?;
            let t = txn
                .list::<TokenRecord>(&key::under("tokens", &app.id))
                .into_iter()
                .find(|t| t.token == token || t.name == token)
                .ok_or_else(|| ApiError::not_found("log token", &token))?;
            txn.delete(key::token(&app.id, &t.token));
            txn.audit(
                Some(&app),
                "token.destroy",
                format!("Remove log token {} {by}", t.name),
            );
            Ok(t)
        })
        .await?;
    Ok(json(StatusCode::OK, &token_json(&t)))
}
