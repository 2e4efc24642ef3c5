//! The router data plane alone, for the load harness: one app, its dynos
//! given on the command line, no control plane, no logplex.
//!
//! It runs the same `router::serve` / `router::serve_tls` the `switchyard`
//! binary runs, over a route table built in code, so the harness measures
//! the request path (lookup, dyno choice, queue, proxy, pooled upstream
//! connections, log-line formatting) without the API or the store. Router
//! lines are formatted as in production and handed to a sink that drops
//! them, matching nginx and HAProxy with access logs off.
//!
//! ```text
//! cargo run --release --example bench_router -- --http 127.0.0.1:8080 \
//!     --threads 1 --dyno 127.0.0.1:9000
//! ```
//!
//! Any `Host` routes to the app (it is given `*.localhost` and the exact
//! names `localhost` and `127.0.0.1` as domains). Prints
//! `listening role=router addr=IP:PORT` (and `role=router-tls`) once bound.

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use router::{AppSettings, AppSpec, Balance, RouteTable, Router, Routes};

#[derive(Debug, Parser)]
#[command(about = "Switchyard's router over a fixed one-app table, for benchmarks")]
struct Args {
    /// Plain HTTP listener (HTTP/1.1, and HTTP/2 with prior knowledge).
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// HTTPS listener with a self-signed certificate (ALPN h2, http/1.1).
    #[arg(long)]
    https: Option<SocketAddr>,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// App name.
    #[arg(long, default_value = "bench")]
    app: String,
    /// Dyno addresses, `web.1`, `web.2`, … in order; repeat the flag.
    #[arg(long = "dyno", required = true)]
    dynos: Vec<SocketAddr>,
    /// Balancing mode: least-outstanding, random or round-robin.
    #[arg(long, default_value = "least-outstanding", value_parser = parse_balance)]
    balance: Balance,
    /// Requests one dyno may hold before new ones queue in the router
    /// (Switchyard's default is 50; the throughput runs lift it so the
    /// router, like nginx and HAProxy there, never holds requests back).
    #[arg(long, default_value_t = 50)]
    max_dyno_concurrency: u32,
    /// In-flight plus queued requests before H11 (default: 200 per dyno).
    #[arg(long)]
    max_in_flight: Option<u32>,
    /// Run without the Prometheus recorder (the binary always has one, so
    /// by default the request path pays for its counters and histograms).
    #[arg(long)]
    no_metrics: bool,
}

/// The binary's recorder (`src/recorder.rs`), compiled into this example
/// as it is into the binary.
#[path = "../src/recorder.rs"]
#[allow(dead_code)]
mod recorder;

/// The binary's recorder: its own latency histograms, upkeep every 5 s.
fn install_metrics() {
    recorder::install().expect("the recorder installs once");
}

/// The same allocator as the `switchyard` binary.
#[global_allocator]
static ALLOCATOR: allocator::Allocator = allocator::Allocator;

fn parse_balance(s: &str) -> Result<Balance, String> {
    Balance::parse(s).ok_or_else(|| format!("unknown balance {s:?}"))
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn main() {
    let args = Args::parse();
    // The binary's subscriber (info and up, to stderr): without one,
    // tracing's `log` fallback builds every trace-level span hyper and h2
    // open, which the binary never pays for.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SWITCHYARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    // The router runs on its own worker threads (as in the `switchyard`
    // binary); this runtime only waits for the signal.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime starts");
    runtime.block_on(async move {
        if !args.no_metrics {
            install_metrics();
        }
        let mut app = AppSpec::new(args.app.clone())
            .domain("*.localhost")
            .domain("localhost")
            .domain("127.0.0.1")
            .settings(AppSettings {
                balance: args.balance,
                max_dyno_concurrency: args.max_dyno_concurrency,
                max_in_flight: args.max_in_flight,
                ..AppSettings::default()
            });
        for (i, addr) in args.dynos.iter().enumerate() {
            app = app.dyno(format!("web.{}", i + 1), *addr);
        }
        let table = RouteTable::builder()
            .app(app)
            .build()
            .expect("one-app table builds");
        let routes = Arc::new(Routes::new(table));
        let router = Router::new(routes.clone(), Arc::new(router::NullSink));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };

        let threads = args.threads.max(1);
        let http =
            router::workers::bind_shared(args.http, threads).expect("router HTTP port is free");
        println!(
            "listening role=router addr={}",
            http[0].local_addr().expect("bound listener has an address")
        );
        let mut servers = vec![tokio::spawn(router::workers::run_per_thread(
            "router-http",
            http,
            {
                let (router, stopped) = (router.clone(), stopped.clone());
                move |l| router::serve(l, router.clone(), stopped())
            },
        ))];
        if let Some(addr) = args.https {
            let names = vec!["localhost".to_string(), "*.localhost".to_string()];
            let (chain, key) = router::tls::self_signed(&names).expect("self-signed cert");
            let config = router::tls::server_config(
                routes.clone(),
                &router::TlsSettings {
                    default_chain_pem: chain,
                    default_key_pem: key,
                    min_version: router::MinTls::Tls12,
                },
            )
            .expect("TLS config builds");
            let https =
                router::workers::bind_shared(addr, threads).expect("router HTTPS port is free");
            println!(
                "listening role=router-tls addr={}",
                https[0]
                    .local_addr()
                    .expect("bound listener has an address")
            );
            servers.push(tokio::spawn(router::workers::run_per_thread(
                "router-https",
                https,
                move |l| router::serve_tls(l, router.clone(), config.clone(), stopped()),
            )));
        }
        shutdown_signal().await;
        let _ = stop_tx.send(true);
        for s in servers {
            let _ = s.await;
        }
    });
}
