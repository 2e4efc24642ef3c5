//! The admin listener: `/metrics` (Prometheus text format), `/healthz`
//! (the process is up) and `/readyz` (the route table is loaded, every
//! listener is bound and the store is open).

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::recorder::Handle;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// What `/readyz` checks.
#[derive(Debug, Default)]
pub struct Readiness {
    /// A route table has been loaded (from the store, or from the control plane).
    pub table_loaded: AtomicBool,
    /// Every listener is bound.
    pub listeners_bound: AtomicBool,
    /// The store is open (always true for a router that has no store).
    pub store_open: AtomicBool,
    /// A router apart: where its table comes from (a table counts as
    /// loaded once the follower serves one, from its source or its cache).
    follower: std::sync::OnceLock<Arc<control::FollowStatus>>,
    /// A process without a route table (the log router alone) waits for
    /// its log configuration instead; `/readyz` names that.
    pub logs_only: AtomicBool,
}

impl Readiness {
    /// Takes the table's readiness from a router's follower.
    pub fn follow(&self, status: Arc<control::FollowStatus>) {
        let _ = self.follower.set(status);
    }

    fn table_loaded(&self) -> bool {
        match self.follower.get() {
            Some(f) => f.loaded.load(Ordering::Acquire),
            None => self.table_loaded.load(Ordering::Acquire),
        }
    }

    /// What `/readyz` says beyond ready or not: a following router's
    /// source. A router whose source is unreachable stays ready, since it
    /// serves its last table; taking every router out of rotation when etcd
    /// or the control plane fails would turn a control-plane outage into an
    /// outage of the edge.
    fn detail(&self) -> Option<String> {
        self.follower.get().map(|f| f.describe())
    }

    fn missing(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if !self.table_loaded() {
            missing.push(if self.logs_only.load(Ordering::Acquire) {
                "log configuration not loaded"
            } else {
                "route table not loaded"
            });
        }
        if !self.listeners_bound.load(Ordering::Acquire) {
            missing.push("listeners not bound");
        }
        if !self.store_open.load(Ordering::Acquire) {
            missing.push("store not open");
        }
        missing
    }
}

/// Installs the process's metrics recorder ([`crate::recorder`]):
/// latency histograms get buckets from 1 ms to 60 s.
pub fn install_recorder() -> anyhow::Result<Handle> {
    let handle = crate::recorder::install()?;
    describe();
    Ok(handle)
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

/// Serves the admin endpoints until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Handle,
    ready: Arc<Readiness>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let mut acceptor = router::accept::Acceptor::new(listener, "admin");
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = acceptor.accept() => accepted,
            _ = &mut shutdown => return Ok(()),
        };
        let metrics = metrics.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                let ready = ready.clone();
                async move {
                    let resp = match (req.method(), req.uri().path()) {
                        (&http::Method::GET, "/metrics") => respond(
                            StatusCode::OK,
                            "text/plain; version=0.0.4; charset=utf-8",
                            metrics.render(),
                        ),
                        (&http::Method::GET, "/healthz") => {
                            respond(StatusCode::OK, "text/plain", "ok\n")
                        }
                        (&http::Method::GET, "/readyz") => {
                            let missing = ready.missing();
                            let detail =
                                ready.detail().map(|d| format!("{d}\n")).unwrap_or_default();
                            if missing.is_empty() {
                                respond(StatusCode::OK, "text/plain", format!("ready\n{detail}"))
                            } else {
                                respond(
                                    StatusCode::SERVICE_UNAVAILABLE,
                                    "text/plain",
                                    format!("not ready: {}\n{detail}", missing.join(", ")),
                                )
                            }
                        }
                        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Samples gauges once a second (never on a request's path): the router's
/// per-app and per-dyno gauges, each drain's buffered lines, and the number
/// of live tails.
pub async fn sample(routes: Option<Arc<router::Routes>>, logplex: Option<Arc<logplex::Logplex>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Some(routes) = &routes {
            router::metrics::sample(routes);
        }
        if let Some(logplex) = &logplex {
            for d in logplex.drain_stats() {
                metrics::gauge!("logplex_drain_buffered_lines", "drain" => d.drain_id)
                    .set(d.buffered as f64);
            }
            metrics::gauge!("logplex_tails").set(logplex.tail_count() as f64);
        }
    }
}

/// Help text for every metric Switchyard records (Prometheus wants it, and
/// `promtool check metrics` checks for it).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "router_requests_total",
        "Requests finished, by app, status class and H-code (none when there is none)."
    );
    describe_histogram!(
        "router_request_duration_seconds",
        Unit::Seconds,
        "Accept to last byte of a request."
    );
    describe_histogram!(
        "router_connect_duration_seconds",
        Unit::Seconds,
        "Connection set-up to the dyno, retries included."
    );
    describe_histogram!(
        "router_service_duration_seconds",
        Unit::Seconds,
        "Request sent to response complete."
    );
    describe_histogram!(
        "router_queue_wait_seconds",
        Unit::Seconds,
        "Time spent in the app's queue waiting for a dyno slot."
    );
    describe_counter!(
        "router_forwarded_requests_total",
        "Requests for an app another router owns, by outcome: forwarded (the owner answered), fallback (owner unreachable before sending; routed here), failed (sent, then the owner failed), hop_limit (answered H99)."
    );
    describe_histogram!(
        "router_forward_overhead_seconds",
        Unit::Seconds,
        "What forwarding to the app's owner added to a request's time to its response head (this router's time less the owner's)."
    );
    describe_gauge!(
        "router_live_routers",
        "Routers in the live set this router follows in etcd (--advertise)."
    );
    describe_counter!(
        "router_connect_failures_total",
        "Refused or timed-out connects; each quarantines the dyno."
    );
    describe_counter!(
        "router_stale_connection_retries_total",
        "Idempotent bodiless requests sent again on a new connection after the pooled one closed unanswered."
    );
    describe_gauge!(
        "router_client_connections",
        "Open client connections by listener."
    );
    describe_counter!(
        "router_tls_handshakes_total",
        "TLS handshakes by result and version."
    );
    describe_counter!(
        "router_ocsp_fetches_total",
        "OCSP responses fetched for stapling, by result (good, revoked, unknown, invalid, error)."
    );
    describe_gauge!(
        "router_ocsp_staples",
        "Served certificates with a valid OCSP response stapled."
    );
    describe_gauge!(
        "router_table_revision",
        "Revision of the route table being served."
    );
    describe_counter!("router_table_swaps_total", "Route-table publications.");
    describe_gauge!(
        "router_app_in_flight",
        "Requests admitted for an app: in flight plus queued (the H11 counter)."
    );
    describe_gauge!(
        "router_app_queue_depth",
        "Requests waiting in an app's queue."
    );
    describe_gauge!("router_dyno_in_flight", "Requests in flight on each dyno.");
    describe_counter!(
        "logplex_frames_received_total",
        "Log frames received, by transport."
    );
    describe_counter!(
        "logplex_frames_malformed_total",
        "Log frames that did not parse, by transport."
    );
    describe_counter!(
        "logplex_frames_unknown_token_total",
        "Log frames for no known token, by transport."
    );
    describe_counter!(
        "logplex_connections_refused_total",
        "Syslog and logplex HTTP connections closed on arrival because their connection limit was reached, by transport."
    );
    describe_counter!(
        "logplex_drain_accepted_lines_total",
        "Lines accepted into a drain's buffer."
    );
    describe_counter!(
        "logplex_drain_delivered_lines_total",
        "Lines a drain's endpoint took."
    );
    describe_counter!(
        "logplex_drain_dropped_lines_total",
        "Lines a drain lost (overflow or refusal)."
    );
    describe_counter!(
        "logplex_drain_reported_lines_total",
        "Dropped lines reported in L10 lines."
    );
    describe_gauge!(
        "logplex_drain_buffered_lines",
        "Lines waiting in a drain's buffer."
    );
    describe_gauge!("logplex_tails", "Live log tail sessions.");
    describe_gauge!(
        "logplex_connections_open",
        "Open syslog (tcp, tls) and logplex HTTP connections, by transport."
    );
    describe_counter!(
        "logplex_connections_idle_closed_total",
        "Syslog connections closed after sending nothing for the idle timeout, by transport."
    );
    describe_counter!(
        "switchyard_accept_errors_total",
        "Failed accepts (out of file descriptors and the like), by listener; each backs off briefly."
    );
    describe_counter!(
        "control_api_requests_total",
        "Control API requests by method and status class."
    );
    describe_histogram!(
        "control_store_commit_seconds",
        Unit::Seconds,
        "Durable store commit latency."
    );
    describe_gauge!(
        "switchyard_control_revision",
        "Control-plane revision last committed."
    );
    describe_counter!("switchyard_control_commits_total", "Control-plane commits.");
    describe_counter!(
        "switchyard_acme_orders_total",
        "ACME certificate orders finished, by result (issued, failed)."
    );
    describe_counter!(
        "switchyard_control_reloads_total",
        "Times the control plane re-read the store: a commit met another writer's, or failed after it may have landed."
    );
    describe_counter!(
        "switchyard_control_conflict_retries_total",
        "Changes run again on the reloaded state after meeting another control node's commit."
    );
    describe_counter!(
        "logplex_inbox_dropped_lines_total",
        "In-process lines (router lines) dropped because a worker's queue into logplex was full; each reported by an L10 line in the app's stream."
    );
    describe_counter!(
        "router_log_lines_dropped_total",
        "Router lines a router running apart could not send to a log router, by reason (queue_full, no_log_router, link_down, write_failed, no_token); each app's count is reported by an L10 line in its stream once its log router is reachable (except no_token)."
    );
    describe_counter!(
        "router_log_lines_shipped_total",
        "Router lines a router running apart wrote to a log router's syslog connection."
    );
    describe_counter!(
        "logplex_forwarded_lines_total",
        "Lines a log router of a cluster forwarded to the node that owns their channel."
    );
    describe_counter!(
        "logplex_forward_dropped_lines_total",
        "Lines a log router of a cluster could not forward to the node that owns their channel, by reason (queue_full, no_log_router, link_down, write_failed); each app's count is reported by an L10 line in its stream once the owner is reachable."
    );
    describe_gauge!(
        "logplex_forward_links_up",
        "Connections a log router of a cluster holds to its peers' syslog listeners."
    );
    describe_gauge!(
        "logplex_channels_owned",
        "Channels this log router owns in its cluster (keeps their history, runs their drains)."
    );
    describe_gauge!(
        "router_log_links_up",
        "Connections a router running apart holds to log routers' syslog listeners."
    );
    describe_gauge!(
        "router_log_routers",
        "Live log routers (logplex members in etcd) a router running apart sees."
    );
    describe_gauge!(
        "switchyard_table_revision",
        "Revision a following router serves."
    );
    describe_gauge!(
        "switchyard_control_connected",
        "1 while a following router is connected to its control plane."
    );
    describe_counter!(
        "switchyard_table_resyncs_total",
        "Full route-table re-reads by a router following a control plane."
    );
    describe_gauge!(
        "switchyard_members",
        "Live members of a kind (logplex, router) in etcd, as this process watches them."
    );
    describe_counter!(
        "switchyard_member_relists_total",
        "Full re-reads of a member set after etcd compacted past the watch's resume point."
    );
    describe_gauge!(
        "switchyard_store_connected",
        "1 while the shared store (etcd) answers: a router following etcd, or a control node on it."
    );
    describe_gauge!(
        "switchyard_store_revision",
        "Newest store revision a router following etcd has seen in the change log."
    );
    describe_counter!(
        "switchyard_store_relists_total",
        "Full route-table reads by a router following etcd after a compaction, a gap or an unreadable entry."
    );
    describe_histogram!(
        "switchyard_store_watch_lag_seconds",
        Unit::Seconds,
        "From a commit (by the committing node's clock) to the change being routable on a router following etcd."
    );
}
