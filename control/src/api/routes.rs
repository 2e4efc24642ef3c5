//! The route table for remote routers, its watch stream, and the audit list.
//!
//! - `GET /routes` → `{"revision": R, "base_domain": "localhost", "apps": [AppRoute…]}`,
//!   read under one lock so the apps are exactly those of revision R.
//! - `GET /routes/watch?since=R[&heartbeat_ms=N]` → the NDJSON stream of
//!   [`crate::watch`].
//! - `GET /audit?since=R&limit=N` and `GET /apps/{app}/audit`: audited
//!   changes, oldest first.

use std::time::Duration;

use axum::body::Body as HttpBody;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use super::{find_app, json, Api};
use crate::error::ApiError;
use crate::model::AuditRecord;
use crate::publish::routes_of;

pub(crate) fn routes() -> axum::Router<Api> {
    axum::Router::new()
        .route("/routes", get(table))
        .route("/routes/watch", get(watch))
        .route("/audit", get(audit))
        .route("/apps/{app}/audit", get(app_audit))
}

async fn table(State(api): State<Api>) -> Response {
    let body = {
        let state = api.control.read();
        json!({
            "revision": state.revision,
            "base_domain": api.control.settings().base_domain,
            "apps": routes_of(&state),
        })
    };
    json(StatusCode::OK, &body)
}

#[derive(Debug, Deserialize)]
struct WatchQuery {
    since: Option<u64>,
    heartbeat_ms: Option<u64>,
}

async fn watch(
    State(api): State<Api>,
    query: Result<Query<WatchQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Ok(Query(q)) = query else {
        return Err(ApiError::invalid("since", "must be a revision number"));
    };
    let since = q
        .since
        .ok_or_else(|| ApiError::invalid("since", "is required (a revision number)"))?;
    let heartbeat = Duration::from_millis(q.heartbeat_ms.unwrap_or(10_000).clamp(50, 60_000));
    let stream = crate::watch::stream(api.control.clone(), since, heartbeat, api.stopping.clone());
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        HttpBody::from_stream(stream),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
struct AuditQuery {
    since: Option<u64>,
    limit: Option<usize>,
}

fn audit_list(api: &Api, app_id: Option<&str>, q: &AuditQuery) -> Vec<AuditRecord> {
    let state = api.control.read();
    let since = q.since.unwrap_or(0);
    let limit = q.limit.unwrap_or(1000).min(10_000);
    let start = format!("audit/{:020}", since.saturating_add(1));
    state
        .kv
        .range(start..)
        .take_while(|(k, _)| k.starts_with("audit/"))
        .filter_map(|(_, v)| serde_json::from_value::<AuditRecord>(v.clone()).ok())
        .filter(|a| app_id.is_none_or(|id| a.app_id.as_deref() == Some(id)))
        .take(limit)
        .collect()
}

async fn audit(
    State(api): State<Api>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Ok(Query(q)) = query else {
        return Err(ApiError::invalid("since", "must be a revision number"));
    };
    Ok(json(StatusCode::OK, &audit_list(&api, None, &q)))
}

async fn app_audit(
    State(api): State<Api>,
    Path(app): Path<String>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Ok(Query(q)) = query else {
        return Err(ApiError::invalid("since", "must be a revision number"));
    };
    let app = find_app(&api.control.read(), &app)?;
    Ok(json(StatusCode::OK, &audit_list(&api, Some(&app.id), &q)))
}
