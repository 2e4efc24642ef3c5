//! What one change costs a router following etcd, by table size: a real
//! etcd (Debian's `/usr/bin/etcd`, started here on a temporary directory)
//! holding N apps' routes, a follower listing them, then single-app changes
//! committed one at a time and timed from the commit's return to the new
//! revision being served by the follower's table.
//!
//! ```text
//! cargo run --release -p control --example follow_scale -- 1000 100000
//! ```
//!
//! Prints, per table size: the time to list the whole table, the commit's
//! own latency (etcd, fsync included), and p50 / p99 / max from sending the
//! commit to the follower serving it, for CHANGES (200) changes. If a
//! change cost O(all apps), the 100k row would be ~100× the 1k row.

// The integration tests' etcd launcher; this example uses part of it.
#[allow(dead_code)]
#[path = "../tests/it/etcd_server.rs"]
mod etcd_server;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::store::Change;
use control::{EtcdStore, FollowSettings, FollowStatus, Store};
use serde_json::json;

fn route(n: usize, dynos: usize) -> serde_json::Value {
    let dynos: Vec<_> = (0..dynos)
        .map(|d| {
            json!({ "name": format!("web.{}", d + 1), "type": "web",
                    "address": format!("127.0.0.1:{}", 10_000 + d), "state": "up" })
        })
        .collect();
    json!({
        "id": format!("id-{n:06}"), "name": format!("app-{n}"), "domains": [],
        "dynos": dynos, "certs": [],
        "settings": { "maintenance": false, "session_affinity": false,
                      "error_page_url": null, "maintenance_page_url": null },
    })
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("table sizes as numbers"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 100_000]
    } else {
        sizes
    };
    let changes: usize = std::env::var("CHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    println!(
        "| apps | list the table | commit (etcd) p50 | commit sent → served p50 | p99 | max |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for n in sizes {
        let dir = std::env::temp_dir().join(format!(
            "switchyard-follow-scale-{}-{n}",
            std::process::id()
        ));
        let etcd = etcd_server::Etcd::start(&dir);
        let config = etcd.config("/scale");
        let store = Arc::new(EtcdStore::connect(&config).expect("connect"));
        let mut revision = 0;
        for batch in (0..n).collect::<Vec<_>>().chunks(100) {
            let changes: Vec<Change> = batch
                .iter()
                .map(|&i| Change {
                    key: format!("routes/id-{i:06}"),
                    value: Some(route(i, 2)),
                })
                .collect();
            revision = store.commit(revision, &changes).expect("commit");
        }
        let routes = Arc::new(router::Routes::new(
            router::RouteTable::builder().build().expect("table"),
        ));
        let status = Arc::new(FollowStatus::default());
        let listed = Instant::now();
        let follower = runtime.spawn(control::follow(
            FollowSettings::etcd(config, "localhost"),
            routes.clone(),
            status.clone(),
            std::future::pending::<()>(),
        ));
        while status.revision.load(Ordering::Acquire) != revision {
            std::thread::sleep(Duration::from_millis(1));
        }
        let list = listed.elapsed();
        assert_eq!(routes.load().apps().len(), n);
        let (mut took, mut commits) = (Vec::with_capacity(changes), Vec::with_capacity(changes));
        for c in 0..changes {
            let app = (c * 7919) % n;
            let change = [Change {
                key: format!("routes/id-{app:06}"),
                value: Some(route(app, 3 + c % 2)),
            }];
            let started = Instant::now();
            revision = store.commit(revision, &change).expect("commit");
            let committed = started.elapsed();
            while routes.load().revision() != revision {
                std::hint::spin_loop();
            }
            took.push(started.elapsed().as_secs_f64() * 1000.0);
            commits.push(committed.as_secs_f64() * 1000.0);
        }
        follower.abort();
        took.sort_by(f64::total_cmp);
        commits.sort_by(f64::total_cmp);
        println!(
            "| {n} | {:.0} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            list.as_secs_f64() * 1000.0,
            pct(&commits, 50.0),
            pct(&took, 50.0),
            pct(&took, 99.0),
            took.last().copied().unwrap_or(f64::NAN)
        );
        drop(store);
        drop(etcd);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
