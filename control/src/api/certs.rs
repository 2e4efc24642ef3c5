//! SNI endpoints (`/apps/{app}/sni-endpoints`): a PEM certificate chain and
//! its private key, checked to parse and to match, stored with the DNS names
//! the leaf covers. They reach routers inside `routes/<app>` for the TLS
//! listener.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{json, Value};

use super::apps::{by, find_app_txn};
use super::{app_ref, find_app, json, Api, Body};
use crate::error::ApiError;
use crate::model::{key, now, uuid, AppRecord, CertRecord, DomainRecord};
use crate::validate::CertInfo;

pub(crate) fn routes() -> axum::Router<Api> {
    axum::Router::new()
        .route("/apps/{app}/sni-endpoints", get(list).post(add))
        .route(
            "/apps/{app}/sni-endpoints/{cert}",
            get(info).patch(update).delete(remove),
        )
}

/// True when a certificate name (`*.example.com` or exact) covers `host`.
pub fn covers(cert_name: &str, host: &str) -> bool {
    match cert_name.strip_prefix("*.") {
        Some(parent) => {
            host.split_once('.')
                .is_some_and(|(label, rest)| label != "*" && rest == parent)
                || host == cert_name
        }
        None => cert_name == host,
    }
}

fn cert_json(app: &AppRecord, domains: &[DomainRecord], c: &CertRecord) -> Value {
    let matched: Vec<&str> = domains
        .iter()
        .filter(|d| c.cert_domains.iter().any(|n| covers(n, &d.hostname)))
        .map(|d| d.id.as_str())
        .collect();
    json!({
        "app": app_ref(app), "certificate_chain": c.certificate_chain, "created_at": c.created_at,
        "id": c.id, "name": c.name, "display_name": null, "updated_at": c.updated_at,
        "domains": matched,
        "ssl_cert": {
            "ca_signed?": !c.self_signed, "cert_domains": c.cert_domains, "expires_at": c.expires_at,
            "issuer": c.issuer, "self_signed?": c.self_signed, "starts_at": c.starts_at,
            "subject": c.subject, "id": c.id, "acm": c.acm,
        },
    })
}

async fn list(State(api): State<Api>, Path(app): Path<String>) -> Result<Response, ApiError> {
    let state = api.control.read();
    let app = find_app(&state, &app)?;
    let domains: Vec<DomainRecord> = state.list(&key::under("domains", &app.id));
    let out: Vec<Value> = state
        .list::<CertRecord>(&key::under("certs", &app.id))
        .iter()
        .map(|c| cert_json(&app, &domains, c))
        .collect();
    Ok(json(StatusCode::OK, &out))
}

fn find_cert(certs: Vec<CertRecord>, which: &str) -> Option<CertRecord> {
    certs.into_iter().find(|c| c.id == which || c.name == which)
}

async fn info(
    State(api): State<Api>,
    Path((app, cert)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let state = api.control.read();
    let app = find_app(&state, &app)?;
    let c = find_cert(state.list(&key::under("certs", &app.id)), &cert)
        .ok_or_else(|| ApiError::not_found("SNI endpoint", &cert))?;
    let domains: Vec<DomainRecord> = state.list(&key::under("domains", &app.id));
    Ok(json(StatusCode::OK, &cert_json(&app, &domains, &c)))
}

#[derive(Debug, Deserialize)]
struct CertBody {
    certificate_chain: String,
    private_key: String,
}

fn fill(c: &mut CertRecord, body: &CertBody, info: &CertInfo) {
    set_certificate(c, &body.certificate_chain, &body.private_key, info);
    // A certificate replaced by hand is no longer the ACME manager's.
    c.acm = false;
}

/// A certificate record named `name` with nothing in it yet (see
/// [`set_certificate`]).
pub(crate) fn blank(name: String, acm: bool) -> CertRecord {
    let at = now();
    CertRecord {
        id: uuid(),
        name,
        certificate_chain: String::new(),
        private_key: String::new(),
        cert_domains: Vec::new(),
        subject: String::new(),
        issuer: String::new(),
        starts_at: String::new(),
        expires_at: String::new(),
        self_signed: false,
        acm,
        created_at: at.clone(),
        updated_at: at,
    }
}

/// Puts a checked chain and key (and what [`crate::validate::certificate`]
/// read from them) into `c`.
pub(crate) fn set_certificate(c: &mut CertRecord, chain: &str, key: &str, info: &CertInfo) {
    c.certificate_chain = chain.to_string();
    c.private_key = key.to_string();
    c.cert_domains = info.domains.clone();
    c.subject = info.subject.clone();
    c.issuer = info.issuer.clone();
    c.starts_at = info.starts_at.clone();
    c.expires_at = info.expires_at.clone();
    c.self_signed = info.self_signed;
    c.updated_at = now();
}

fn cert_name() -> String {
    const WORDS: [&str; 8] = [
        "ankylosaurus",
        "brachiosaurus",
        "coelophysis",
        "diplodocus",
        "euoplocephalus",
        "futalognkosaurus",
        "gallimimus",
        "hadrosaurus",
    ];
    let n: u32 = rand::random::<u32>();
    format!("{}-{:05}", WORDS[(n % 8) as usize], (n / 8) % 100_000)
}

async fn add(
    State(api): State<Api>,
    Path(app): Path<String>,
    Body(body): Body<CertBody>,
) -> Result<Response, ApiError> {
    let info = crate::validate::certificate(&body.certificate_chain, &body.private_key)?;
    let by = by(&api);
    let (app, domains, c) = api
        .control
        .change(|txn| {
            let app = find_app_txn(txn, &app)?;
            let mut c = blank(cert_name(), false);
            fill(&mut c, &body, &info);
            txn.put(key::cert(&app.id, &c.id), &c);
            txn.audit(
                Some(&app),
                "cert.create",
                format!(
                    "Add SNI endpoint {} for {} {by}",
                    c.name,
                    c.cert_domains.join(", ")
                ),
            );
            let domains: Vec<DomainRecord> = txn.list(&key::under("domains", &app.id));
            Ok((app, domains, c))
        })
        .await?;
    Ok(json(StatusCode::CREATED, &cert_json(&app, &domains, &c)))
}

async fn update(
    State(api): State<Api>,
    Path((app, cert)): Path<(String, String)>,
    Body(body): Body<CertBody>,
) -> Result<Response, ApiError> {
    let info = crate::validate::certificate(&body.certificate_chain, &body.private_key)?;
    let by = by(&api);
    let (app, domains, c) = api
        .control
        .change(|txn| {
            let app = find_app_txn(txn, &app)?;
            let mut c = find_cert(txn.list(&key::under("certs", &app.id)), &cert)
                .ok_or_else(|| ApiError::not_found("SNI endpoint", &cert))?;
            fill(&mut c, &body, &info);
            txn.put(key::cert(&app.id, &c.id), &c);
            txn.audit(
                Some(&app),
                "cert.update",
                format!("Update SNI endpoint {} {by}", c.name),
            );
            let domains: Vec<DomainRecord> = txn.list(&key::under("domains", &app.id));
            Ok((app, domains, c))
        })
        .await?;
    Ok(json(StatusCode::OK, &cert_json(&app, &domains, &c)))
}

async fn remove(
    State(api): State<Api>,
    Path((app, cert)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let by = by(&api);
    let (app, domains, c) = api
        .control
        .change(|txn| {
            let app = find_app_txn(txn, &app)?;
            let c = find_cert(txn.list(&key::under("certs", &app.id)), &cert)
                .ok_or_else(|| ApiError::not_found("SNI endpoint", &cert))?;
            txn.delete(key::cert(&app.id, &c.id));
            // Domains bound to it fall back to the default certificate.
            for mut d in txn.list::<DomainRecord>(&key::under("domains", &app.id)) {
                if d.sni_endpoint_id.as_deref() == Some(c.id.as_str()) {
                    d.sni_endpoint_id = None;
                    d.updated_at = now();
                    txn.put(key::domain(&app.id, &d.id), &d);
                }
            }
            txn.audit(
                Some(&app),
                "cert.destroy",
                format!("Remove SNI endpoint {} {by}", c.name),
            );
            let domains: Vec<DomainRecord> = txn.list(&key::under("domains", &app.id));
            Ok((app, domains, c))
        })
        .await?;
    Ok(json(StatusCode::OK, &cert_json(&app, &domains, &c)))
}
