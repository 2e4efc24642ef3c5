//! An open-loop Poisson load generator for the queueing scenario.
//!
//! wrk and h2load are closed-loop: a slow response delays the next request,
//! so queueing hides itself (coordinated omission). Here arrivals follow a
//! schedule fixed in advance — exponential inter-arrival times at `--rate`
//! per second — and each request's latency is measured from its *scheduled*
//! arrival, whatever the server did to earlier ones. A plain OS thread keeps
//! the schedule (its sleeps are finer than tokio's millisecond timer) and
//! hands each arrival to the runtime, which sends it on a pooled HTTP/1.1
//! client (a new connection whenever every pooled one is busy).
//!
//! Prints one JSON object: counts, mean / p50 / p99 / p99.9 / max latency in
//! ms, and the mean service time the dynos reported in `x-service-us`.
//! `--dump FILE` writes each completed request's `latency_us service_us`,
//! from which the harness computes the ideal central queue for the very
//! service times this run had.
//!
//! With several `--url`s each arrival goes to one of them picked at random,
//! as clients behind DNS round-robin spread over several routers. With
//! `--seed`, the arrival times and the choice of URL are the same sequence
//! on every run, so configurations are compared on identical arrivals.
//!
//! ```text
//! cargo run --release --example openloop -- --url http://127.0.0.1:8080/ --rate 340 --duration 30
//! ```

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand::{Rng, SeedableRng};

#[derive(Debug, Parser)]
#[command(about = "Open-loop Poisson HTTP/1.1 load with latency from scheduled arrival")]
struct Args {
    /// Target URL (http only); repeat it to spread arrivals at random.
    #[arg(long, required = true)]
    url: Vec<hyper::Uri>,
    /// Seed of the arrival schedule and the choice of URL.
    #[arg(long)]
    seed: Option<u64>,
    /// `Host` header to send (default: the URL's authority).
    #[arg(long)]
    host: Option<String>,
    /// Mean arrivals per second.
    #[arg(long)]
    rate: f64,
    /// Seconds of arrivals that are measured.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Seconds of arrivals before that, sent but not measured.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// A request still unanswered after this many seconds counts as an error.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
    /// Tokio worker threads for the client.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Write `latency_us service_us` per measured request to this file.
    #[arg(long)]
    dump: Option<std::path::PathBuf>,
}

/// What one request came to.
struct Outcome {
    /// Whether it was scheduled after the warm-up.
    measured: bool,
    /// Scheduled arrival to end of body, or `None` on error / non-2xx.
    latency: Option<Duration>,
    /// The dyno's `x-service-us`, when present.
    service_us: Option<u64>,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn main() {
    let args = Args::parse();
    assert!(args.rate > 0.0, "--rate must be positive");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime starts");

    let (arrive_tx, mut arrive_rx) =
        tokio::sync::mpsc::unbounded_channel::<(Instant, bool, usize)>();
    let (rate, warmup, duration) = (args.rate, args.warmup, args.duration);
    let targets = args.url.len();
    let seed = args.seed.unwrap_or_else(rand::random);
    // The schedule: fixed in advance, never waits for responses.
    let scheduler = std::thread::spawn(move || {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let start = Instant::now() + Duration::from_millis(50);
        let total = warmup + duration;
        let mut t = 0.0f64;
        loop {
            let u: f64 = 1.0 - rng.random::<f64>();
            t += -u.ln() / rate;
            if t >= total {
                break;
            }
            let target = rng.random_range(0..targets);
            let at = start + Duration::from_secs_f64(t);
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if arrive_tx.send((at, t >= warmup, target)).is_err() {
                break;
            }
        }
    });

    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http();
    let urls = args.url.clone();
    let host = args.host.clone();
    let timeout = Duration::from_secs_f64(args.timeout);
    let outcomes: Vec<Outcome> = runtime.block_on(async move {
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Outcome>();
        let client = Arc::new(client);
        while let Some((scheduled, measured, target)) = arrive_rx.recv().await {
            let client = client.clone();
            let done = done_tx.clone();
            let mut req = hyper::Request::get(urls[target].clone());
            if let Some(h) = &host {
                req = req.header(hyper::header::HOST, h.as_str());
            }
            let req = req.body(Empty::new()).expect("request parts are valid");
            tokio::spawn(async move {
                let result = tokio::time::timeout(timeout, async {
                    let resp = client.request(req).await.ok()?;
                    let ok = resp.status().is_success();
                    let service_us = resp
                        .headers()
                        .get("x-service-us")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok());
                    resp.into_body().collect().await.ok()?;
                    ok.then_some(service_us)
                })
                .await;
                let (latency, service_us) = match result {
                    Ok(Some(s)) => (Some(scheduled.elapsed()), s),
                    _ => (None, None),
                };
                let _ = done.send(Outcome {
                    measured,
                    latency,
                    service_us,
                });
            });
        }
        drop(done_tx);
        let mut all = Vec::new();
        while let Some(o) = done_rx.recv().await {
            all.push(o);
        }
        all
    });
    let _ = scheduler.join();

    let measured: Vec<&Outcome> = outcomes.iter().filter(|o| o.measured).collect();
    let errors = measured.iter().filter(|o| o.latency.is_none()).count();
    let mut lat: Vec<u64> = measured
        .iter()
        .filter_map(|o| o.latency.map(|d| d.as_micros() as u64))
        .collect();
    let services: Vec<u64> = measured.iter().filter_map(|o| o.service_us).collect();
    if let Some(path) = &args.dump {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("dump file"));
        for o in &measured {
            if let (Some(l), Some(s)) = (o.latency, o.service_us) {
                writeln!(f, "{} {}", l.as_micros(), s).expect("dump write");
            }
        }
    }
    lat.sort_unstable();
    let mean = |v: &[u64]| {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<u64>() as f64 / v.len() as f64 / 1000.0
        }
    };
    println!(
        "{{\"rate\":{},\"sent\":{},\"ok\":{},\"errors\":{},\"mean_ms\":{:.3},\"p50_ms\":{:.3},\
         \"p99_ms\":{:.3},\"p999_ms\":{:.3},\"max_ms\":{:.3},\"service_mean_ms\":{:.3}}}",
        args.rate,
        measured.len(),
        lat.len(),
        errors,
        mean(&lat),
        percentile(&lat, 50.0),
        percentile(&lat, 99.0),
        percentile(&lat, 99.9),
        percentile(&lat, 100.0),
        mean(&services),
    );
}
