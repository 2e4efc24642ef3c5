//! What forwarding costs a log-router cluster: LINES app lines sent over one
//! TCP syslog connection straight to the channel's owner, then the same to
//! the other node, which forwards them to the owner. Prints lines/s until
//! the owner has published every line, each way, and what the forwarding
//! node counted:
//! `cargo run --release -p logplex --example cluster_forward [LINES]`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use logplex::{
    ChannelSpec, Directory, Logplex, LogplexConfig, LogplexSettings, Owner, Placement, Sender,
    ShipSettings, Shipper, TokenSpec,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

const APP: &str = "00000000-0000-4000-8000-000000000001";
const TOKEN: &str = "t.0b8a3d4e-0000-4000-8000-000000000001";

/// A fixed owner: `owner` owns the one channel.
struct Fixed {
    me: String,
    owner: String,
}

impl Placement for Fixed {
    fn node(&self) -> &str {
        &self.me
    }
    fn owner(&self, _app_id: &str) -> Owner {
        if self.me == self.owner {
            Owner::Here
        } else {
            Owner::Peer(self.owner.clone())
        }
    }
    fn is_live(&self, _id: &str) -> bool {
        true
    }
}

impl Directory for Fixed {
    fn token(&self, _app_id: &str) -> Option<Arc<str>> {
        Some(TOKEN.into())
    }
    fn destination(&self, _app_id: &str) -> Option<Arc<str>> {
        (self.me != self.owner).then(|| self.owner.as_str().into())
    }
}

/// A node listening for syslog TCP; its id is its address.
async fn node(owner: Option<&str>) -> (Arc<Logplex>, String, Arc<Shipper>) {
    let logplex = Logplex::new(LogplexSettings::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let me = listener.local_addr().expect("addr").to_string();
    let owner = owner.unwrap_or(&me).to_string();
    let fixed = Arc::new(Fixed {
        me: me.clone(),
        owner,
    });
    let forward = Shipper::start(
        ShipSettings {
            sender: Sender::LogRouter,
            ..ShipSettings::default()
        },
        fixed.clone(),
    );
    logplex.join_cluster(fixed, forward.clone());
    logplex.configure(LogplexConfig {
        revision: 1,
        channels: vec![ChannelSpec {
            app_id: APP.into(),
            app_name: "demo".into(),
            tokens: vec![TokenSpec {
                token: TOKEN.into(),
                name: "app".into(),
            }],
            drains: Vec::new(),
        }],
    });
    tokio::spawn(logplex::serve_syslog_tcp(
        listener,
        logplex.clone(),
        std::future::pending(),
    ));
    (logplex, me, forward)
}

/// Sends `frames` to `to` and waits until `owner` has published `n` more
/// lines; lines/s.
async fn run(frames: &[u8], n: u64, to: &str, owner: &Logplex) -> f64 {
    let before = owner.ingest_stats().published;
    let started = Instant::now();
    let mut conn = tokio::net::TcpStream::connect(to).await.expect("connect");
    conn.write_all(frames).await.expect("send");
    conn.shutdown().await.expect("shutdown");
    while owner.ingest_stats().published < before + n {
        assert!(started.elapsed() < Duration::from_secs(120), "lines lost");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let lines: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let (owner, owner_id, _) = node(None).await;
        let (_other, other_id, forward) = node(Some(&owner_id)).await;
        let mut frames = Vec::new();
        for i in 0..lines {
            let line = format!(
                "<190>1 2026-11-29T10:00:00.000000+00:00 host {TOKEN} web.1 - - at=info line {i} of a typical app log message"
            );
            frames.extend_from_slice(format!("{} {line}", line.len()).as_bytes());
        }
        for round in 0..2 {
            let direct = run(&frames, lines, &owner_id, &owner).await;
            let via = run(&frames, lines, &other_id, &owner).await;
            println!(
                "round {round}: {lines} lines straight to the owner {direct:.0}/s, through the other node {via:.0}/s ({:.2}x)",
                via / direct
            );
        }
        let stats = forward.stats();
        println!(
            "forwarded {} lines, dropped {}",
            stats.shipped.load(Ordering::Relaxed),
            stats.dropped.load(Ordering::Relaxed)
        );
    });
}
