//! `/account`, `/apps` and the app itself: create, info, rename,
//! maintenance, destroy; features; the empty add-on style lists the CLI asks for.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{find_app, json, Api, Body};
use crate::error::ApiError;
use crate::model::{key, now, uuid, AppRecord, ReleaseRecord, RouterSettings, TokenRecord};
use crate::publish::PLATFORM_TOKEN;
use crate::state::Txn;

pub(crate) fn routes() -> axum::Router<Api> {
    axum::Router::new()
        .route("/account", get(account))
        .route("/apps", get(list).post(create))
        .route("/users/{user}/apps", get(list))
        .route("/apps/{app}", get(info).patch(update).delete(destroy))
        .route("/apps/{app}/addons", get(empty))
        .route("/apps/{app}/collaborators", get(empty))
        .route("/apps/{app}/pipeline-couplings", get(no_pipeline))
        .route("/apps/{app}/features", get(features))
        .route(
            "/apps/{app}/features/{feature}",
            get(feature).patch(set_feature),
        )
}

/// The single account: the operator holding the API key.
const ACCOUNT_ID: &str = "4b4c2a1e-0000-4000-8000-5717c4ea7d00";
/// The `http-session-affinity` feature.
const AFFINITY: &str = "http-session-affinity";
const AFFINITY_ID: &str = "8d4f3a52-0000-4000-8000-af1f1a1e7e00";

/// "by user <email>", appended to `heroku[api]` lines as Heroku does.
pub(crate) fn by(api: &Api) -> String {
    format!("by user {}", api.control.settings().owner_email)
}

async fn account(State(api): State<Api>) -> Response {
    let email = &api.control.settings().owner_email;
    json(
        StatusCode::OK,
        &json!({
            "allow_tracking": false, "beta": false, "created_at": "2024-01-01T00:00:00Z",
            "email": email, "federated": false, "id": ACCOUNT_ID, "identity_provider": null,
            "last_login": null, "name": "Switchyard operator", "sms_number": null,
            "suspended_at": null, "delinquent_at": null, "two_factor_authentication": false,
            "updated_at": "2024-01-01T00:00:00Z", "verified": true, "default_organization": null,
            "default_team": null,
        }),
    )
}

/// Heroku's app shape.
pub(crate) fn app_json(api: &Api, app: &AppRecord) -> Value {
    let s = api.control.settings();
    let port = match s.router_http_port {
        Some(80) | None => String::new(),
        Some(p) => format!(":{p}"),
    };
    let stack = json!({ "id": "a7a1b6f0-0000-4000-8000-57ac4000e024", "name": "heroku-24" });
    json!({
        "acm": app.acm, "archived_at": null, "buildpack_provided_description": null,
        "build_stack": stack, "created_at": app.created_at, "git_url": null,
        "id": app.id, "internal_routing": null, "maintenance": app.maintenance,
        "name": app.name,
        "owner": { "email": s.owner_email, "id": ACCOUNT_ID },
        "organization": null, "team": null, "space": null,
        "region": { "id": "59accabd-516d-4f0e-83e6-6e3757701145", "name": "us" },
        "released_at": app.released_at, "repo_size": null, "slug_size": null,
        "stack": stack, "updated_at": app.updated_at,
        "web_url": format!("http://{}.{}{}/", app.name, s.base_domain, port),
        "generation": "cedar",
    })
}

async fn list(State(api): State<Api>) -> Response {
    let apps: Vec<Value> = {
        let state = api.control.read();
        state
            .list::<AppRecord>("apps/")
            .iter()
            .map(|a| app_json(&api, a))
            .collect()
    };
    json(StatusCode::OK, &apps)
}

#[derive(Debug, Deserialize)]
struct CreateApp {
    name: Option<String>,
    #[allow(dead_code)]
    region: Option<String>,
    #[allow(dead_code)]
    stack: Option<String>,
}

/// Creates a release with `description` and bumps the app's `released_at`.
pub(crate) fn add_release(
    txn: &mut Txn<'_>,
    app: &mut AppRecord,
    description: String,
    by: &str,
) -> u64 {
    let last = txn
        .keys(&key::under("releases", &app.id))
        .last()
        .and_then(|k| k.rsplit('/').next().and_then(|v| v.parse::<u64>().ok()))
        .unwrap_or(0);
    let version = last + 1;
    let at = now();
    txn.put(
        key::release(&app.id, version),
        &ReleaseRecord {
            id: uuid(),
            version,
            description,
            created_at: at.clone(),
        },
    );
    app.released_at = Some(at.clone());
    app.updated_at = at;
    txn.put(key::app(&app.id), &*app);
    let snapshot = app.clone();
    txn.audit(
        Some(&snapshot),
        "release.create",
        format!("Release v{version} created {by}"),
    );
    version
}

fn generated_name() -> String {
    const WORDS: [&str; 8] = [
        "amber", "brisk", "cedar", "dusky", "ember", "frost", "gentle", "hidden",
    ];
    const NOUNS: [&str; 8] = [
        "harbor", "signal", "switch", "rail", "yard", "junction", "siding", "depot",
    ];
    let n: u32 = rand::random::<u32>();
    format!(
        "{}-{}-{:05}",
        WORDS[(n % 8) as usize],
        NOUNS[((n / 8) % 8) as usize],
        (n / 64) % 100_000
    )
}

async fn create(State(api): State<Api>, Body(body): Body<CreateApp>) -> Result<Response, ApiError> {
    let name = match body.name {
        Some(n) => n,
        None => generated_name(),
    };
    crate::validate::app_name(&name)?;
    let by = by(&api);
    let app = api
        .control
        .change(|txn| {
            if txn.raw(&key::name(&name)).is_some() {
                return Err(ApiError::invalid("name", "is already taken"));
            }
            let at = now();
            let mut app = AppRecord {
                id: uuid(),
                name: name.clone(),
                created_at: at.clone(),
                updated_at: at.clone(),
                released_at: None,
                maintenance: false,
                session_affinity: false,
                preboot: false,
                acm: false,
                router: RouterSettings::default(),
            };
            txn.put(key::app(&app.id), &app);
            txn.put(key::name(&name), &app.id);
            txn.put(key::config(&app.id), &json!({}));
            // `app` for the app's own senders; `heroku` for platform lines
            // (routers running apart write theirs with it).
            for name in ["app", PLATFORM_TOKEN] {
                let token = TokenRecord {
                    token: format!("t.{}", uuid()),
                    name: name.into(),
                    created_at: at.clone(),
                };
                txn.put(key::token(&app.id, &token.token), &token);
            }
            txn.audit(Some(&app), "app.create", format!("Create app {name} {by}"));
            add_release(txn, &mut app, "Initial release".into(), &by);
            Ok(app)
        })
        .await?;
    Ok(json(StatusCode::CREATED, &app_json(&api, &app)))
}

async fn info(State(api): State<Api>, Path(app): Path<String>) -> Result<Response, ApiError> {
    let app = find_app(&api.control.read(), &app)?;
    Ok(json(StatusCode::OK, &app_json(&api, &app)))
}

#[derive(Debug, Deserialize)]
struct UpdateApp {
    name: Option<String>,
    maintenance: Option<bool>,
    #[allow(dead_code)]
    build_stack: Option<Value>,
}

async fn update(
    State(api): State<Api>,
    Path(app): Path<String>,
    Body(body): Body<UpdateApp>,
) -> Result<Response, ApiError> {
    if let Some(n) = &body.name {
        crate::validate::app_name(n)?;
    }
    let by = by(&api);
    let updated = api
        .control
        .change(|txn| {
            let mut rec = find_app_txn(txn, &app)?;
            if let Some(new) = body.name.as_ref().filter(|n| **n != rec.name) {
                if txn.raw(&key::name(new)).is_some() {
                    return Err(ApiError::invalid("name", "is already taken"));
                }
                txn.delete(key::name(&rec.name));
                txn.put(key::name(new), &rec.id);
                let old = std::mem::replace(&mut rec.name, new.clone());
                rec.updated_at = now();
                txn.put(key::app(&rec.id), &rec);
                txn.audit(
                    Some(&rec),
                    "app.rename",
                    format!("Rename app from {old} to {new} {by}"),
                );
            }
            if let Some(m) = body.maintenance.filter(|m| *m != rec.maintenance) {
                rec.maintenance = m;
                rec.updated_at = now();
                txn.put(key::app(&rec.id), &rec);
                let verb = if m { "Enable" } else { "Disable" };
                txn.audit(
                    Some(&rec),
                    "app.maintenance",
                    format!("{verb} maintenance mode {by}"),
                );
            }
            Ok(rec)
        })
        .await?;
    Ok(json(StatusCode::OK, &app_json(&api, &updated)))
}

/// Finds an app inside a transaction (by name or id).
pub(crate) fn find_app_txn(txn: &Txn<'_>, app: &str) -> Result<AppRecord, ApiError> {
    if let Some(a) = txn.get::<AppRecord>(&key::app(app)) {
        return Ok(a);
    }
    txn.get::<String>(&key::name(app))
        .and_then(|id| txn.get::<AppRecord>(&key::app(&id)))
        .ok_or_else(|| ApiError::not_found("app", app))
}

async fn destroy(State(api): State<Api>, Path(app): Path<String>) -> Result<Response, ApiError> {
    let by = by(&api);
    let gone = api
        .control
        .change(|txn| {
            let rec = find_app_txn(txn, &app)?;
            for d in txn.list::<crate::model::DomainRecord>(&key::under("domains", &rec.id)) {
                txn.delete(key::host(&d.hostname));
            }
            for kind in key::PER_APP {
                txn.delete_prefix(&key::under(kind, &rec.id));
            }
            txn.delete(key::config(&rec.id));
            txn.delete(key::procfile(&rec.id));
            txn.delete(key::acm(&rec.id));
            txn.delete(key::route(&rec.id));
            txn.delete(key::name(&rec.name));
            txn.delete(key::app(&rec.id));
            txn.audit(
                None,
                "app.destroy",
                format!("Destroy app {} {by}", rec.name),
            );
            Ok(rec)
        })
        .await?;
    Ok(json(StatusCode::OK, &app_json(&api, &gone)))
}

/// Heroku answers 404 for an app outside any pipeline; so do we.
async fn no_pipeline(
    State(api): State<Api>,
    Path(app): Path<String>,
) -> Result<Response, ApiError> {
    find_app(&api.control.read(), &app)?;
    Err(ApiError::not_found("pipeline coupling", &app))
}

async fn empty() -> Response {
    json(StatusCode::OK, &json!([]))
}

/// The features Switchyard implements: name, id, what it does, the docs.
const FEATURES: [(&str, &str, &str, &str, &str); 2] = [
    (
        AFFINITY,
        AFFINITY_ID,
        "HTTP session affinity",
        "Route a browser's requests to the same dyno with a session cookie.",
        "https://devcenter.heroku.com/articles/session-affinity",
    ),
    (
        PREBOOT,
        PREBOOT_ID,
        "Preboot",
        "On a restart or a config change, start new web dynos and route to them before the old ones are stopped (switchyard serve --dynos).",
        "https://devcenter.heroku.com/articles/preboot",
    ),
];

/// The `preboot` feature.
const PREBOOT: &str = "preboot";
const PREBOOT_ID: &str = "5c1d2e7b-0000-4000-8000-9eb0071e0000";

/// Which feature `name_or_id` is (its name), if Switchyard has it.
fn which_feature(name_or_id: &str) -> Result<&'static str, ApiError> {
    FEATURES
        .iter()
        .find(|f| f.0 == name_or_id || f.1 == name_or_id)
        .map(|f| f.0)
        .ok_or_else(|| ApiError::not_found("feature", name_or_id))
}

fn enabled(app: &AppRecord, feature: &str) -> bool {
    match feature {
        PREBOOT => app.preboot,
        _ => app.session_affinity,
    }
}

fn feature_json(app: &AppRecord, feature: &str) -> Value {
    let (name, id, display, description, doc) = FEATURES
        .iter()
        .copied()
        .find(|f| f.0 == feature)
        .unwrap_or(FEATURES[0]);
    json!({
        "created_at": app.created_at, "updated_at": app.updated_at,
        "description": description, "doc_url": doc,
        "enabled": enabled(app, name), "id": id, "name": name,
        "state": "general", "display_name": display, "feedback_email": "",
    })
}

async fn features(State(api): State<Api>, Path(app): Path<String>) -> Result<Response, ApiError> {
    let app = find_app(&api.control.read(), &app)?;
    let all: Vec<Value> = FEATURES.iter().map(|f| feature_json(&app, f.0)).collect();
    Ok(json(StatusCode::OK, &json!(all)))
}

async fn feature(
    State(api): State<Api>,
    Path((app, feature)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let app = find_app(&api.control.read(), &app)?;
    let feature = which_feature(&feature)?;
    Ok(json(StatusCode::OK, &feature_json(&app, feature)))
}

#[derive(Debug, Deserialize)]
struct SetFeature {
    enabled: bool,
}

async fn set_feature(
    State(api): State<Api>,
    Path((app, feature)): Path<(String, String)>,
    Body(body): Body<SetFeature>,
) -> Result<Response, ApiError> {
    let feature = which_feature(&feature)?;
    let by = by(&api);
    let rec = api
        .control
        .change(|txn| {
            let mut rec = find_app_txn(txn, &app)?;
            if enabled(&rec, feature) != body.enabled {
                match feature {
                    PREBOOT => rec.preboot = body.enabled,
                    _ => rec.session_affinity = body.enabled,
                }
                rec.updated_at = now();
                txn.put(key::app(&rec.id), &rec);
                let verb = if body.enabled { "Enable" } else { "Disable" };
                txn.audit(
                    Some(&rec),
                    "feature.update",
                    format!("{verb} {feature} feature {by}"),
                );
            }
            Ok(rec)
        })
        .await?;
    Ok(json(StatusCode::OK, &feature_json(&rec, feature)))
}
