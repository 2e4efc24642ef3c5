//! Route-table scale: memory and change-to-visible latency with many apps.
//!
//! Builds a table of `--apps` apps (each with a custom domain, a wildcard
//! and `--dynos` web dynos), publishes it through [`router::Routes`], then
//! times what a control-plane change costs the data plane: one app gains a
//! dyno, the change is applied as an update (`Routes::update`, what a
//! control-plane commit does) or, with `--whole`, the table is rebuilt from
//! every spec (`Routes::publish`, what a start or a reload does), swapped
//! in, and a reader polling the table sees the change. Memory is the
//! process's resident set before and after (from `/proc/self/status`).
//!
//! ```text
//! cargo run --release --example table_scale -- --apps 100000 [--whole]
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use router::{AppSpec, RouteTable, Routes, TableUpdate};

#[derive(Debug, Parser)]
#[command(about = "Route-table memory and change-to-visible latency")]
struct Args {
    /// Number of apps.
    #[arg(long, default_value_t = 100_000)]
    apps: usize,
    /// Web dynos per app.
    #[arg(long, default_value_t = 2)]
    dynos: usize,
    /// Changes to time.
    #[arg(long, default_value_t = 5)]
    changes: usize,
    /// Publish each change as a whole table instead of an update.
    #[arg(long)]
    whole: bool,
}

/// Resident set size in KiB, from `/proc/self/status`.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// App `i`: a custom domain, a wildcard and `dynos` web dynos.
fn spec(i: usize, dynos: usize) -> AppSpec {
    let mut spec = AppSpec::new(format!("app{i}"))
        .domain(format!("www.app{i}.example.com"))
        .domain(format!("*.app{i}.example.org"));
    for d in 0..dynos {
        let port = 10_000 + ((i * 7 + d) % 50_000) as u16;
        spec = spec.dyno(
            format!("web.{}", d + 1),
            SocketAddr::from(([10, 0, 0, 1], port)),
        );
    }
    spec
}

/// `n` apps, app `extra` with one dyno more.
fn specs(n: usize, dynos: usize, extra: Option<usize>) -> Vec<AppSpec> {
    (0..n)
        .map(|i| spec(i, dynos + usize::from(extra == Some(i))))
        .collect()
}

fn main() {
    let args = Args::parse();
    let before = rss_kib();
    let t = Instant::now();
    let table = RouteTable::builder()
        .apps(specs(args.apps, args.dynos, None))
        .build()
        .expect("table builds");
    let build = t.elapsed();
    let routes = Arc::new(Routes::new(table));
    let after = rss_kib();
    println!(
        "apps={} dynos_per_app={} first_build_ms={:.1} rss_before_mib={:.1} rss_after_mib={:.1} \
         table_mib={:.1} bytes_per_app={:.0}",
        args.apps,
        args.dynos,
        build.as_secs_f64() * 1e3,
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after - before) as f64 / 1024.0,
        (after - before) as f64 * 1024.0 / args.apps as f64
    );

    let mut latencies = Vec::new();
    for change in 0..args.changes {
        let target = (change * 7919) % args.apps;
        let name = format!("app{target}");
        let want = args.dynos + 1;
        // Specs are prepared before the clock starts: the control plane has
        // them in its store already; what is timed is the data plane's part.
        let revision = change as u64 + 1;
        let whole = args.whole.then(|| {
            RouteTable::builder().revision(revision).apps(specs(
                args.apps,
                args.dynos,
                Some(target),
            ))
        });
        let update = TableUpdate {
            revision,
            apps: vec![spec(target, args.dynos + 1)],
            ..TableUpdate::default()
        };
        let seen = Arc::new(AtomicBool::new(false));
        let reader = {
            let routes = routes.clone();
            let seen = seen.clone();
            let name = name.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                loop {
                    let table = routes.load();
                    if table.app(&name).map(|a| a.web.len()) == Some(want) {
                        seen.store(true, Ordering::Release);
                        return start.elapsed();
                    }
                    if start.elapsed() > Duration::from_secs(600) {
                        return start.elapsed();
                    }
                    std::hint::spin_loop();
                }
            })
        };
        let t = Instant::now();
        match whole {
            Some(builder) => routes.publish(builder).expect("table rebuilds"),
            None => routes.update(update).expect("table updates"),
        };
        let publish = t.elapsed();
        let _ = reader.join();
        let visible = t.elapsed();
        latencies.push((publish, visible));
        println!(
            "change={} app={} publish_ms={:.3} visible_ms={:.3} seen={}",
            change + 1,
            name,
            publish.as_secs_f64() * 1e3,
            visible.as_secs_f64() * 1e3,
            seen.load(Ordering::Acquire)
        );
    }
    println!("rss_end_mib={:.1}", rss_kib() as f64 / 1024.0);
}
