//! Bounded memory under idle and slow clients: 10 000 idle client
//! connections to the router and 1 000 slow syslog senders to logplex, with
//! the resident memory each one costs.
//!
//! The router's connections are measured twice: having sent nothing yet,
//! and idle between keep-alive requests after one request each. Neither
//! holds HTTP state while it waits (`router::connection`); the bound on
//! both is [`CONN_BOUND`], under the 5 KiB that 10 000 connections in
//! 50 MiB allow, and about twice what was measured (1.8 KB each, where
//! 23 KB each was measured when hyper's buffers stayed with an idle
//! connection).
//!
//! The servers run in a child process (this same test binary, re-executed)
//! so that its resident memory is theirs alone and each process stays
//! within its descriptor limit. The parent opens the connections, reads the
//! child's `VmRSS` from `/proc` before and after each step, prints the cost
//! per connection and asserts a generous bound. Run it alone with
//!
//! ```text
//! cargo test --test memory -- --nocapture
//! ```
//!
//! `SWITCHYARD_MEMORY_CONNS` / `SWITCHYARD_MEMORY_SENDERS` change the counts.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CHILD: &str = "SWITCHYARD_MEMORY_CHILD";
/// Upper bound asserted on the resident memory per idle client connection
/// to the router, before and after its first request.
const CONN_BOUND: u64 = 4 * 1024;
/// Upper bound asserted on the resident memory per slow syslog sender.
const SENDER_BOUND: u64 = 64 * 1024;

#[test]
fn idle_connections_and_slow_senders_stay_bounded() {
    if std::env::var_os(CHILD).is_some() {
        serve_in_child();
        return;
    }
    let conns = count("SWITCHYARD_MEMORY_CONNS", 10_000);
    let senders = count("SWITCHYARD_MEMORY_SENDERS", 1_000);
    let (conns, senders) = fit_descriptors(conns, senders);
    let mut servers = Servers::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // Warm up allocator arenas and lazily built state with a few
        // connections that come and go, so the baseline is not flattered.
        let router = servers.router;
        let warm = open_idle(&mut servers, router, 64, 0).await;
        request_all(&warm).await;
        drop(warm);
        let base = servers.rss();

        let idle = open_idle(&mut servers, router, conns, 0).await;
        let silent = servers.rss();
        request_all(&idle).await;
        // Each connection gives up its HTTP state a moment after its
        // response (`RouterConfig::park_idle_after`).
        servers.wait_for("IDLE", conns).await;
        let kept_alive = servers.rss();

        let slow = open_slow_senders(&mut servers, senders, conns).await;
        let trickling = servers.rss();

        let per = |after: u64, before: u64, n: usize| after.saturating_sub(before) / n as u64;
        let silent_each = per(silent, base, conns);
        let kept_each = per(kept_alive, base, conns);
        let sender_each = per(trickling, kept_alive, senders);
        println!(
            "memory: baseline {} KiB; {conns} idle connections (no byte sent): {silent_each} B each; \
             idle after one keep-alive request each: {kept_each} B each \
             ({} B more than before it); {senders} slow syslog senders: {sender_each} B each",
            base / 1024,
            per(kept_alive, silent, conns),
        );
        assert!(
            silent_each < CONN_BOUND,
            "{silent_each} B per connection that has sent nothing"
        );
        assert!(
            kept_each < CONN_BOUND,
            "{kept_each} B per connection idle after a keep-alive request"
        );
        assert!(sender_each < SENDER_BOUND, "{sender_each} B per slow sender");
        drop(slow);
        drop(idle);
    });
    servers.stop();
}

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
        .max(1)
}

/// Each process holds one descriptor per connection; scale down (and say
/// so) where the limit cannot be raised far enough.
fn fit_descriptors(conns: usize, senders: usize) -> (usize, usize) {
    let need = conns + senders + 512;
    let limit = nofile_limit();
    if limit >= need as u64 {
        return (conns, senders);
    }
    let room = (limit.saturating_sub(512)) as f64 / (conns + senders) as f64;
    let scaled = (
        ((conns as f64 * room) as usize).max(1),
        ((senders as f64 * room) as usize).max(1),
    );
    eprintln!(
        "memory: descriptor limit {limit} < {need}; measuring {} connections and {} senders",
        scaled.0, scaled.1
    );
    scaled
}

/// The soft `RLIMIT_NOFILE`, raised to the hard limit when `prlimit` is
/// there to do it (children inherit it).
fn nofile_limit() -> u64 {
    let read = || -> Option<(u64, u64)> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        let mut n = line
            .split_whitespace()
            .filter_map(|w| w.parse::<u64>().ok());
        Some((n.next()?, n.next().unwrap_or(u64::MAX)))
    };
    let Some((soft, hard)) = read() else {
        return 1024;
    };
    if soft < hard {
        let _ = Command::new("prlimit")
            .arg(format!("--pid={}", std::process::id()))
            .arg(format!("--nofile={hard}:{hard}"))
            .status();
    }
    read().map_or(soft, |(soft, _)| soft)
}

/// The child process: a router (with no apps: every request is a 404 on a
/// kept-alive connection) and a syslog TCP listener. Prints their
/// addresses, then answers `OPEN` with the number of open client
/// connections and `IDLE` with the router's count of connections it holds
/// no HTTP state for, and exits when its stdin closes.
fn serve_in_child() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let routes = Arc::new(router::Routes::new(
            router::RouteTable::builder().build().expect("table"),
        ));
        let config = router::RouterConfig {
            // Longer than the test, so nothing is closed while measuring.
            head_timeout: Duration::from_secs(300),
            ..router::RouterConfig::default()
        };
        let r = router::Router::with_config(routes, Arc::new(router::NullSink), config);
        let counted = r.clone();
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let syslog = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (http_addr, syslog_addr) = (
            http.local_addr().expect("addr"),
            syslog.local_addr().expect("addr"),
        );
        let logplex = logplex::Logplex::new(logplex::LogplexSettings::default());
        tokio::spawn(router::serve(http, r, std::future::pending()));
        tokio::spawn(logplex::serve_syslog_tcp(
            syslog,
            logplex,
            std::future::pending(),
        ));
        // Straight to the stdout descriptor: the test harness captures
        // `println!`, even under --nocapture in some versions.
        let say = |line: String| {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        };
        say(format!("ADDRS {http_addr} {syslog_addr}"));
        let mut lines = BufReader::new(std::io::stdin()).lines();
        while let Some(Ok(line)) = tokio::task::block_in_place(|| lines.next()) {
            if line == "OPEN" {
                say(format!("OPEN {}", open_sockets()));
            } else if line == "IDLE" {
                say(format!("IDLE {}", counted.idle_connections()));
            }
        }
    });
}

/// Established TCP sockets of this process, from /proc.
fn open_sockets() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

struct Servers {
    child: Child,
    /// The child's stdout, line by line (read on a thread, so every wait
    /// for it has a deadline).
    out: std::sync::mpsc::Receiver<String>,
    router: SocketAddr,
    syslog: SocketAddr,
}

#[path = "support/wait.rs"]
mod wait;

use wait::patience;

impl Servers {
    fn start() -> Servers {
        let exe = std::env::current_exe().expect("test binary");
        let mut child = Command::new(exe)
            .args([
                "idle_connections_and_slow_senders_stay_bounded",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the server process");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, out) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut servers = Servers {
            child,
            out,
            router: ([127, 0, 0, 1], 0).into(),
            syslog: ([127, 0, 0, 1], 0).into(),
        };
        let addrs = servers.expect_line("ADDRS ");
        let mut a = addrs.split(' ').map(|s| s.parse().expect("addr"));
        servers.router = a.next().expect("router");
        servers.syslog = a.next().expect("syslog");
        servers
    }

    /// The rest of the child's next line starting with `prefix`.
    fn expect_line(&mut self, prefix: &str) -> String {
        let deadline = std::time::Instant::now() + patience();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.out.recv_timeout(left) {
                Ok(line) => {
                    // The harness may have started the line (`test … ... `).
                    if let Some((_, rest)) = line.split_once(prefix) {
                        return rest.trim().to_string();
                    }
                }
                Err(e) => {
                    let _ = self.child.kill();
                    panic!("no {prefix:?} line from the server process: {e}");
                }
            }
        }
    }

    /// Resident memory of the server process, in bytes.
    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("child status");
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS");
        kb * 1024
    }

    /// The child's answer to `question` (`OPEN` or `IDLE`), a count.
    fn ask(&mut self, question: &str) -> usize {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{question}").expect("ask child");
        stdin.flush().expect("flush");
        self.expect_line(&format!("{question} "))
            .parse()
            .expect("count")
    }

    /// Waits until the child's answer to `question` is at least `n`:
    /// `OPEN`, client sockets held (accepts run behind the client's
    /// connects); `IDLE`, connections the router holds no HTTP state for.
    async fn wait_for(&mut self, question: &str, n: usize) {
        let deadline = tokio::time::Instant::now() + patience();
        loop {
            let count = tokio::task::block_in_place(|| self.ask(question));
            if count >= n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{question}: only {count} of {n} connections"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stop(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

impl Drop for Servers {
    /// A failed assertion must not leave the server process behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens `n` connections to `addr` that send nothing, in batches that the
/// server accepts before the next (the accept backlog is finite; beyond
/// it, connects wait out SYN retransmits). `already` client sockets are
/// open in the server before these.
async fn open_idle(
    servers: &mut Servers,
    addr: SocketAddr,
    n: usize,
    already: usize,
) -> Vec<Arc<tokio::sync::Mutex<TcpStream>>> {
    const BATCH: usize = 256;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let mut pending = tokio::task::JoinSet::new();
        for _ in 0..BATCH.min(n - out.len()) {
            pending.spawn(async move {
                let s = TcpStream::connect(addr).await.expect("connect");
                Arc::new(tokio::sync::Mutex::new(s))
            });
        }
        while let Some(s) = pending.join_next().await {
            out.push(s.expect("task"));
        }
        servers.wait_for("OPEN", already + out.len()).await;
    }
    out
}

/// One keep-alive request on each connection, its response read in full;
/// the connections stay open and idle afterwards.
async fn request_all(conns: &[Arc<tokio::sync::Mutex<TcpStream>>]) {
    let mut pending = tokio::task::JoinSet::new();
    for c in conns {
        if pending.len() >= 256 {
            pending.join_next().await;
        }
        let c = c.clone();
        pending.spawn(async move {
            let mut s = c.lock().await;
            s.write_all(b"GET / HTTP/1.1\r\nHost: nobody.localhost\r\n\r\n")
                .await
                .expect("write");
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            // Read the whole 404 page: up to its Content-Length.
            loop {
                let n = s.read(&mut buf).await.expect("read");
                assert!(n > 0, "the router closed a kept-alive connection");
                got.extend_from_slice(&buf[..n]);
                if complete(&got) {
                    break;
                }
            }
            assert!(got.starts_with(b"HTTP/1.1 404"));
        });
    }
    while let Some(r) = pending.join_next().await {
        r.expect("request");
    }
}

fn complete(resp: &[u8]) -> bool {
    let text = String::from_utf8_lossy(resp);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let len = head
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    body.len() >= len
}

/// `n` syslog senders, each inside an unfinished octet-counted frame,
/// adding one byte every 200 ms until dropped.
async fn open_slow_senders(
    servers: &mut Servers,
    n: usize,
    already: usize,
) -> tokio::task::JoinSet<()> {
    let syslog = servers.syslog;
    let streams = open_idle(servers, syslog, n, already).await;
    let mut senders = tokio::task::JoinSet::new();
    for s in streams {
        senders.spawn(async move {
            let mut s = s.lock().await;
            if s.write_all(b"500 <13>1 - host t.slow web.1 - - ")
                .await
                .is_err()
            {
                return;
            }
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            for _ in 0..400 {
                tick.tick().await;
                if s.write_all(b"x").await.is_err() {
                    return;
                }
            }
        });
    }
    senders
}
