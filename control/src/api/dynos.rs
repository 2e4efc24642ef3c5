//! The routing-table API (Switchyard's own): dyno registration by address
//! and per-app router settings.
//!
//! - `PUT /apps/{app}/dynos/{name}` `{"address": "127.0.0.1:5001", "state": "up"}`
//!   registers or updates a dyno; its type is the name's prefix (`web.1` →
//!   `web`); `state` defaults to `up`. 201 when new, 200 when updated.
//! - `DELETE /apps/{app}/dynos/{name}` removes it; `GET /apps/{app}/dynos`
//!   lists them in Heroku's dyno shape plus `address` (what `heroku ps` reads).
//! - `GET` / `PATCH /apps/{app}/router-settings`: timers in milliseconds,
//!   `max_dyno_concurrency`, `max_in_flight` (the H11 bound; `null` = 200 ×
//!   web dynos), `balance`, `force_https`, `hsts_max_age_s` and the
//!   request-size limits (`max_body_bytes`, `max_client_connections`,
//!   `max_request_line_bytes`, `max_header_value_bytes`,
//!   `max_header_name_bytes`, `max_headers`). `null` lifts the optional ones.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use super::apps::{by, find_app_txn};
use super::{app_ref, find_app, json, Api, Body};
use crate::error::ApiError;
use crate::model::{key, now, uuid, AppRecord, DynoRecord, ReleaseRecord, RouterSettings};
use crate::state::State as Mirror;

pub(crate) fn routes() -> axum::Router<Api> {
    axum::Router::new()
        // `DELETE` is `heroku ps:restart`: every dyno the manager runs.
        .route(
            "/apps/{app}/dynos",
            get(list).delete(super::procfile::restart_all),
        )
        .route(
            "/apps/{app}/dynos/{name}",
            get(info).put(register).delete(remove),
        )
        .route(
            "/apps/{app}/router-settings",
            get(settings).patch(update_settings),
        )
}

fn dyno_json(app: &AppRecord, release: Option<&ReleaseRecord>, d: &DynoRecord) -> Value {
    json!({
        "attach_url": null, "command": "", "created_at": d.created_at, "id": d.id,
        "name": d.name, "app": app_ref(app),
        "release": release.map(|r| json!({ "id": r.id, "version": r.version })),
        "size": "standard-1X", "state": d.state, "type": d.r#type, "updated_at": d.updated_at,
        "address": d.address,
    })
}

fn latest_release(state: &Mirror, app: &AppRecord) -> Option<ReleaseRecord> {
    state
        .list::<ReleaseRecord>(&key::under("releases", &app.id))
        .pop()
}

async fn list(State(api): State<Api>, Path(app): Path<String>) -> Result<Response, ApiError> {
    let state = api.control.read();
    let app = find_app(&state, &app)?;
    let release = latest_release(&state, &app);
    let mut dynos: Vec<DynoRecord> = state.list(&key::under("dynos", &app.id));
    dynos.sort_by_key(|d| {
        let (t, n) = d.name.split_once('.').unwrap_or((&d.name, ""));
        (t.to_string(), n.parse::<u64>().unwrap_or(u64::MAX))
    });
    let out: Vec<Value> = dynos
        .iter()
        .map(|d| {
            let mut j = dyno_json(&app, release.as_ref(), d);
            // What `heroku ps` prints after the type: the Procfile's command.
            if let Some(f) =
                state.get::<crate::model::FormationRecord>(&key::formation(&app.id, &d.r#type))
            {
                j["command"] = Value::String(f.command);
            }
            j
        })
        .collect();
    Ok(json(StatusCode::OK, &out))
}

async fn info(
    State(api): State<Api>,
    Path((app, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let state = api.control.read();
    let app = find_app(&state, &app)?;
    let d: DynoRecord = state
        .get(&key::dyno(&app.id, &name))
        .ok_or_else(|| ApiError::not_found("dyno", &name))?;
    Ok(json(
        StatusCode::OK,
        &dyno_json(&app, latest_release(&state, &app).as_ref(), &d),
    ))
}

#[derive(Debug, Deserialize)]
struct Register {
    address: String,
    state: Option<String>,
}

async fn register(
    State(api): State<Api>,
    Path((app, name)): Path<(String, String)>,
    Body(body): Body<Register>,
) -> Result<Response, ApiError> {
    let kind = crate::validate::dyno_name(&name)?.to_string();
    let address = crate::validate::socket_addr("address", &body.address)?.to_string();
    let dyno_state = crate::validate::dyno_state(body.state.as_deref().unwrap_or("up"))?
        .as_str()
        .to_string();
    let by = by(&api);
    let (app, created, d) = api
        .control
        .change(|txn| {
            let app = find_app_txn(txn, &app)?;
            let at = now();
            let old: Option<DynoRecord> = txn.get(&key::dyno(&app.id, &name));
            let created = old.is_none();
            let d = match old {
                Some(d) if d.address == address && d.state == dyno_state => {
                    return Ok((app, false, d))
                }
                Some(mut d) => {
                    d.address = address.clone();
                    d.state = dyno_state.clone();
                    d.updated_at = at;
                    d
                }
                None => DynoRecord {
                    id: uuid(),
                    name: name.clone(),
                    r#type: kind.clone(),
                    address: address.clone(),
                    state: dyno_state.clone(),
                    created_at: at.clone(),
                    updated_at: at,
                },
            };
            txn.put(key::dyno(&app.id, &name), &d);
            txn.audit(
                Some(&app),
                "dyno.register",
                format!("Register dyno {name} at {address} ({dyno_state}) {by}"),
            );
            Ok((app, created, d))
        })
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let release = latest_release(&api.control.read(), &app);
    Ok(json(status, &dyno_json(&app, release.as_ref(), &d)))
}

async fn remove(
    State(api): State<Api>,
    Path((app, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let managed = {
        let state = api.control.read();
        find_app(&state, &app).is_ok_and(|a| super::procfile::managed(&state, &a.id, &name))
    };
    if managed {
        // Heroku's meaning for a dyno the manager runs: restart it.
        return super::procfile::restart(&api, &app, &name).await;
    }
    let by = by(&api);
    let (app, d) = api
        .control
        .change(|txn| {
            let app = find_app_txn(txn, &app)?;
            let d: DynoRecord = txn
                .get(&key::dyno(&app.id, &name))
                .ok_or_else(|| ApiError::not_found("dyno", &name))?;
            txn.delete(key::dyno(&app.id, &name));
            txn.audit(
                Some(&app),
                "dyno.remove",
                format!("Remove dyno {name} {by}"),
            );
            Ok((app, d))
        })
        .await?;
    Ok(json(StatusCode::OK, &dyno_json(&app, None, &d)))
}

async fn settings(State(api): State<Api>, Path(app): Path<String>) -> Result<Response, ApiError> {
    let app = find_app(&api.control.read(), &app)?;
    Ok(json(StatusCode::OK, &app.router))
}

fn double<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
struct SettingsPatch {
    connect_timeout_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    boot_timeout_ms: Option<u64>,
    max_dyno_concurrency: Option<u64>,
    #[serde(default, deserialize_with = "double")]
    max_in_flight: Option<Option<u64>>,
    balance: Option<String>,
    force_https: Option<bool>,
    #[serde(default, deserialize_with = "double")]
    hsts_max_age_s: Option<Option<u64>>,
    #[serde(default, deserialize_with = "double")]
    max_body_bytes: Option<Option<u64>>,
    #[serde(default, deserialize_with = "double")]
    max_client_connections: Option<Option<u64>>,
    max_request_line_bytes: Option<u64>,
    max_header_value_bytes: Option<u64>,
    max_header_name_bytes: Option<u64>,
    max_headers: Option<u64>,
}

/// Two years, the longest HSTS max-age browsers' preload lists ask for.
const HSTS_MAX: u64 = 2 * 365 * 24 * 3600;

/// One head field may be this large at most: the router reads whole heads
/// into memory, so a limit is also a memory bound per connection.
const HEAD_FIELD_MAX: u64 = 64 * 1024;

fn patched(mut s: RouterSettings, p: &SettingsPatch) -> Result<RouterSettings, ApiError> {
    use crate::validate::{count, range, timer_ms};
    if let Some(v) = p.connect_timeout_ms {
        s.connect_timeout_ms = timer_ms("connect_timeout_ms", v)?;
    }
    if let Some(v) = p.request_timeout_ms {
        s.request_timeout_ms = timer_ms("request_timeout_ms", v)?;
    }
    if let Some(v) = p.idle_timeout_ms {
        s.idle_timeout_ms = timer_ms("idle_timeout_ms", v)?;
    }
    if let Some(v) = p.boot_timeout_ms {
        s.boot_timeout_ms = timer_ms("boot_timeout_ms", v)?;
    }
    if let Some(v) = p.max_dyno_concurrency {
        s.max_dyno_concurrency = count("max_dyno_concurrency", v, 10_000)?;
    }
    if let Some(v) = p.max_in_flight {
        s.max_in_flight = v
            .map(|v| count("max_in_flight", v, 1_000_000))
            .transpose()?;
    }
    if let Some(b) = &p.balance {
        let parsed = router::Balance::parse(b).ok_or_else(|| {
            ApiError::invalid(
                "balance",
                "must be least-outstanding, random or round-robin",
            )
        })?;
        s.balance = parsed.as_str().to_string();
    }
    if let Some(v) = p.force_https {
        s.force_https = v;
    }
    if let Some(v) = p.hsts_max_age_s {
        s.hsts_max_age_s = v
            .map(|v| range("hsts_max_age_s", v, 0, HSTS_MAX))
            .transpose()?;
    }
    if let Some(v) = p.max_body_bytes {
        s.max_body_bytes = v
            .map(|v| range("max_body_bytes", v, 1, 1 << 40))
            .transpose()?;
    }
    if let Some(v) = p.max_client_connections {
        s.max_client_connections = v
            .map(|v| count("max_client_connections", v, 1_000_000))
            .transpose()?;
    }
    for (field, value, min, slot) in [
        (
            "max_request_line_bytes",
            p.max_request_line_bytes,
            256,
            &mut s.max_request_line_bytes,
        ),
        (
            "max_header_value_bytes",
            p.max_header_value_bytes,
            256,
            &mut s.max_header_value_bytes,
        ),
        (
            "max_header_name_bytes",
            p.max_header_name_bytes,
            32,
            &mut s.max_header_name_bytes,
        ),
    ] {
        if let Some(v) = value {
            *slot = range(field, v, min, HEAD_FIELD_MAX)? as u32;
        }
    }
    if let Some(v) = p.max_headers {
        // The listener parses at most 1000 headers whatever an app asks.
        s.max_headers = count("max_headers", v, 1000)?;
    }
    Ok(s)
}

async fn update_settings(
    State(api): State<Api>,
    Path(app): Path<String>,
    Body(body): Body<SettingsPatch>,
) -> Result<Response, ApiError> {
    patched(RouterSettings::default(), &body)?;
    let by = by(&api);
    let app = api
        .control
        .change(|txn| {
            let mut app = find_app_txn(txn, &app)?;
            let next = patched(app.router.clone(), &body)?;
            if next != app.router {
                app.router = next;
                app.updated_at = now();
                txn.put(key::app(&app.id), &app);
                txn.audit(
                    Some(&app),
                    "router.update",
                    format!("Update router settings {by}"),
                );
            }
            Ok(app)
        })
        .await?;
    Ok(json(StatusCode::OK, &app.router))
}
