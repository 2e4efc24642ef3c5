//! The records the control plane stores, and where each lives in the key space.
//!
//! Key layout (one JSON value per key; `<app>` is the app's UUID, so renaming
//! an app touches one record):
//!
//! | key | value |
//! |---|---|
//! | `apps/<app>` | [`AppRecord`]: name, maintenance, features, router settings |
//! | `names/<name>` | the app id (unique index of names) |
//! | `hosts/<hostname>` | `{app_id, domain_id}` (a domain belongs to one app) |
//! | `domains/<app>/<id>` | [`DomainRecord`] |
//! | `dynos/<app>/<name>` | [`DynoRecord`] (routing-table API) |
//! | `formation/<app>/<type>` | [`FormationRecord`] (`ps:scale`) |
//! | `config/<app>` | config vars, a string map |
//! | `procfile/<app>` | [`ProcfileRecord`]: commands and directory (dyno manager) |
//! | `releases/<app>/<version>` | [`ReleaseRecord`] (zero-padded version) |
//! | `drains/<app>/<id>` | [`DrainRecord`] |
//! | `tokens/<app>/<token>` | [`TokenRecord`] (logplex input tokens) |
//! | `certs/<app>/<id>` | [`CertRecord`] (SNI endpoints: chain + key PEM) |
//! | `acm/<app>` | `true` while the app has ACM on (the ACME manager's index) |
//! | `acme/account` | [`AcmeAccountRecord`]: the ACME account key |
//! | `audit/<revision>/<n>` | [`AuditRecord`] |
//! | `routes/<app>` | [`crate::publish::AppRoute`], derived: what routers serve |
//!
//! `routes/` is written by the control plane itself in the same commit as
//! the change it derives from; it is the only prefix remote routers watch.

use serde::{Deserialize, Serialize};

/// Current time as Heroku prints it: RFC 3339, UTC, whole seconds.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A fresh UUID v4 as a string.
pub fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// An app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppRecord {
    /// UUID; never changes.
    pub id: String,
    /// Heroku-style name; changes on rename.
    pub name: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
    /// Time of the latest release.
    pub released_at: Option<String>,
    /// Maintenance mode (H80 for every request).
    pub maintenance: bool,
    /// The `http-session-affinity` feature.
    pub session_affinity: bool,
    /// The `preboot` feature: on a restart or a config change, new web
    /// dynos start and take traffic before the old ones are stopped.
    #[serde(default)]
    pub preboot: bool,
    /// Automated Certificate Management (`heroku certs:auto:enable`): the
    /// ACME manager orders and renews a certificate for each custom domain.
    #[serde(default)]
    pub acm: bool,
    /// Per-app router settings.
    pub router: RouterSettings,
}

/// Per-app router settings, as the routing-table API exposes them. Fields
/// missing from a stored record (written by an older version) take their
/// defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RouterSettings {
    /// TCP connect per attempt.
    pub connect_timeout_ms: u64,
    /// First response byte after the request is sent (H12).
    pub request_timeout_ms: u64,
    /// Rolling idle window after the first byte (H15/H28).
    pub idle_timeout_ms: u64,
    /// Waiting for a starting dyno (H20).
    pub boot_timeout_ms: u64,
    /// Requests one dyno holds before new ones queue.
    pub max_dyno_concurrency: u32,
    /// In-flight plus queued bound (H11); `None` = 200 × web dynos.
    pub max_in_flight: Option<u32>,
    /// `least-outstanding`, `random` or `round-robin`.
    pub balance: String,
    /// Redirect plain-HTTP requests to HTTPS (308).
    pub force_https: bool,
    /// `Strict-Transport-Security` max-age on HTTPS responses; `None` sends none.
    pub hsts_max_age_s: Option<u64>,
    /// Largest request body (413); `None` for no limit.
    pub max_body_bytes: Option<u64>,
    /// Client connections the router keeps open for the app (H22 beyond);
    /// `None` for no limit.
    pub max_client_connections: Option<u32>,
    /// Longest request line (414).
    pub max_request_line_bytes: u32,
    /// Longest header value (431).
    pub max_header_value_bytes: u32,
    /// Longest header name (431).
    pub max_header_name_bytes: u32,
    /// Most headers in one request (431).
    pub max_headers: u32,
}

impl Default for RouterSettings {
    fn default() -> Self {
        let d = router::AppSettings::default();
        RouterSettings {
            connect_timeout_ms: d.timers.connect.as_millis() as u64,
            request_timeout_ms: d.timers.first_byte.as_millis() as u64,
            idle_timeout_ms: d.timers.idle.as_millis() as u64,
            boot_timeout_ms: d.timers.boot.as_millis() as u64,
            max_dyno_concurrency: d.max_dyno_concurrency,
            max_in_flight: d.max_in_flight,
            balance: d.balance.as_str().to_string(),
            force_https: d.force_https,
            hsts_max_age_s: d.hsts_max_age,
            max_body_bytes: d.limits.max_body,
            max_client_connections: d.limits.max_client_connections,
            max_request_line_bytes: d.limits.request_line as u32,
            max_header_value_bytes: d.limits.header_value as u32,
            max_header_name_bytes: d.limits.header_name as u32,
            max_headers: d.limits.headers as u32,
        }
    }
}

/// `hosts/<hostname>`: which app owns a hostname.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostOwner {
    /// Owning app id.
    pub app_id: String,
    /// The domain record's id.
    pub domain_id: String,
}

/// A custom domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainRecord {
    /// UUID.
    pub id: String,
    /// Owning app.
    pub app_id: String,
    /// Punycode, lowercase; `*.` prefix for a wildcard.
    pub hostname: String,
    /// SNI endpoint bound to it, if any.
    pub sni_endpoint_id: Option<String>,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
    /// Where automated certificate management stands for this domain;
    /// `None` while the app's ACM is off (or for records written before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acm: Option<DomainAcm>,
}

/// A domain's automated certificate: status as `heroku certs:auto` shows
/// it, the retry state, and the HTTP-01 challenge routers answer while an
/// order is in flight.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainAcm {
    /// `pending`, `cert issued`, `failing` or `failed` (Heroku's values).
    pub status: String,
    /// Why the last attempt failed (the CA's problem detail).
    pub reason: Option<String>,
    /// Failed attempts since the last success or refresh.
    pub attempts: u32,
    /// When a `failing` domain is tried again (RFC 3339).
    pub retry_at: Option<String>,
    /// The HTTP-01 challenge routers answer at
    /// `/.well-known/acme-challenge/<token>` while an order is in flight.
    pub challenge: Option<AcmeChallenge>,
    /// The control node ordering this domain's certificate right now.
    pub orderer: Option<String>,
    /// Its claim lapses then (RFC 3339), should it die mid-order.
    pub claimed_until: Option<String>,
}

/// One HTTP-01 challenge: the token in the path and the key authorization
/// to answer with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeChallenge {
    /// The challenge token (base64url).
    pub token: String,
    /// `<token>.<account key thumbprint>`.
    pub key_authorization: String,
}

/// `acme/account`: the ACME account the manager orders with, per CA
/// directory (its credentials hold the account's private key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AcmeAccountRecord {
    /// The CA directory URL the account belongs to.
    pub directory: String,
    /// `instant_acme::AccountCredentials`, as that crate serialises them.
    pub credentials: serde_json::Value,
    /// Creation time.
    pub created_at: String,
}

/// A dyno registered by the fleet manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DynoRecord {
    /// UUID, stable while the name exists.
    pub id: String,
    /// `web.1`.
    pub name: String,
    /// Process type (`web`).
    pub r#type: String,
    /// `ip:port` where it serves HTTP/1.1.
    pub address: String,
    /// `starting`, `up`, `crashed` or `down`.
    pub state: String,
    /// Registration time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
}

/// One process type's formation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormationRecord {
    /// UUID.
    pub id: String,
    /// Process type.
    pub r#type: String,
    /// Desired dyno count.
    pub quantity: u32,
    /// Dyno size name (recorded, not enforced).
    pub size: String,
    /// Command (recorded).
    pub command: String,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
}

/// An app's Procfile: the command of each process type, and the directory
/// the dyno manager runs them in (`switchyard serve --dynos`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcfileRecord {
    /// Process type → command line (run with `sh -c`, as a Procfile's).
    pub processes: std::collections::BTreeMap<String, String>,
    /// Absolute working directory of every dyno of the app.
    pub dir: String,
    /// Last change.
    pub updated_at: String,
    /// Restarts asked for (`heroku ps:restart`), counted per target: `""`
    /// for every dyno, a process type (`web`) or a dyno name (`web.1`). A
    /// dyno is restarted each time the sum of its three counts grows.
    #[serde(default)]
    pub restarts: std::collections::BTreeMap<String, u64>,
}

impl ProcfileRecord {
    /// The restarts asked for dyno `name` (`web.1`) so far.
    pub fn restarts_of(&self, name: &str) -> u64 {
        let kind = name.split('.').next().unwrap_or(name);
        [
            self.restarts.get(""),
            self.restarts.get(kind),
            self.restarts.get(name),
        ]
        .into_iter()
        .flatten()
        .sum()
    }
}

/// A release: one per config or formation change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRecord {
    /// UUID.
    pub id: String,
    /// 1, 2, 3…
    pub version: u64,
    /// What changed (`Set FOO config vars`).
    pub description: String,
    /// Creation time.
    pub created_at: String,
}

/// A log drain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainRecord {
    /// UUID.
    pub id: String,
    /// `d.<uuid>`, sent to the drain with every batch.
    pub token: String,
    /// Destination URL.
    pub url: String,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
}

/// A named log-input token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// `t.<uuid>`.
    pub token: String,
    /// Name written in place of the token (`app`, `myservice`).
    pub name: String,
    /// Creation time.
    pub created_at: String,
}

/// An SNI endpoint: a certificate chain, its key and what it covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRecord {
    /// UUID.
    pub id: String,
    /// Heroku-style generated name.
    pub name: String,
    /// PEM, leaf first.
    pub certificate_chain: String,
    /// PEM private key matching the leaf.
    pub private_key: String,
    /// DNS names the leaf covers (SANs, else CN).
    pub cert_domains: Vec<String>,
    /// Leaf subject.
    pub subject: String,
    /// Leaf issuer.
    pub issuer: String,
    /// Validity start (RFC 3339).
    pub starts_at: String,
    /// Validity end (RFC 3339).
    pub expires_at: String,
    /// Subject equals issuer.
    pub self_signed: bool,
    /// Obtained by automated certificate management (ACME), not uploaded.
    #[serde(default)]
    pub acm: bool,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
}

/// One audited change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The store revision of the change.
    pub revision: u64,
    /// When (RFC 3339).
    pub at: String,
    /// App id, when the change concerns one app.
    pub app_id: Option<String>,
    /// App name at the time.
    pub app_name: Option<String>,
    /// Short machine-readable action (`app.create`, `config.set`, …).
    pub action: String,
    /// The sentence also written to the app's log as `heroku[api]`.
    pub message: String,
}

/// Key helpers, so the layout above is spelled in one place.
pub mod key {
    /// `apps/<id>`.
    pub fn app(id: &str) -> String {
        format!("apps/{id}")
    }
    /// `names/<name>`.
    pub fn name(name: &str) -> String {
        format!("names/{name}")
    }
    /// `hosts/<hostname>`.
    pub fn host(hostname: &str) -> String {
        format!("hosts/{hostname}")
    }
    /// `domains/<app>/<id>`.
    pub fn domain(app: &str, id: &str) -> String {
        format!("domains/{app}/{id}")
    }
    /// `dynos/<app>/<name>`.
    pub fn dyno(app: &str, name: &str) -> String {
        format!("dynos/{app}/{name}")
    }
    /// `formation/<app>/<type>`.
    pub fn formation(app: &str, kind: &str) -> String {
        format!("formation/{app}/{kind}")
    }
    /// `config/<app>`.
    pub fn config(app: &str) -> String {
        format!("config/{app}")
    }
    /// `procfile/<app>`.
    pub fn procfile(app: &str) -> String {
        format!("procfile/{app}")
    }
    /// `releases/<app>/<version, zero-padded>`.
    pub fn release(app: &str, version: u64) -> String {
        format!("releases/{app}/{version:010}")
    }
    /// `drains/<app>/<id>`.
    pub fn drain(app: &str, id: &str) -> String {
        format!("drains/{app}/{id}")
    }
    /// `tokens/<app>/<token>`.
    pub fn token(app: &str, token: &str) -> String {
        format!("tokens/{app}/{token}")
    }
    /// `certs/<app>/<id>`.
    pub fn cert(app: &str, id: &str) -> String {
        format!("certs/{app}/{id}")
    }
    /// `acm/<app>`: present while the app has ACM on.
    pub fn acm(app: &str) -> String {
        format!("acm/{app}")
    }
    /// `acme/account`.
    pub const ACME_ACCOUNT: &str = "acme/account";
    /// `routes/<app>`.
    pub fn route(app: &str) -> String {
        format!("routes/{app}")
    }
    /// `audit/<revision>/<n>`.
    pub fn audit(revision: u64, n: usize) -> String {
        format!("audit/{revision:020}/{n:04}")
    }
    /// The per-app prefix of a kind: `dynos/<app>/`.
    pub fn under(kind: &str, app: &str) -> String {
        format!("{kind}/{app}/")
    }
    /// Per-app kinds whose keys are `<kind>/<app>/…` or `<kind>/<app>`.
    pub const PER_APP: [&str; 11] = [
        "domains",
        "dynos",
        "formation",
        "config",
        "releases",
        "drains",
        "tokens",
        "certs",
        "routes",
        "procfile",
        "acm",
    ];
    /// The app id a key belongs to, for `apps/<id>` and per-app kinds.
    pub fn app_of(key: &str) -> Option<&str> {
        let (kind, rest) = key.split_once('/')?;
        if kind != "apps" && !PER_APP.contains(&kind) {
            return None;
        }
        Some(rest.split('/').next().unwrap_or(rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_settings_stored_before_the_limits_existed_still_load() {
        let old = r#"{"connect_timeout_ms":5000,"request_timeout_ms":1500,
            "idle_timeout_ms":55000,"boot_timeout_ms":75000,
            "max_dyno_concurrency":50,"max_in_flight":null,"balance":"random"}"#;
        let s: RouterSettings = serde_json::from_str(old).expect("old record loads");
        assert_eq!(s.request_timeout_ms, 1500);
        assert_eq!(s.balance, "random");
        let d = RouterSettings::default();
        assert_eq!(s.max_headers, d.max_headers);
        assert_eq!(s.max_client_connections, Some(10_000));
        assert!(!s.force_https);
    }
}
