//! Custom domains: `GET/POST /apps/{app}/domains`, `GET/DELETE
//! /apps/{app}/domains/{domain}`. A hostname (exact or `*.` wildcard,
//! punycode) belongs to at most one app; a second claim is a 409.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{json, Value};

use super::apps::{by, find_app_txn};
use super::{app_ref, find_app, json, Api, Body};
use crate::error::ApiError;
use crate::model::{key, now, uuid, AppRecord, CertRecord, DomainRecord, HostOwner};

pub(crate) fn routes() -> axum::Router<Api> {
    axum::Router::new()
        .route("/apps/{app}/domains", get(list).post(add))
        .route(
            "/apps/{app}/domains/{domain}",
            get(info).patch(update).delete(remove),
        )
}

fn default_host(api: &Api, app: &AppRecord) -> String {
    format!("{}.{}", app.name, api.control.settings().base_domain)
}

fn domain_json(api: &Api, app: &AppRecord, d: &DomainRecord) -> Value {
    let acm = d.acm.as_ref();
    json!({
        "acm_status": acm.map(|a| a.status.as_str()),
        "acm_status_reason": acm.and_then(|a| a.reason.as_deref()),
        "app": app_ref(app),
        "cname": default_host(api, app), "created_at": d.created_at, "hostname": d.hostname,
        "id": d.id, "kind": "custom", "status": "succeeded", "updated_at": d.updated_at,
        "sni_endpoint": d.sni_endpoint_id.as_ref().map(|id| json!({ "id": id })),
    })
}

fn heroku_domain_json(api: &Api, app: &AppRecord) -> Value {
    json!({
        "acm_status": null, "acm_status_reason": null, "app": app_ref(app), "cname": null,
        "created_at": app.created_at, "hostname": default_host(api, app), "id": app.id,
        "kind": "heroku", "status": "none", "updated_at": app.updated_at, "sni_endpoint": null,
    })
}

async fn list(State(api): State<Api>, Path(app): Path<String>) -> Result<Response, ApiError> {
    let out: Vec<Value> = {
        let state = api.control.read();
        let app = find_app(&state, &app)?;
        std::iter::once(heroku_domain_json(&api, &app))
            .chain(
                state
                    .list::<DomainRecord>(&key::under("domains", &app.id))
                    .iter()
                    .map(|d| domain_json(&api, &app, d)),
            )
            .collect()
    };
    Ok(json(StatusCode::OK, &out))
}

fn find_domain(domains: Vec<DomainRecord>, which: &str) -> Option<DomainRecord> {
    let lower = which.trim_end_matches('.').to_ascii_lowercase();
    let normalized = crate::validate::hostname("hostname", which).ok();
    domains
        .into_iter()
        .find(|d| d.id == which || d.hostname == lower || Some(&d.hostname) == normalized.as_ref())
}

async fn info(
    State(api): State<Api>,
    Path((app, domain)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let state = api.control.read();
    let app = find_app(&state, &app)?;
    if domain == app.id || domain == default_host(&api, &app) {
        return Ok(json(StatusCode::OK, &heroku_domain_json(&api, &app)));
    }
    let d = find_domain(state.list(&key::under("domains", &app.id)), &domain)
        .ok_or_else(|| ApiError::not_found("domain", &domain))?;
    Ok(json(StatusCode::OK, &domain_json(&api, &app, &d)))
}

#[derive(Debug, Deserialize)]
struct AddDomain {
    hostname: String,
    #[allow(dead_code)]
    sni_endpoint: Option<Value>,
}

async fn add(
    State(api): State<Api>,
    Path(app): Path<String>,
    Body(body): Body<AddDomain>,
) -> Result<Response, ApiError> {
    let hostname = crate::validate::hostname("hostname", &body.hostname)?;
    let by = by(&api);
    let (app, d) = api
        .control
        .change(|txn| {
            let app = find_app_txn(txn, &app)?;
            if let Some(owner) = txn.get::<HostOwner>(&key::host(&hostname)) {
                return Err(if owner.app_id == app.id {
                    ApiError::conflict(format!("{hostname} is already added to {}.", app.name))
                } else {
                    ApiError::conflict(format!("{hostname} is already in use by another app."))
                });
            }
            let at = now();
            let d = DomainRecord {
                id: uuid(),
                app_id: app.id.clone(),
                hostname: hostname.clone(),
                sni_endpoint_id: None,
                created_at: at.clone(),
                updated_at: at,
                acm: crate::acme::wanted(&app, &hostname),
            };
            txn.put(
                key::host(&hostname),
                &HostOwner {
                    app_id: app.id.clone(),
                    domain_id: d.id.clone(),
                },
            );
            txn.put(key::domain(&app.id, &d.id), &d);
            txn.audit(
                Some(&app),
                "domain.create",
                format!("Add {hostname} domain {by}"),
            );
            Ok((app, d))
        })
        .await?;
    Ok(json(StatusCode::CREATED, &domain_json(&api, &app, &d)))
}

async fn remove(
    State(api): State<Api>,
    Path((app, domain)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let by = by(&api);
    let (app, d) = api
        .control
        .change(|txn| {
            let app = find_app_txn(txn, &app)?;
            let d = find_domain(txn.list(&key::under("domains", &app.id)), &domain)
                .ok_or_else(|| ApiError::not_found("domain", &domain))?;
            txn.delete(key::host(&d.hostname));
            txn.delete(key::domain(&app.id, &d.id));
            // A certificate ACM obtained for this domain alone goes with it;
            // an uploaded one stays until it is removed.
            if let Some(cert_id) = &d.sni_endpoint_id {
                let cert_key = key::cert(&app.id, cert_id);
                let acm = txn.get::<CertRecord>(&cert_key).is_some_and(|c| c.acm);
                let shared = txn
                    .list::<DomainRecord>(&key::under("domains", &app.id))
                    .iter()
                    .any(|o| o.id != d.id && o.sni_endpoint_id.as_deref() == Some(cert_id));
                if acm && !shared {
                    txn.delete(cert_key);
                }
            }
            txn.audit(
                Some(&app),
                "domain.destroy",
                format!("Remove {} domain {by}", d.hostname),
            );
            Ok((app, d))
        })
        .await?;
    Ok(json(StatusCode::OK, &domain_json(&api, &app, &d)))
}

#[derive(Debug, Deserialize)]
struct UpdateDomain {
    sni_endpoint: Option<String>,
}

/// Associates a domain with an SNI endpoint (by name or id), or clears it.
async fn update(
    State(api): State<Api>,
    Path((app, domain)): Path<(String, String)>,
    Body(body): Body<UpdateDomain>,
) -> Result<Response, ApiError> {
    let by = by(&api);
    let (app, d) = api
        .control
        .change(|txn| {
            let app = find_app_txn(txn, &app)?;
            let mut d = find_domain(txn.list(&key::under("domains", &app.id)), &domain)
                .ok_or_else(|| ApiError::not_found("domain", &domain))?;
            let endpoint = match &body.sni_endpoint {
                None => None,
                Some(which) => {
                    let certs: Vec<crate::model::CertRecord> =
                        txn.list(&key::under("certs", &app.id));
                    let c = certs
                        .into_iter()
                        .find(|c| c.id == *which || c.name == *which)
                        .ok_or_else(|| {
                            ApiError::invalid(
                                "sni_endpoint",
                                format!("{which:?} is not an SNI endpoint of this app"),
                            )
                        })?;
                    Some(c.id)
                }
            };
            if d.sni_endpoint_id != endpoint {
                d.sni_endpoint_id = endpoint;
                d.updated_at = now();
                txn.put(key::domain(&app.id, &d.id), &d);
                txn.audit(
                    Some(&app),
                    "domain.update",
                    format!("Update {} domain {by}", d.hostname),
                );
            }
            Ok((app, d))
        })
        .await?;
    Ok(json(StatusCode::OK, &domain_json(&api, &app, &d)))
}
