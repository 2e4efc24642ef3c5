//! How many router lines a shipper sends per second to one log router:
//! `cargo run --release -p logplex --example ship_rate [LINES] [THREADS] [RATE]`.
//!
//! THREADS worker threads each enqueue LINES / THREADS typical router
//! lines, as fast as they can or RATE lines/s each (in steps of 1000); a
//! task reads and discards what arrives on a local TCP listener. It prints the enqueue cost per line on the workers
//! and how long until every line was shipped or counted dropped.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use logplex::{Directory, ShipSettings, Shipper};
use tokio::io::AsyncReadExt;

struct One(Arc<str>);

impl Directory for One {
    fn token(&self, _app_id: &str) -> Option<Arc<str>> {
        Some("t.0b8a3d4e-0000-4000-8000-000000000001".into())
    }
    fn destination(&self, _app_id: &str) -> Option<Arc<str>> {
        Some(self.0.clone())
    }
}

const LINE: &str = "at=info method=GET path=\"/items/42?page=3\" host=demo.localhost \
    request_id=6e1c7f4e-3b52-4d7b-9d1e-7f0f8c2a1b33 fwd=\"203.0.113.7\" dyno=web.1 \
    connect=1ms service=18ms status=200 bytes=1532 protocol=http queue=0 wait=0ms";

fn main() {
    let mut args = std::env::args().skip(1);
    let lines: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let threads: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let rate: Option<f64> = args.next().and_then(|a| a.parse().ok());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let dest: Arc<str> = listener.local_addr().expect("addr").to_string().into();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 1 << 20];
            while conn.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        });
        let shipper = Shipper::start(ShipSettings::default(), Arc::new(One(dest)));
        let started = Instant::now();
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let shipper = shipper.clone();
                std::thread::spawn(move || {
                    let t = Instant::now();
                    let mut busy = Duration::ZERO;
                    for i in 0..lines / threads {
                        if let Some(rate) = rate.filter(|_| i % 1000 == 0) {
                            let due = t + Duration::from_secs_f64(i as f64 / rate);
                            std::thread::sleep(due.saturating_duration_since(Instant::now()));
                        }
                        let one = Instant::now();
                        shipper.enqueue("app-1", LINE, one);
                        busy += one.elapsed();
                    }
                    busy
                })
            })
            .collect();
        let mut enqueue = Duration::ZERO;
        for w in workers {
            enqueue += w.join().expect("worker");
        }
        let total = lines / threads * threads;
        let stats = shipper.stats();
        while stats.shipped.load(Ordering::Relaxed) + stats.dropped.load(Ordering::Relaxed) < total {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let took = started.elapsed();
        println!(
            "{total} lines, {threads} thread(s): enqueue {:.0} ns/line; shipped {} dropped {} in {:.3} s = {:.2} M lines/s",
            enqueue.as_nanos() as f64 / total as f64,
            stats.shipped.load(Ordering::Relaxed),
            stats.dropped.load(Ordering::Relaxed),
            took.as_secs_f64(),
            total as f64 / took.as_secs_f64() / 1e6
        );
    });
}
