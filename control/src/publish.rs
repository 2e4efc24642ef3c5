//! Publication: from stored records to what routers and logplex serve.
//!
//! # The table-publication protocol
//!
//! 1. Every API change is one store commit, which gets the next **revision**
//!    (1, 2, 3, … with no gaps). In the same commit the control plane writes
//!    the derived route entry `routes/<app>` ([`AppRoute`]) of every app the
//!    change touched, so the route view and the records it derives from can
//!    never disagree.
//! 2. After the commit, the in-process router gets the touched apps (and
//!    their certificates) as one [`router::TableUpdate`] stamped with the
//!    revision, and swaps in a table that shares everything else with the
//!    previous one ([`router::Routes::update`]; a whole table from every
//!    `routes/*` entry only at start, after a reload, or after a refused
//!    update); logplex gets a new [`logplex::LogplexConfig`] with the same
//!    revision when a channel changed. Only the apps the commit touched are
//!    decoded again ([`Published`]).
//! 3. Remote routers read `GET /routes` (every [`AppRoute`] and the revision
//!    R) and then `GET /routes/watch?since=R`, which streams each later
//!    revision's `routes/` changes in order ([`crate::watch`]). A watcher
//!    that fell behind the store's retained change log gets a `resync` event
//!    and must re-read `GET /routes`; it never silently skips a change.
//! 4. A router that loses the control plane keeps serving its last table
//!    (it is *stale*, not empty) and resumes the watch from its revision.
//!    Silence never removes a dyno.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{
    key, AcmeChallenge, AppRecord, CertRecord, DomainRecord, DrainRecord, DynoRecord,
    RouterSettings, TokenRecord,
};
use crate::state::{State, Txn};

/// The name of the input token platform lines (the router's) are written
/// with: Logplex's, so they read `heroku[router]`.
pub const PLATFORM_TOKEN: &str = "heroku";

/// Everything a router needs about one app: the value of `routes/<app>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppRoute {
    /// App id (UUID).
    pub id: String,
    /// App name (answers on `<name>.<base-domain>`).
    pub name: String,
    /// Custom domains (punycode; `*.` wildcards).
    pub domains: Vec<String>,
    /// Router settings, maintenance, features and pages.
    pub settings: RouteSettings,
    /// Registered dynos of every type.
    pub dynos: Vec<RouteDyno>,
    /// SNI endpoints (for the TLS listener).
    pub certs: Vec<RouteCert>,
    /// The app's platform input token (the one named `heroku`): a router
    /// running apart writes its router lines to logplex with it, so they
    /// come out as `heroku[router]`. Routers are trusted parts of the
    /// fleet; the token is never logged. Absent in entries written before
    /// routers shipped their lines, and for an app whose `heroku` token was
    /// removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_token: Option<String>,
    /// ACME HTTP-01 challenges in flight for the app's domains: every
    /// router of the cluster answers them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acme_challenges: Vec<AcmeChallenge>,
}

/// Router-facing settings of one app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteSettings {
    /// Timers, concurrency, H11 bound and balancing.
    #[serde(flatten)]
    pub router: RouterSettings,
    /// Maintenance mode.
    pub maintenance: bool,
    /// `http-session-affinity`.
    pub session_affinity: bool,
    /// `ERROR_PAGE_URL` config var.
    pub error_page_url: Option<String>,
    /// `MAINTENANCE_PAGE_URL` config var.
    pub maintenance_page_url: Option<String>,
}

/// A dyno as routers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteDyno {
    /// `web.1`.
    pub name: String,
    /// `ip:port`.
    pub address: String,
    /// `starting`, `up`, `crashed`, `down`.
    pub state: String,
}

/// A certificate as the TLS listener needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteCert {
    /// SNI endpoint id.
    pub id: String,
    /// DNS names the certificate covers (may include wildcards).
    pub domains: Vec<String>,
    /// PEM chain, leaf first.
    pub certificate_chain: String,
    /// PEM private key.
    pub private_key: String,
}

/// Derives the route entry of `app` as the transaction will leave it.
pub fn derive_route(txn: &Txn<'_>, app: &AppRecord) -> AppRoute {
    let domains: Vec<DomainRecord> = txn.list(&key::under("domains", &app.id));
    let dynos: Vec<DynoRecord> = txn.list(&key::under("dynos", &app.id));
    let certs: Vec<CertRecord> = txn.list(&key::under("certs", &app.id));
    let config: BTreeMap<String, String> = txn.get(&key::config(&app.id)).unwrap_or_default();
    let acme_challenges: Vec<AcmeChallenge> = domains
        .iter()
        .filter_map(|d| d.acm.as_ref()?.challenge.clone())
        .collect();
    let mut domains: Vec<String> = domains.into_iter().map(|d| d.hostname).collect();
    domains.sort();
    let log_token = txn
        .list::<TokenRecord>(&key::under("tokens", &app.id))
        .into_iter()
        .find(|t| t.name == PLATFORM_TOKEN)
        .map(|t| t.token);
    AppRoute {
        id: app.id.clone(),
        name: app.name.clone(),
        domains,
        settings: RouteSettings {
            router: app.router.clone(),
            maintenance: app.maintenance,
            session_affinity: app.session_affinity,
            error_page_url: config.get("ERROR_PAGE_URL").cloned(),
            maintenance_page_url: config.get("MAINTENANCE_PAGE_URL").cloned(),
        },
        dynos: dynos
            .into_iter()
            .map(|d| RouteDyno {
                name: d.name,
                address: d.address,
                state: d.state,
            })
            .collect(),
        certs: certs
            .into_iter()
            .map(|c| RouteCert {
                id: c.id,
                domains: c.cert_domains,
                certificate_chain: c.certificate_chain,
                private_key: c.private_key,
            })
            .collect(),
        log_token,
        acme_challenges,
    }
}

/// Rewrites `routes/<app>` for every app the transaction touched (deleting
/// the entry of a destroyed app). Called once, just before commit.
pub fn refresh_routes(txn: &mut Txn<'_>) {
    for id in txn.touched_apps() {
        match txn.get::<AppRecord>(&key::app(&id)) {
            Some(app) => {
                let route = derive_route(txn, &app);
                txn.put(key::route(&id), &route);
            }
            None => txn.delete(key::route(&id)),
        }
    }
}

impl AppRoute {
    /// The router's view of this app. Entries that do not parse (a dyno
    /// address, a state) are skipped with a warning rather than failing the
    /// whole table: the API validates them, so this only guards old data.
    pub fn to_spec(&self) -> router::AppSpec {
        let s = &self.settings;
        let settings = router::AppSettings {
            timers: router::Timers {
                connect: Duration::from_millis(s.router.connect_timeout_ms),
                first_byte: Duration::from_millis(s.router.request_timeout_ms),
                idle: Duration::from_millis(s.router.idle_timeout_ms),
                boot: Duration::from_millis(s.router.boot_timeout_ms),
            },
            max_dyno_concurrency: s.router.max_dyno_concurrency,
            max_in_flight: s.router.max_in_flight,
            balance: router::Balance::parse(&s.router.balance).unwrap_or_default(),
            maintenance: s.maintenance,
            session_affinity: s.session_affinity,
            error_page_url: s.error_page_url.clone(),
            maintenance_page_url: s.maintenance_page_url.clone(),
            force_https: s.router.force_https,
            hsts_max_age: s.router.hsts_max_age_s,
            limits: router::Limits {
                request_line: s.router.max_request_line_bytes as usize,
                header_value: s.router.max_header_value_bytes as usize,
                header_name: s.router.max_header_name_bytes as usize,
                headers: s.router.max_headers as usize,
                max_body: s.router.max_body_bytes,
                max_client_connections: s.router.max_client_connections,
            },
        };
        let dynos = self
            .dynos
            .iter()
            .filter_map(|d| {
                let address: SocketAddr = d.address.parse().ok()?;
                let state = router::DynoState::parse(&d.state)?;
                Some(router::DynoSpec {
                    name: d.name.clone(),
                    address,
                    state,
                })
            })
            .collect();
        router::AppSpec {
            id: self.id.clone(),
            name: self.name.clone(),
            domains: self.domains.clone(),
            settings,
            dynos,
            log_token: self.log_token.as_deref().map(router::LogToken::new),
            acme_challenges: self
                .acme_challenges
                .iter()
                .map(|c| (c.token.clone(), c.key_authorization.clone()))
                .collect(),
        }
    }
}

impl AppRoute {
    /// The router's certificates of this app (SNI endpoints).
    pub fn cert_specs(&self) -> Vec<router::CertSpec> {
        self.certs
            .iter()
            .map(|c| router::CertSpec {
                id: c.id.clone(),
                domains: c.domains.clone(),
                chain_pem: c.certificate_chain.clone(),
                key_pem: c.private_key.clone(),
            })
            .collect()
    }
}

/// A route-table builder for `revision` over `routes`.
pub fn table_builder<'a>(
    revision: u64,
    base_domain: &str,
    routes: impl IntoIterator<Item = &'a AppRoute>,
) -> router::RouteTableBuilder {
    let mut certs = Vec::new();
    let mut apps = Vec::new();
    for route in routes {
        certs.extend(route.cert_specs());
        apps.push(route.to_spec());
    }
    router::RouteTable::builder()
        .revision(revision)
        .base_domain(base_domain)
        .apps(apps)
        .certs(certs)
}

/// What the control plane last published, kept per app so that a commit
/// re-derives only the apps it touched: decoding every `routes/*` and
/// `apps/*` record of the mirror on each commit made a write cost
/// O(all apps). With 3,000 apps, in-memory store, one writer
/// (`examples/commit_rate.rs`): `POST /apps` 36 → 10.5 ms of CPU a write,
/// a dyno registration 38 → 6.4 ms (which no longer reconfigures logplex).
///
/// The router is handed only what changed ([`Published::publish_routes`]
/// through [`router::Routes::update`]): the touched apps' specs and
/// certificates. A whole table is built only at start, after a reload, and
/// after a publication the router refused. What is still O(apps) per
/// commit is logplex's token map, and only for commits that change a
/// channel.
#[derive(Debug)]
pub struct Published {
    /// App id → the router's spec of it and its certificates.
    routes: BTreeMap<String, (router::AppSpec, Vec<router::CertSpec>)>,
    /// App id → its logplex channel.
    channels: BTreeMap<String, logplex::ChannelSpec>,
    /// Apps changed since the router last accepted a table, each with the
    /// certificates the router has for it: what the next update carries.
    pending: BTreeMap<String, Vec<router::CertSpec>>,
    /// The router has no accepted table of these specs yet (just loaded,
    /// or a publication was refused): the next publication is whole.
    needs_full: bool,
}

impl Default for Published {
    fn default() -> Self {
        Published {
            routes: BTreeMap::new(),
            channels: BTreeMap::new(),
            pending: BTreeMap::new(),
            needs_full: true,
        }
    }
}

impl Published {
    /// Every app of `state`.
    pub fn of(state: &State) -> Self {
        let mut p = Published::default();
        for route in routes_of(state) {
            let specs = (route.to_spec(), route.cert_specs());
            p.routes.insert(route.id, specs);
        }
        for app in state.list::<AppRecord>("apps/") {
            p.channels.insert(app.id.clone(), channel_spec(state, app));
        }
        p
    }

    /// Re-derives the apps whose keys `changes` touch, from `state` (which
    /// already has them applied). O(changed apps). Returns whether any
    /// logplex channel changed (most commits — dynos, settings, domains,
    /// config vars — change none, and logplex need not be reconfigured).
    pub fn update(&mut self, state: &State, changes: &[crate::store::Change]) -> bool {
        let mut channels_changed = false;
        let mut ids: Vec<&str> = changes.iter().filter_map(|c| key::app_of(&c.key)).collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            self.set_route(id, state.get::<AppRoute>(&key::route(id)).as_ref());
            let channel = state
                .get::<AppRecord>(&key::app(id))
                .map(|app| channel_spec(state, app));
            if self.channels.get(id) != channel.as_ref() {
                channels_changed = true;
                match channel {
                    Some(c) => self.channels.insert(id.to_string(), c),
                    None => self.channels.remove(id),
                };
            }
        }
        channels_changed
    }

    /// The routes of a follower's whole table (no logplex channels); the
    /// next publication is whole.
    pub fn of_routes<'a>(routes: impl IntoIterator<Item = &'a AppRoute>) -> Self {
        let mut p = Published::default();
        for route in routes {
            let specs = (route.to_spec(), route.cert_specs());
            p.routes.insert(route.id.clone(), specs);
        }
        p
    }

    /// Sets one app's route (`None`: the app is gone); the next update
    /// carries it. O(that app). A route equal to the published one (a
    /// commit that touched a drain, a token, an unrelated config var)
    /// gives the router nothing.
    pub fn set_route(&mut self, id: &str, route: Option<&AppRoute>) {
        let specs = route.map(|route| (route.to_spec(), route.cert_specs()));
        if self.routes.get(id) == specs.as_ref() {
            return;
        }
        if !self.pending.contains_key(id) {
            let accepted = self.routes.get(id).map(|(_, c)| c.clone());
            self.pending
                .insert(id.to_string(), accepted.unwrap_or_default());
        }
        match specs {
            Some(specs) => self.routes.insert(id.to_string(), specs),
            None => self.routes.remove(id),
        };
    }

    /// Hands the router (if this process has one) what changed since it
    /// last accepted a table, as
    /// one update stamped `revision` ([`router::Routes::update`]); or the
    /// whole table when it has none of these specs yet. A refused update is
    /// retried whole (which reports the reason again if the table itself is
    /// at fault); until the router accepts a table, every publication is
    /// whole, so a change is never lost to a refusal.
    pub fn publish_routes(
        &mut self,
        routes: Option<&router::Routes>,
        revision: u64,
        base_domain: &str,
    ) -> Result<(), router::TableError> {
        let Some(routes) = routes else {
            // No router in this process: nothing to keep pending for.
            self.pending.clear();
            return Ok(());
        };
        if !self.needs_full {
            match routes.update(self.table_update(revision)) {
                Ok(_) => {
                    self.pending.clear();
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(error = %e, revision, "route update refused; publishing the whole table");
                }
            }
        }
        let result = routes.publish(self.table(revision, base_domain));
        self.needs_full = result.is_err();
        if result.is_ok() {
            self.pending.clear();
        }
        result.map(|_| ())
    }

    /// The router's change since the table it last accepted: every pending
    /// app whole (or its removal), and its certificates that differ.
    pub fn table_update(&self, revision: u64) -> router::TableUpdate {
        let mut update = router::TableUpdate {
            revision,
            ..router::TableUpdate::default()
        };
        for (id, accepted) in &self.pending {
            let (spec, certs) = match self.routes.get(id) {
                Some((spec, certs)) => (Some(spec), certs.as_slice()),
                None => (None, &[][..]),
            };
            match spec {
                Some(spec) => update.apps.push(spec.clone()),
                None => update.removed_apps.push(id.clone()),
            }
            for old in accepted {
                if !certs.iter().any(|c| c.id == old.id) {
                    update.removed_certs.push(old.id.clone());
                }
            }
            for cert in certs {
                if !accepted.contains(cert) {
                    update.certs.push(cert.clone());
                }
            }
        }
        update
    }

    /// A route-table builder for every app, at `revision`.
    pub fn table(&self, revision: u64, base_domain: &str) -> router::RouteTableBuilder {
        let mut certs = Vec::new();
        let mut apps = Vec::with_capacity(self.routes.len());
        for (app, app_certs) in self.routes.values() {
            apps.push(app.clone());
            certs.extend(app_certs.iter().cloned());
        }
        router::RouteTable::builder()
            .revision(revision)
            .base_domain(base_domain)
            .apps(apps)
            .certs(certs)
    }

    /// The logplex configuration for every app, at `revision`.
    pub fn logplex(&self, revision: u64) -> logplex::LogplexConfig {
        logplex::LogplexConfig {
            revision,
            channels: self.channels.values().cloned().collect(),
        }
    }
}

/// Every `routes/*` entry of `state`.
pub fn routes_of(state: &State) -> Vec<AppRoute> {
    state.list("routes/")
}

/// The logplex configuration for `state`: one channel per app with its input
/// tokens and drains.
pub fn logplex_config(state: &State) -> logplex::LogplexConfig {
    logplex::LogplexConfig {
        revision: state.revision,
        channels: state
            .list::<AppRecord>("apps/")
            .into_iter()
            .map(|app| channel_spec(state, app))
            .collect(),
    }
}

/// The logplex channel of `app`: its input tokens and drains.
fn channel_spec(state: &State, app: AppRecord) -> logplex::ChannelSpec {
    logplex::ChannelSpec {
        tokens: state
            .list::<TokenRecord>(&key::under("tokens", &app.id))
            .into_iter()
            .map(|t| logplex::TokenSpec {
                token: t.token,
                name: t.name,
            })
            .collect(),
        drains: state
            .list::<DrainRecord>(&key::under("drains", &app.id))
            .into_iter()
            .map(|d| logplex::DrainSpec {
                id: d.id,
                token: d.token,
                url: d.url,
            })
            .collect(),
        app_id: app.id,
        app_name: app.name,
    }
}

/// What a log session asks for (`POST /apps/{app}/log-sessions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionParams {
    /// Recent lines to replay first (`None`: logplex's default).
    pub lines: Option<usize>,
    /// Keep streaming new lines.
    pub tail: bool,
    /// Only lines from this source (`app`, `heroku`).
    pub source: Option<String>,
    /// Only lines from this dyno/process (`web.1`, `router`).
    pub dyno: Option<String>,
}

/// Where the control plane sends log configuration and `heroku[api]` lines.
/// The binary implements it over the in-process logplex.
pub trait LogBackend: Send + Sync + 'static {
    /// Replaces the channel configuration. Called at start, and after each
    /// commit that changes a channel (an app, its name, tokens or drains),
    /// with that commit's revision.
    fn configure(&self, config: logplex::LogplexConfig);
    /// Writes one line into an app's channel (`heroku`, `api`, message).
    fn emit(&self, app_id: &str, source: &str, process: &str, message: &str);
    /// Opens a log session and returns the URL clients stream it from, or
    /// why it cannot (the app has no channel yet, no log router is live):
    /// the client gets that reason with a 503.
    fn create_session(&self, app_id: &str, params: SessionParams) -> Result<String, String>;
}
