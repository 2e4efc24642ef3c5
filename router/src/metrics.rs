//! What the router records, through the `metrics` facade (the binary
//! installs a Prometheus recorder; without one these calls cost almost
//! nothing).
//!
//! Per request (once, when its log line is written):
//! - `router_requests_total{app, status_class, code}` — `status_class` is
//!   `2xx`…`5xx` (or `none` for H24), `code` the H-code or `none`.
//! - `router_request_duration_seconds{app}` — accept to last byte.
//! - `router_connect_duration_seconds{app}`, `router_service_duration_seconds{app}`,
//!   `router_queue_wait_seconds{app}`.
//!
//! On events: `router_connect_failures_total{app}` (each failed connect
//! quarantines a dyno and, attempts allowing, retries another),
//! `router_client_connections{listener}` (open client connections),
//! `router_tls_handshakes_total{result, version}`, `router_table_revision`
//! and `router_table_swaps_total`.
//!
//! App-owner routing ([`crate::forward`]):
//! `router_forwarded_requests_total{outcome}` (`forwarded`, `fallback`,
//! `failed`, `hop_limit`) and `router_forward_overhead_seconds`.
//!
//! Sampled once a second by [`spawn_sampler`] (never on the hot path):
//! `router_app_in_flight{app}` (in flight plus queued),
//! `router_app_queue_depth{app}`, `router_dyno_in_flight{app, dyno}`.
//!
//! Labels are bounded: app and dyno names, listener, status class, H-code —
//! never a path, a request id or a client address.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

use crate::exchange::Facts;
use crate::hcode::HCode;
use crate::logline::RouterLine;
use crate::table::Routes;

/// The `status_class` label values, indexed by [`class_index`].
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

fn status_class(status: Option<u16>) -> &'static str {
    STATUS_CLASSES[class_index(status)]
}

/// An app's per-request metric handles, resolved on first use instead of
/// looked up in the recorder's registry (hashing the labels, a read lock)
/// on every request: that lookup was about 5,000 instructions a request
/// (BENCHMARKS.md, "Profile"). Kept in the app's live state; a renamed app
/// gets a fresh set under its new name.
#[derive(Debug)]
pub struct AppMetrics {
    name: Arc<str>,
    /// `router_requests_total{code="none"}` by status class, for the
    /// common case; lines with an H-code take the registry path.
    plain: [OnceLock<Counter>; 6],
    duration: OnceLock<Histogram>,
    connect: OnceLock<Histogram>,
    service: OnceLock<Histogram>,
    queue_wait: OnceLock<Histogram>,
}

impl AppMetrics {
    /// Handles for the app called `name` (none registered until used).
    pub fn new(name: Arc<str>) -> Self {
        AppMetrics {
            name,
            plain: Default::default(),
            duration: OnceLock::new(),
            connect: OnceLock::new(),
            service: OnceLock::new(),
            queue_wait: OnceLock::new(),
        }
    }

    /// The app name these handles carry.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn histogram<'a>(
        &'a self,
        cell: &'a OnceLock<Histogram>,
        metric: &'static str,
    ) -> &'a Histogram {
        cell.get_or_init(|| histogram!(metric, "app" => self.name.clone()))
    }
}

fn class_index(status: Option<u16>) -> usize {
    match status {
        Some(100..=199) => 0,
        Some(200..=299) => 1,
        Some(300..=399) => 2,
        Some(400..=499) => 3,
        Some(500..=599) => 4,
        _ => 5,
    }
}

/// Records one finished request that ended at `ended`.
pub(crate) fn request(
    facts: &Facts,
    code: Option<HCode>,
    line: &RouterLine<'_>,
    ended: tokio::time::Instant,
) {
    let m = &*facts.metrics;
    match code {
        None => m.plain[class_index(line.status)]
            .get_or_init(|| {
                counter!(
                    "router_requests_total",
                    "app" => m.name.clone(),
                    "status_class" => status_class(line.status),
                    "code" => "none"
                )
            })
            .increment(1),
        Some(code) => counter!(
            "router_requests_total",
            "app" => m.name.clone(),
            "status_class" => status_class(line.status),
            "code" => code.as_str()
        )
        .increment(1),
    }
    m.histogram(&m.duration, "router_request_duration_seconds")
        .record(
            ended
                .saturating_duration_since(facts.accepted)
                .as_secs_f64(),
        );
    if let Some(ms) = line.connect_ms {
        m.histogram(&m.connect, "router_connect_duration_seconds")
            .record(ms as f64 / 1000.0);
    }
    if let Some(ms) = line.service_ms {
        m.histogram(&m.service, "router_service_duration_seconds")
            .record(ms as f64 / 1000.0);
    }
    m.histogram(&m.queue_wait, "router_queue_wait_seconds")
        .record(facts.wait_ms as f64 / 1000.0);
}

/// A failed connect (the dyno is quarantined; the request may retry).
pub(crate) fn connect_failed(app: &Arc<str>) {
    counter!("router_connect_failures_total", "app" => app.clone()).increment(1);
}

/// A request sent again over a new connection: the pooled one it first
/// went out on closed without a byte of response.
pub(crate) fn stale_retry(app: &Arc<str>) {
    counter!("router_stale_connection_retries_total", "app" => app.clone()).increment(1);
}

/// A finished TLS handshake: `Some(version)` on success.
pub(crate) fn tls_handshake(version: Option<&'static str>) {
    match version {
        Some(v) => {
            counter!("router_tls_handshakes_total", "result" => "ok", "version" => v).increment(1)
        }
        None => counter!("router_tls_handshakes_total", "result" => "error", "version" => "none")
            .increment(1),
    }
}

/// A table publication.
pub(crate) fn table_swapped(revision: u64) {
    gauge!("router_table_revision").set(revision as f64);
    counter!("router_table_swaps_total").increment(1);
}

/// `router_client_connections` for one listener's connections, resolved
/// on its first connection instead of looked up in the recorder's registry
/// (building the key, hashing the label, a read lock) as each connection
/// opens and again as it closes.
#[derive(Default)]
pub(crate) struct ConnectionGauge(OnceLock<(&'static str, Gauge)>);

impl ConnectionGauge {
    /// Counts an open client connection of `listener` until dropped.
    pub(crate) fn open(&self, listener: &'static str) -> ClientConnection {
        let client_connections = || gauge!("router_client_connections", "listener" => listener);
        let (resolved, gauge) = self.0.get_or_init(|| (listener, client_connections()));
        // A listener's connections all carry one label; another is looked up.
        let gauge = if *resolved == listener {
            gauge.clone()
        } else {
            client_connections()
        };
        gauge.increment(1.0);
        ClientConnection(gauge)
    }
}

/// Counts an open client connection until dropped.
pub(crate) struct ClientConnection(Gauge);

impl Drop for ClientConnection {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Samples per-app and per-dyno gauges every `every` until the runtime ends.
pub fn spawn_sampler(routes: Arc<Routes>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            sample(&routes);
        }
    })
}

/// Sets the sampled gauges once.
pub fn sample(routes: &Routes) {
    let table = routes.load();
    for app in table.apps().iter() {
        let name = app.name.clone();
        gauge!("router_app_in_flight", "app" => name.clone()).set(app.live.admitted() as f64);
        gauge!("router_app_queue_depth", "app" => name.clone()).set(app.live.queued() as f64);
        for dyno in app.web.iter() {
            gauge!("router_dyno_in_flight", "app" => name.clone(), "dyno" => dyno.name.to_string())
                .set(dyno.live.in_flight() as f64);
        }
    }
}
