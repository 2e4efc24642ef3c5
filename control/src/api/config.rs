//! Config vars (`/apps/{app}/config-vars`) and releases
//! (`/apps/{app}/releases`). Each config change creates a release, as on
//! Heroku. `ERROR_PAGE_URL` and `MAINTENANCE_PAGE_URL` reach the router.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use serde_json::{json, Value};

use super::apps::{add_release, by, find_app_txn};
use super::{app_ref, find_app, json, Api, Body};
use crate::error::ApiError;
use crate::model::{key, AppRecord, ReleaseRecord};

/// Config vars the router fetches as pages: they must be `http(s)://` URLs.
const PAGE_VARS: [&str; 2] = ["ERROR_PAGE_URL", "MAINTENANCE_PAGE_URL"];

pub(crate) fn routes() -> axum::Router<Api> {
    axum::Router::new()
        .route("/apps/{app}/config-vars", get(show).patch(update))
        .route("/apps/{app}/releases", get(releases))
        .route("/apps/{app}/releases/{release}", get(release))
}

async fn show(State(api): State<Api>, Path(app): Path<String>) -> Result<Response, ApiError> {
    let state = api.control.read();
    let app = find_app(&state, &app)?;
    let vars: BTreeMap<String, String> = state.get(&key::config(&app.id)).unwrap_or_default();
    Ok(json(StatusCode::OK, &vars))
}

async fn update(
    State(api): State<Api>,
    Path(app): Path<String>,
    Body(body): Body<BTreeMap<String, Value>>,
) -> Result<Response, ApiError> {
    let mut set = Vec::new();
    let mut unset = Vec::new();
    for (k, v) in &body {
        crate::validate::config_key(k)?;
        let value = match v {
            Value::Null => {
                unset.push(k.clone());
                continue;
            }
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return Err(ApiError::invalid(k, "must be a string or null")),
        };
        if PAGE_VARS.contains(&k.as_str()) {
            crate::validate::page_url(k, &value)?;
        }
        set.push((k.clone(), value));
    }
    let by = by(&api);
    let vars = api
        .control
        .change(|txn| {
            let mut app = find_app_txn(txn, &app)?;
            let mut vars: BTreeMap<String, String> =
                txn.get(&key::config(&app.id)).unwrap_or_default();
            let before = vars.clone();
            for (k, v) in &set {
                vars.insert(k.clone(), v.clone());
            }
            let removed: Vec<&String> =
                unset.iter().filter(|k| vars.remove(*k).is_some()).collect();
            if vars == before {
                return Ok(vars);
            }
            txn.put(key::config(&app.id), &vars);
            let mut parts = Vec::new();
            if !set.is_empty() {
                let names: Vec<&str> = set.iter().map(|(k, _)| k.as_str()).collect();
                parts.push(format!("Set {} config vars", names.join(", ")));
            }
            if !removed.is_empty() {
                let names: Vec<&str> = removed.iter().map(|k| k.as_str()).collect();
                parts.push(format!("Remove {} config vars", names.join(", ")));
            }
            let description = parts.join("; ");
            txn.audit(Some(&app), "config.update", format!("{description} {by}"));
            add_release(txn, &mut app, description, &by);
            Ok(vars)
        })
        .await?;
    Ok(json(StatusCode::OK, &vars))
}

pub(crate) fn release_json(api: &Api, app: &AppRecord, r: &ReleaseRecord, current: bool) -> Value {
    json!({
        "addon_plan_names": [], "artifacts": [], "app": app_ref(app), "created_at": r.created_at,
        "description": r.description, "status": "succeeded", "id": r.id, "slug": null,
        "updated_at": r.created_at,
        "user": { "email": api.control.settings().owner_email, "id": "4b4c2a1e-0000-4000-8000-5717c4ea7d00" },
        "version": r.version, "current": current, "output_stream_url": null,
        "eligible_for_rollback": true,
    })
}

async fn releases(
    State(api): State<Api>,
    Path(app): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let state = api.control.read();
    let app = find_app(&state, &app)?;
    let all: Vec<ReleaseRecord> = state.list(&key::under("releases", &app.id));
    let latest = all.last().map(|r| r.version);
    let mut out: Vec<Value> = all
        .iter()
        .map(|r| release_json(&api, &app, r, Some(r.version) == latest))
        .collect();
    // Honour Heroku's `Range: version ..; max=N, order=desc` as the CLI sends it.
    let range = headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if range.contains("order=desc") {
        out.reverse();
    }
    if let Some(max) = range
        .split([';', ','])
        .find_map(|p| p.trim().strip_prefix("max="))
        .and_then(|m| m.trim().parse::<usize>().ok())
    {
        out.truncate(max);
    }
    Ok(json(StatusCode::OK, &out))
}

async fn release(
    State(api): State<Api>,
    Path((app, release)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let state = api.control.read();
    let app = find_app(&state, &app)?;
    let all: Vec<ReleaseRecord> = state.list(&key::under("releases", &app.id));
    let latest = all.last().map(|r| r.version);
    let wanted = release.trim_start_matches('v');
    let r = all
        .iter()
        .find(|r| r.id == release || r.version.to_string() == wanted)
        .ok_or_else(|| ApiError::not_found("release", &release))?;
    Ok(json(
        StatusCode::OK,
        &release_json(&api, &app, r, Some(r.version) == latest),
    ))
}
