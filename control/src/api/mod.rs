//! The HTTP API: Heroku Platform API v3 subset plus the routing-table API.
//!
//! Every route except `GET /healthz` requires the API key, as
//! `Authorization: Bearer <key>` (what the `heroku` CLI sends for
//! `HEROKU_API_KEY`) or as the password of Basic auth. Errors are Heroku's
//! body ([`ApiError`]). Apps are addressed by name or id, as on Heroku.
//!
//! # Layout
//! - [`apps`]: `/account`, `/apps`, app info, rename, maintenance, destroy, features.
//! - [`domains`]: custom domains (exact and wildcard).
//! - [`logs`]: log drains, log sessions and log-input tokens.
//! - [`config`]: config vars and releases.
//! - [`formation`]: formation (`ps:scale`).
//! - [`procfile`]: process commands and directory for the dyno manager.
//! - [`dynos`]: dyno registration and router settings (routing-table API).
//! - [`certs`]: SNI endpoints.
//! - [`acm`]: automated certificate management on and off.
//! - [`routes`]: the route table, its watch stream and the audit list.

pub mod acm;
pub mod apps;
pub mod certs;
pub mod config;
pub mod domains;
pub mod dynos;
pub mod formation;
pub mod logs;
pub mod procfile;
pub mod routes;

use std::future::Future;
use std::sync::Arc;

use axum::extract::{FromRequest, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::engine::Control;
use crate::error::ApiError;
use crate::model::AppRecord;
use crate::state::State as Mirror;

/// Shared state of every handler.
#[derive(Clone)]
pub struct Api {
    /// The control plane.
    pub control: Arc<Control>,
    /// The key every request must present.
    pub key: Arc<str>,
    /// Turns true when the server shuts down, ending long-lived streams
    /// (watch) so graceful shutdown does not wait on them forever.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

/// The full API router (its watch streams end when `stopping` turns true).
pub fn router(
    control: Arc<Control>,
    key: &str,
    stopping: tokio::sync::watch::Receiver<bool>,
) -> axum::Router {
    let api = Api {
        control,
        key: key.into(),
        stopping,
    };
    let authed = axum::Router::new()
        .merge(apps::routes())
        .merge(domains::routes())
        .merge(logs::routes())
        .merge(config::routes())
        .merge(formation::routes())
        .merge(procfile::routes())
        .merge(dynos::routes())
        .merge(certs::routes())
        .merge(acm::routes())
        .merge(routes::routes())
        .fallback(|| async { ApiError::no_route() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(axum::middleware::from_fn_with_state(
            api.clone(),
            authenticate,
        ));
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(authed)
        .layer(axum::middleware::from_fn(heroku_errors))
        .layer(axum::middleware::from_fn(log_request))
        .with_state(api)
}

/// Turns the framework's own plain-text rejections (a path that does not
/// decode, a body over the size limit, …) into Heroku's error body, so every
/// error a client sees has an `id` and a `message`.
async fn heroku_errors(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    let is_json = res
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let id = match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        404 => "not_found",
        405 => "method_not_allowed",
        413 => "request_too_large",
        415 => "unsupported_media_type",
        422 => "invalid_params",
        429 => "rate_limit",
        503 => "unavailable",
        _ => "error",
    };
    let text = match axum::body::to_bytes(res.into_body(), 4096).await {
        Ok(b) if !b.is_empty() => String::from_utf8_lossy(&b).trim().to_string(),
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    };
    ApiError::new(status, id, text).into_response()
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    control: Arc<Control>,
    key: String,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop, stopping) = tokio::sync::watch::channel(false);
    axum::serve(listener, router(control, &key, stopping))
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop.send(true);
        })
        .await
}

async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let res = next.run(req).await;
    let class = match res.status().as_u16() {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    // Method is bounded by axum's routing (unknown methods answer 405 here too).
    let method_label = match method.as_str() {
        "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" => method.as_str().to_string(),
        _ => "other".to_string(),
    };
    metrics::counter!("control_api_requests_total", "method" => method_label, "status_class" => class).increment(1);
    tracing::debug!(%method, %path, status = res.status().as_u16(), "api request");
    res
}

async fn authenticate(State(api): State<Api>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(credential);
    match presented {
        Some(k) if constant_time_eq(k.as_bytes(), api.key.as_bytes()) => {
            api.control.refresh().await;
            next.run(req).await
        }
        _ => ApiError::unauthorized().into_response(),
    }
}

/// The key from `Bearer <key>` or Basic `user:<key>`.
fn credential(header: &str) -> Option<String> {
    let (scheme, value) = header.trim().split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(value.trim().to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        return text.split_once(':').map(|(_, pw)| pw.to_string());
    }
    None
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A JSON request body whose rejections are Heroku errors naming the problem.
///
/// Fields the body type does not define are ignored, on every endpoint, as
/// Heroku does (the CLI sends fields we do not model, such as `region` or
/// `stack`); no body type uses `deny_unknown_fields`.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                        "request_too_large",
                        "request body is larger than the 2 MiB the API accepts",
                    )
                } else {
                    ApiError::bad_request(format!("could not read the request body: {e}"))
                }
            })?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        // Malformed JSON is a 400 whatever it holds; only well-formed JSON of
        // the wrong shape is a 422 naming the field.
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            return Err(ApiError::bad_request(format!("invalid JSON body: {e}")));
        }
        let mut de = serde_json::Deserializer::from_slice(bytes);
        match serde_path_to_error::deserialize(&mut de) {
            Ok(v) => Ok(Body(v)),
            Err(e) => {
                let path = e.path().to_string();
                let inner = e.into_inner();
                if path.is_empty() || path == "." {
                    Err(ApiError::bad_request(format!("invalid JSON body: {inner}")))
                } else {
                    Err(ApiError::invalid(&path, format!("is invalid: {inner}")))
                }
            }
        }
    }
}

/// A JSON response.
pub fn json<T: Serialize>(status: axum::http::StatusCode, body: &T) -> Response {
    (status, axum::Json(body)).into_response()
}

/// The app named (or with id) `app`, or 404.
pub fn find_app(state: &Mirror, app: &str) -> Result<AppRecord, ApiError> {
    state
        .app(app)
        .ok_or_else(|| ApiError::not_found("app", app))
}

/// `{"id", "name"}` of an app, as nested in many Heroku shapes.
pub fn app_ref(app: &AppRecord) -> serde_json::Value {
    serde_json::json!({ "id": app.id, "name": app.name })
}
