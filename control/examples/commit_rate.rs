//! Control-plane write throughput as the number of apps grows.
//!
//! Serves the real API (with the in-process route table and a real logplex)
//! on 127.0.0.1:0 and creates apps one `POST /apps` at a time over one
//! keep-alive connection. At each checkpoint it prints writes/s over a
//! window of `POST /apps` and over a window of dyno registrations
//! (`PUT /apps/app-0/dynos/web.N`, what deploys and restarts send). A commit should cost O(change), so the rate should not fall
//! with the number of apps.
//!
//! ```text
//! cargo run --release -p control --example commit_rate -- [redb|memory] [CHECKPOINTS…]
//! ```
//!
//! `redb` (the default) fsyncs every commit as production does; `memory`
//! leaves only the CPU cost. Checkpoints default to `0 330 3000`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use control::{Control, ControlSettings, LogBackend, MemoryStore, RedbStore, SessionParams, Store};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const KEY: &str = "bench-key-0123456789";

/// CPU time of every thread of this process so far, in nanoseconds (Linux
/// schedstat): less disturbed by other load on the machine than wall time.
fn cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}
const WINDOW: usize = 100;

struct Logs(Arc<logplex::Logplex>);

impl LogBackend for Logs {
    fn configure(&self, config: logplex::LogplexConfig) {
        self.0.configure(config);
    }
    fn emit(&self, app_id: &str, source: &str, process: &str, message: &str) {
        self.0.emit(app_id, source, process, message);
    }
    fn create_session(&self, _: &str, _: SessionParams) -> Result<String, String> {
        Err("no logs in this example".into())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let kind = args.first().cloned().unwrap_or_else(|| "redb".into());
    let mut checkpoints: Vec<usize> = args.iter().skip(1).filter_map(|a| a.parse().ok()).collect();
    if checkpoints.is_empty() {
        checkpoints = vec![0, 330, 3000];
    }
    let dir = std::env::temp_dir().join(format!("switchyard-commit-rate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let store: Arc<dyn Store> = match kind.as_str() {
        "memory" => Arc::new(MemoryStore::new()),
        _ => Arc::new(RedbStore::open(&dir.join("store.redb")).expect("store")),
    };
    let routes = Arc::new(router::Routes::new(
        router::RouteTable::builder().build().expect("table"),
    ));
    let logs = Arc::new(Logs(logplex::Logplex::new(Default::default())));
    let control = Control::open(
        store,
        ControlSettings::default(),
        Some(routes),
        Some(logs as Arc<dyn LogBackend>),
    )
    .expect("open");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(control::api::serve(
        listener,
        control,
        KEY.into(),
        std::future::pending(),
    ));
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let call = |method: &str, path: String, body: String| {
        let req = hyper::Request::builder()
            .method(method)
            .uri(format!("{base}{path}"))
            .header("authorization", format!("Bearer {KEY}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        let client = client.clone();
        async move {
            let res = client.request(req).await.expect("response");
            let status = res.status();
            let _ = res.into_body().collect().await;
            assert!(status.is_success(), "{status}");
        }
    };
    let create = |n: usize| call("POST", "/apps".into(), format!("{{\"name\":\"app-{n}\"}}"));
    let dyno = |n: usize| {
        let body = format!("{{\"address\":\"127.0.0.1:{}\"}}", 1000 + n % 60_000);
        call("PUT", format!("/apps/app-0/dynos/web.{n}"), body)
    };
    let mut dynos = 1usize;
    let mut created = 0usize;
    println!("store={kind} window={WINDOW} writes");
    for checkpoint in checkpoints {
        while created < checkpoint {
            create(created).await;
            created += 1;
        }
        let (started, cpu) = (Instant::now(), cpu_ns());
        for _ in 0..WINDOW {
            create(created).await;
            created += 1;
        }
        let rate = WINDOW as f64 / started.elapsed().as_secs_f64();
        let create_cpu = (cpu_ns() - cpu) / WINDOW as u64 / 1000;
        let (started, cpu) = (Instant::now(), cpu_ns());
        for _ in 0..WINDOW {
            dyno(dynos).await;
            dynos += 1;
        }
        let dyno_rate = WINDOW as f64 / started.elapsed().as_secs_f64();
        let dyno_cpu = (cpu_ns() - cpu) / WINDOW as u64 / 1000;
        println!(
            "apps={checkpoint:>6}  POST /apps {rate:>7.1} writes/s {create_cpu:>6} µs CPU each  \
             PUT dyno {dyno_rate:>7.1} writes/s {dyno_cpu:>6} µs CPU each"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
