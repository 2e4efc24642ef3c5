//! Router micro-benchmarks, each next to the obvious baseline:
//!
//! - **route lookup** over 10, 10 000 and 100 000 apps (every app has an
//!   exact custom domain, a `*.` wildcard and its `<app>.<base>` name), our
//!   allocation-free [`RouteTable::lookup`] against a plain
//!   `HashMap<String, _>` that lowercases into a fresh `String` per request;
//! - **dyno choice** over 2, 50 and 500 dynos, idle and half-loaded, each
//!   balancing mode of [`router::capacity::try_choose`] against a bare atomic
//!   round-robin counter (what nginx's default upstream does, minus limits);
//! - **router log line** formatting through `Display` against a naive
//!   `format!` of the same fields without escaping.
//!
//! Run with `cargo bench --bench router`; numbers are in `BENCHMARKS.md`.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use router::capacity::{try_choose, Slot};
use router::{AppSettings, AppSpec, Balance, HCode, RouteTable, RouterLine};

/// A table of `n` apps: `app{i}` with `www.app{i}.example.com` and
/// `*.app{i}.example.org`, base domain `herokuapp.test`.
fn table(n: usize) -> RouteTable {
    let apps = (0..n).map(|i| {
        AppSpec::new(format!("app{i}"))
            .domain(format!("www.app{i}.example.com"))
            .domain(format!("*.app{i}.example.org"))
    });
    RouteTable::builder()
        .base_domain("herokuapp.test")
        .apps(apps)
        .build()
        .expect("bench table builds")
}

/// Host headers as clients send them: mixed case, some with ports, hitting
/// exact domains, wildcards and base-domain names, plus a miss.
fn hosts(n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for k in 0..64usize {
        let i = (k * 7919) % n;
        out.push(match k % 4 {
            0 => format!("WWW.App{i}.Example.com"),
            1 => format!("api.app{i}.example.org:443"),
            2 => format!("app{i}.herokuapp.test"),
            _ => format!("nope{i}.example.net"),
        });
    }
    out
}

/// The baseline: the table a first draft would write, with `to_lowercase()`
/// and string splitting allocating on every lookup.
struct NaiveTable {
    exact: HashMap<String, usize>,
    wildcard: HashMap<String, usize>,
    by_name: HashMap<String, usize>,
    base: String,
}

impl NaiveTable {
    fn new(n: usize) -> Self {
        let mut t = NaiveTable {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            by_name: HashMap::new(),
            base: "herokuapp.test".into(),
        };
        for i in 0..n {
            t.exact.insert(format!("www.app{i}.example.com"), i);
            t.wildcard.insert(format!("app{i}.example.org"), i);
            t.by_name.insert(format!("app{i}"), i);
        }
        t
    }

    fn lookup(&self, host: &str) -> Option<usize> {
        let host = host.to_lowercase();
        let host = match host.rsplit_once(':') {
            Some((h, _)) => h.to_string(),
            None => host,
        };
        if let Some(&i) = self.exact.get(&host) {
            return Some(i);
        }
        let (label, parent) = host.split_once('.')?;
        if let Some(&i) = self.wildcard.get(parent) {
            return Some(i);
        }
        if parent == self.base {
            return self.by_name.get(label).copied();
        }
        None
    }
}

fn route_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_lookup");
    for n in [10usize, 10_000, 100_000] {
        let ours = table(n);
        let naive = NaiveTable::new(n);
        let hosts = hosts(n);
        group.throughput(Throughput::Elements(hosts.len() as u64));
        group.bench_with_input(BenchmarkId::new("switchyard", n), &hosts, |b, hosts| {
            b.iter(|| {
                let mut hits = 0usize;
                for h in hosts {
                    hits += usize::from(ours.lookup(black_box(h)).is_some());
                }
                hits
            })
        });
        group.bench_with_input(
            BenchmarkId::new("hashmap_to_lowercase", n),
            &hosts,
            |b, hosts| {
                b.iter(|| {
                    let mut hits = 0usize;
                    for h in hosts {
                        hits += usize::from(naive.lookup(black_box(h)).is_some());
                    }
                    hits
                })
            },
        );
    }
    group.finish();
}

/// The spec of one app with `n` web dynos on distinct loopback ports.
fn spec(n: usize, balance: Balance, max_dyno_concurrency: u32) -> AppSpec {
    let mut spec = AppSpec::new("bench").settings(AppSettings {
        balance,
        max_dyno_concurrency,
        ..AppSettings::default()
    });
    for i in 0..n {
        let addr: SocketAddr = ([127, 0, 0, 1], 10_000 + i as u16).into();
        spec = spec.dyno(format!("web.{}", i + 1), addr);
    }
    spec
}

/// The app of a one-app table, in `balance` mode, with every dyno holding a
/// random number of requests (random placement of 12 per dyno on average,
/// at most 25) when `loaded`. The returned slots keep that load; the new
/// table inherits the live counters from the one that placed it.
fn app_with(n: usize, balance: Balance, loaded: bool) -> (Arc<router::App>, Vec<Slot>) {
    let placing = RouteTable::builder()
        .app(spec(n, Balance::Random, 25))
        .build()
        .expect("bench table builds");
    let placer = placing.app("bench").expect("app is in the table").clone();
    let held = if loaded {
        (0..n * 12).filter_map(|_| try_choose(&placer)).collect()
    } else {
        Vec::new()
    };
    let table = RouteTable::builder()
        .app(spec(n, balance, 50))
        .build_from(Some(&placing))
        .expect("bench table builds");
    let app = table.app("bench").expect("app is in the table").clone();
    (app, held)
}

fn dyno_choice(c: &mut Criterion) {
    let mut group = c.benchmark_group("dyno_choice");
    for n in [2usize, 50, 500] {
        for (mode, balance) in [
            ("least_outstanding", Balance::LeastOutstanding),
            ("random", Balance::Random),
            ("round_robin", Balance::RoundRobin),
        ] {
            for loaded in [false, true] {
                let (app, held) = app_with(n, balance, loaded);
                let state = if loaded { "loaded" } else { "idle" };
                group.bench_function(BenchmarkId::new(format!("{mode}/{state}"), n), |b| {
                    b.iter(|| drop(black_box(try_choose(&app))))
                });
                drop(held);
            }
        }
        let counter = AtomicUsize::new(0);
        let addrs: Vec<SocketAddr> = (0..n)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 10_000 + i as u16)))
            .collect();
        group.bench_function(BenchmarkId::new("baseline_atomic_rr", n), |b| {
            b.iter(|| black_box(addrs[counter.fetch_add(1, Ordering::Relaxed) % addrs.len()]))
        });
    }
    group.finish();
}

fn log_line(c: &mut Criterion) {
    let mut group = c.benchmark_group("router_log_line");
    let line = RouterLine {
        code: None,
        method: "GET",
        path: "/products/42?utm_source=newsletter&ref=\"x\"",
        host: "shop.example.com",
        request_id: "5f3c9a2e-8d41-4c7b-9a55-0e2b7d1c6a90",
        fwd: "203.0.113.7",
        dyno: Some("web.3"),
        connect_ms: Some(0),
        service_ms: Some(18),
        status: Some(200),
        bytes: Some(1432),
        protocol: "https",
        ..RouterLine::default()
    };
    let error = RouterLine {
        code: Some(HCode::H12),
        status: Some(503),
        dyno: Some("web.1"),
        connect_ms: Some(1),
        service_ms: Some(30_000),
        bytes: Some(0),
        ..line.clone()
    };
    group.throughput(Throughput::Elements(1));
    group.bench_function("switchyard_display_to_string", |b| {
        b.iter(|| black_box(&line).to_string())
    });
    // What the router does per request (`Router::emit`).
    group.bench_function("switchyard_write_to_presized", |b| {
        b.iter(|| {
            let mut out = String::with_capacity(384);
            black_box(&line).write_to(&mut out);
            out
        })
    });
    let mut buf = String::with_capacity(512);
    group.bench_function("switchyard_display_reused_buffer", |b| {
        b.iter(|| {
            use std::fmt::Write as _;
            buf.clear();
            let _ = write!(buf, "{}", black_box(&line));
            buf.len()
        })
    });
    group.bench_function("switchyard_h12_to_string", |b| {
        b.iter(|| black_box(&error).to_string())
    });
    group.bench_function("baseline_format_unescaped", |b| {
        b.iter(|| {
            let l = black_box(&line);
            format!(
                "at=info method={} path=\"{}\" host={} request_id={} fwd=\"{}\" dyno={} \
                 connect={}ms service={}ms status={} bytes={} protocol={} queue={} wait={}ms",
                l.method,
                l.path,
                l.host,
                l.request_id,
                l.fwd,
                l.dyno.unwrap_or(""),
                l.connect_ms.unwrap_or(0),
                l.service_ms.unwrap_or(0),
                l.status.unwrap_or(0),
                l.bytes.unwrap_or(0),
                l.protocol,
                l.queue,
                l.wait_ms
            )
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = route_lookup, dyno_choice, log_line
}
criterion_main!(benches);
