//! A small, fast dyno for the load harness (`benches/load/run.sh`).
//!
//! Answers every request with `200` and a fixed body of `--body-bytes`
//! bytes, over HTTP/1.1 keep-alive (and HTTP/2 with prior knowledge, so
//! "direct" runs can use h2load too). `--count N` listens on N consecutive
//! ports, each an independent dyno.
//!
//! For the queueing scenario a dyno can behave like a single-threaded Rails
//! process: `--concurrency 1` serves one request at a time (the rest wait in
//! FIFO order inside the dyno, exactly where Heroku's random routing left
//! them), and `--service MS --dist exp|pareto|weibull` draws each request's
//! service time from a distribution with that mean. The time actually spent
//! is returned in `x-service-us`, so the harness can compute the ideal
//! central queue from the service times the run really had (tokio's timer
//! rounds sleeps up to the next millisecond).
//!
//! ```text
//! cargo run --release --example dyno -- --port 9000 --body-bytes 13
//! cargo run --release --example dyno -- --port 9100 --count 8 --concurrency 1 --service 20 --dist exp
//! ```
//!
//! Prints `listening role=dyno addr=IP:PORT` per port once bound.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rand::Rng;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Service-time distributions, each scaled to the requested mean.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Dist {
    /// Exponential: the M in M/M/c.
    Exp,
    /// Pareto with shape `--shape` (default 2.1: finite variance, heavy tail).
    Pareto,
    /// Weibull with shape 0.46, the stand-in Rap Genius published for
    /// Heroku's measured request times (median ≈ 0.42 × mean, p99 ≈ 12 × mean).
    Weibull,
    /// Every request takes exactly the mean.
    Fixed,
}

#[derive(Debug, Parser)]
#[command(about = "A fast HTTP dyno for Switchyard's load harness")]
struct Args {
    /// First port to listen on (0: any free port; only with --count 1).
    #[arg(long, default_value_t = 9000)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
    /// How many dynos (consecutive ports) to run in this process.
    #[arg(long, default_value_t = 1)]
    count: u16,
    /// Response body size in bytes.
    #[arg(long, default_value_t = 13)]
    body_bytes: usize,
    /// Body size in bytes for paths starting with `/big`.
    #[arg(long, default_value_t = 65_536)]
    big_bytes: usize,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Mean service time in milliseconds (0: answer at once).
    #[arg(long, default_value_t = 0.0)]
    service: f64,
    /// Service-time distribution.
    #[arg(long, value_enum, default_value_t = Dist::Exp)]
    dist: Dist,
    /// Pareto shape (alpha > 1).
    #[arg(long, default_value_t = 2.1)]
    shape: f64,
    /// Requests one dyno serves at once (0: unlimited); the rest wait FIFO.
    #[arg(long, default_value_t = 0)]
    concurrency: usize,
}

/// Draws one service time with mean `mean_ms`.
fn draw(dist: Dist, mean_ms: f64, shape: f64) -> Duration {
    let mut rng = rand::rng();
    // 1 - U is in (0, 1], so ln() is finite.
    let u: f64 = 1.0 - rng.random::<f64>();
    let ms = match dist {
        Dist::Exp => -u.ln() * mean_ms,
        Dist::Pareto => {
            let xm = mean_ms * (shape - 1.0) / shape;
            xm * u.powf(-1.0 / shape)
        }
        Dist::Weibull => {
            // mean = scale * Gamma(1 + 1/0.46) = scale * 2.3678.
            let scale = mean_ms / 2.367_8;
            scale * (-u.ln()).powf(1.0 / 0.46)
        }
        Dist::Fixed => mean_ms,
    };
    Duration::from_secs_f64(ms.max(0.0) / 1000.0)
}

/// One dyno's fixed behaviour, shared by its connections.
struct Dyno {
    /// The response body (cloning `Bytes` is a refcount bump).
    body: Bytes,
    /// The body for paths starting with `/big`.
    big: Bytes,
    /// Mean service time in ms; 0 answers at once.
    service_ms: f64,
    /// Distribution of the service time.
    dist: Dist,
    /// Pareto shape.
    shape: f64,
    /// Serialises requests when `--concurrency` is set; tokio's semaphore
    /// is fair, so waiting requests are served in arrival order.
    slots: Option<Semaphore>,
}

impl Dyno {
    async fn handle(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let body = if req.uri().path().starts_with("/big") {
            self.big.clone()
        } else {
            self.body.clone()
        };
        let mut builder = Response::builder().header("content-type", "text/plain");
        if self.service_ms > 0.0 || self.slots.is_some() {
            let _permit = match &self.slots {
                Some(s) => s.acquire().await.ok(),
                None => None,
            };
            let started = Instant::now();
            if self.service_ms > 0.0 {
                tokio::time::sleep(draw(self.dist, self.service_ms, self.shape)).await;
            }
            let took = started.elapsed().as_micros();
            builder = builder.header("x-service-us", took.to_string());
        }
        builder
            .body(Full::new(body))
            .expect("static response parts are valid")
    }
}

/// `len` bytes of `x` ending in a newline.
fn body_of(len: usize) -> Bytes {
    let mut v = vec![b'x'; len];
    if let Some(last) = v.last_mut() {
        *last = b'\n';
    }
    Bytes::from(v)
}

async fn run_dyno(listener: TcpListener, dyno: Arc<Dyno>) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                eprintln!("dyno: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let dyno = dyno.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let dyno = dyno.clone();
                async move { Ok::<_, Infallible>(dyno.handle(req).await) }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime starts");
    runtime.block_on(async move {
        let body = body_of(args.body_bytes);
        let big = body_of(args.big_bytes);
        let mut tasks = Vec::new();
        for i in 0..args.count.max(1) {
            let port = if args.port == 0 { 0 } else { args.port + i };
            let listener = TcpListener::bind(SocketAddr::new(args.bind, port))
                .await
                .expect("dyno port is free");
            let addr = listener
                .local_addr()
                .expect("bound listener has an address");
            println!("listening role=dyno addr={addr}");
            let dyno = Arc::new(Dyno {
                body: body.clone(),
                big: big.clone(),
                service_ms: args.service,
                dist: args.dist,
                shape: args.shape,
                slots: (args.concurrency > 0).then(|| Semaphore::new(args.concurrency)),
            });
            tasks.push(tokio::spawn(run_dyno(listener, dyno)));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}
