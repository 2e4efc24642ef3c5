//! The admin listener: `/metrics` (Prometheus text format), `/healthz`
//! (the process is up) and `/readyz` (the route table is loaded, every
//! listener is bound and the store is open).

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
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
}

impl Readiness {
    fn missing(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if !self.table_loaded.load(Ordering::Acquire) {
            missing.push("route table not loaded");
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

/// Installs the global Prometheus recorder. Latency histograms (every
/// metric ending in `_seconds`) get buckets from 1 ms to 60 s.
pub fn install_recorder() -> anyhow::Result<PrometheusHandle> {
    const BUCKETS: &[f64] = &[
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)?
        .install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
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
    metrics: PrometheusHandle,
    ready: Arc<Readiness>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
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
                            if missing.is_empty() {
                                respond(StatusCode::OK, "text/plain", "ready\n")
                            } else {
                                respond(
                                    StatusCode::SERVICE_UNAVAILABLE,
                                    "text/plain",
                                    format!("not ready: {}\n", missing.join(", ")),
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
pub async fn sample(routes: Arc<router::Routes>, logplex: Option<Arc<logplex::Logplex>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        router::metrics::sample(&routes);
        if let Some(logplex) = &logplex {
            for d in logplex.drain_stats() {
                metrics::gauge!("logplex_drain_buffered_lines", "drain" => d.drain_id)
                    .set(d.buffered as f64);
            }
            let tails: usize = routes
                .load()
                .apps()
                .iter()
                .filter_map(|app| logplex.channel(&app.id))
                .map(|channel| channel.tail_count())
                .sum();
            metrics::gauge!("logplex_tails").set(tails as f64);
        }
    }
}
