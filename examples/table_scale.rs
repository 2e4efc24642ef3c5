//! Route-table scale: memory and change-to-visible latency with many apps.
//!
//! Builds a table of `--apps` apps (each with a custom domain, a wildcard
//! and `--dynos` web dynos), publishes it through [`router::Routes`], then
//! times what a control-plane change costs the data plane: one app gains a
//! dyno, the table is rebuilt inheriting live state, swapped in, and a
//! reader polling the table sees the change. Memory is the process's
//! resident set before and after (from `/proc/self/status`).
//!
//! ```text
//! cargo run --release --example table_scale -- --apps 100000
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use router::{AppSpec, RouteTable, Routes};

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

fn specs(n: usize, dynos: usize, extra: Option<usize>) -> Vec<AppSpec> {
    (0..n)
        .map(|i| {
            let mut spec = AppSpec::new(format!("app{i}"))
                .domain(format!("www.app{i}.example.com"))
                .domain(format!("*.app{i}.example.org"));
            let count = dynos + usize::from(extra == Some(i));
            for d in 0..count {
                let port = 10_000 + ((i * 7 + d) % 50_000) as u16;
                spec = spec.dyno(
                    format!("web.{}", d + 1),
                    SocketAddr::from(([10, 0, 0, 1], port)),
                );
            }
            spec
        })
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
        let builder = RouteTable::builder()
            .revision(change as u64 + 1)
            .apps(specs(args.apps, args.dynos, Some(target)));
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
        routes.publish(builder).expect("table rebuilds");
        let publish = t.elapsed();
        let _ = reader.join();
        let visible = t.elapsed();
        latencies.push((publish, visible));
        println!(
            "change={} app={} publish_ms={:.1} visible_ms={:.1} seen={}",
            change + 1,
            name,
            publish.as_secs_f64() * 1e3,
            visible.as_secs_f64() * 1e3,
            seen.load(Ordering::Acquire)
        );
    }
    println!("rss_end_mib={:.1}", rss_kib() as f64 / 1024.0);
}
