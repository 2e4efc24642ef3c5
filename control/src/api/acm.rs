//! Automated Certificate Management (`/apps/{app}/acm`), as the `heroku
//! certs:auto:*` commands drive it: `POST` enables it, `DELETE` disables
//! it, `PATCH {"acm_refresh": true}` retries every domain now. Each answers
//! with the app (whose `acm` flag says whether ACM is on).
//!
//! The endpoints only change records; the ACME manager ([`crate::acme`])
//! sees the change and orders certificates. Enabling marks each custom
//! domain `pending`; disabling forgets the domains' status and any
//! challenge in flight but keeps the certificates already issued, which
//! are served until someone removes them (`heroku certs:remove`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use serde::Deserialize;

use super::apps::{app_json, by, find_app_txn};
use super::{json, Api, Body};
use crate::error::ApiError;
use crate::model::{key, now, AppRecord, DomainRecord};
use crate::state::Txn;

pub(crate) fn routes() -> axum::Router<Api> {
    axum::Router::new().route(
        "/apps/{app}/acm",
        post(enable).delete(disable).patch(refresh),
    )
}

/// Sets every custom domain's ACM state to `wanted` (as
/// [`crate::acme::wanted`] says for the app as it now is).
fn reset_domains(txn: &mut Txn<'_>, app: &AppRecord) {
    for mut d in txn.list::<DomainRecord>(&key::under("domains", &app.id)) {
        let acm = crate::acme::wanted(app, &d.hostname);
        if d.acm != acm {
            d.acm = acm;
            d.updated_at = now();
            txn.put(key::domain(&app.id, &d.id), &d);
        }
    }
}

async fn enable(State(api): State<Api>, Path(app): Path<String>) -> Result<Response, ApiError> {
    switch(api, app, true).await
}

async fn disable(State(api): State<Api>, Path(app): Path<String>) -> Result<Response, ApiError> {
    switch(api, app, false).await
}

/// Turns ACM on or off (a no-op when it already is).
async fn switch(api: Api, app: String, on: bool) -> Result<Response, ApiError> {
    let by = by(&api);
    let app = api
        .control
        .change(|txn| {
            let mut app = find_app_txn(txn, &app)?;
            if app.acm != on {
                app.acm = on;
                app.updated_at = now();
                txn.put(key::app(&app.id), &app);
                if on {
                    txn.put(key::acm(&app.id), &true);
                } else {
                    txn.delete(key::acm(&app.id));
                }
                reset_domains(txn, &app);
                let (action, verb) = if on {
                    ("acm.enable", "Enable")
                } else {
                    ("acm.disable", "Disable")
                };
                txn.audit(Some(&app), action, format!("{verb} ACM {by}"));
            }
            Ok(app)
        })
        .await?;
    Ok(json(StatusCode::OK, &app_json(&api, &app)))
}

#[derive(Debug, Deserialize)]
struct Refresh {
    acm_refresh: bool,
}

async fn refresh(
    State(api): State<Api>,
    Path(app): Path<String>,
    Body(body): Body<Refresh>,
) -> Result<Response, ApiError> {
    if !body.acm_refresh {
        return Err(ApiError::invalid(
            "acm_refresh",
            "must be true (it asks for a refresh)",
        ));
    }
    let by = by(&api);
    let app = api
        .control
        .change(|txn| {
            let app = find_app_txn(txn, &app)?;
            if !app.acm {
                return Err(ApiError::invalid(
                    "acm",
                    "ACM is not enabled for this app; enable it with heroku certs:auto:enable",
                ));
            }
            // Every domain goes back to `pending`: failed ones are tried
            // again and issued ones are renewed now.
            for mut d in txn.list::<DomainRecord>(&key::under("domains", &app.id)) {
                if let Some(fresh) = crate::acme::wanted(&app, &d.hostname) {
                    d.acm = Some(fresh);
                    d.updated_at = now();
                    txn.put(key::domain(&app.id, &d.id), &d);
                }
            }
            txn.audit(Some(&app), "acm.refresh", format!("Refresh ACM {by}"));
            Ok(app)
        })
        .await?;
    Ok(json(StatusCode::OK, &app_json(&api, &app)))
}
