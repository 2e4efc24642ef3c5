//! App-owner routing across routers on one etcd: three `switchyard router
//! --advertise` processes, one app on a single-concurrency dyno. Requests
//! spread over the routers reach the dyno once each and never two at a
//! time (the owner's queue is the app's one queue); `kill -9` of the owner
//! fails only the request it held, and ownership moves within the lease
//! TTL; a request at the hop limit gets H99 and never reaches the dyno.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::cluster::{control_node, router_args};
use crate::etcd_server::Etcd;
use crate::support::{api, create_app, eventually, http, Proc, TempDir, KEY};

/// A dyno that serves one request at a time per connection, holding each
/// for `service` (its service time), and counts what it sees: requests in
/// flight at once (peak), paths, hop headers. `/hang` is never answered.
struct CountingDyno {
    addr: SocketAddr,
    active: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    paths: Arc<Mutex<Vec<String>>>,
    hops_seen: Arc<AtomicUsize>,
}

impl CountingDyno {
    fn start(service: Duration) -> CountingDyno {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind dyno");
        let dyno = CountingDyno {
            addr: listener.local_addr().expect("addr"),
            active: Arc::default(),
            peak: Arc::default(),
            paths: Arc::default(),
            hops_seen: Arc::default(),
        };
        let (active, peak, paths, hops) = (
            dyno.active.clone(),
            dyno.peak.clone(),
            dyno.paths.clone(),
            dyno.hops_seen.clone(),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let (active, peak, paths, hops) =
                    (active.clone(), peak.clone(), paths.clone(), hops.clone());
                std::thread::spawn(move || {
                    let Ok(read) = s.try_clone() else { return };
                    let mut reader = BufReader::new(read);
                    loop {
                        let mut head = Vec::new();
                        loop {
                            let mut line = String::new();
                            match reader.read_line(&mut line) {
                                Ok(0) | Err(_) => return,
                                Ok(_) => {}
                            }
                            if line == "\r\n" {
                                break;
                            }
                            head.push(line);
                        }
                        let path = head
                            .first()
                            .and_then(|l| l.split(' ').nth(1))
                            .unwrap_or("")
                            .to_string();
                        if head
                            .iter()
                            .any(|l| l.to_ascii_lowercase().starts_with("x-switchyard-hop"))
                        {
                            hops.fetch_add(1, Ordering::SeqCst);
                        }
                        let n = active.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(n, Ordering::SeqCst);
                        paths.lock().expect("lock").push(path.clone());
                        if path == "/hang" {
                            // Held until the router's connection goes.
                            let mut rest = String::new();
                            let _ = reader.read_line(&mut rest);
                            active.fetch_sub(1, Ordering::SeqCst);
                            return;
                        }
                        std::thread::sleep(service);
                        active.fetch_sub(1, Ordering::SeqCst);
                        let resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if s.write_all(resp.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        dyno
    }

    fn count(&self, path: &str) -> usize {
        self.paths
            .lock()
            .expect("lock")
            .iter()
            .filter(|p| *p == path)
            .count()
    }
}

/// A router with `--advertise` on a listener the test holds.
struct Router {
    proc: Proc,
    http: SocketAddr,
    socket: Option<TcpListener>,
}

impl Router {
    /// `kill -9`, and the test's handle on its socket closed: its port
    /// refuses connections as a dead machine's would.
    fn kill9(&mut self) {
        self.proc.kill9();
        self.socket = None;
    }
}

fn router(etcd: &Etcd, dir: &TempDir) -> Router {
    let socket = TcpListener::bind("127.0.0.1:0").expect("bind router");
    let http = socket.local_addr().expect("addr");
    let mut args = router_args(etcd, dir);
    args.extend(["--advertise", &http.to_string(), "--member-ttl", "2"].map(String::from));
    let proc = Proc::start_with_socket(
        &args,
        &[],
        &["router-http", "admin"],
        "router-http",
        &socket,
    );
    Router {
        proc,
        http,
        socket: Some(socket),
    }
}

/// A metric's value on a router's admin listener (0 when absent).
fn metric(r: &Router, line_prefix: &str) -> f64 {
    let Ok(m) = http(
        r.proc.addr("admin"),
        "GET",
        "localhost",
        "/metrics",
        &[],
        b"",
    ) else {
        return -1.0;
    };
    m.text()
        .lines()
        .find_map(|l| l.strip_prefix(line_prefix)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn forwarded(r: &Router) -> f64 {
    metric(r, "router_forwarded_requests_total{outcome=\"forwarded\"} ")
}

fn get(r: &Router, path: &str, headers: &[(&str, &str)]) -> Option<u16> {
    get_at(r.http, path, headers)
}

fn get_at(router: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Option<u16> {
    http(router, "GET", "demo.localhost", path, headers, b"")
        .ok()
        .map(|resp| resp.status)
}

/// etcd, a control node, `n` routers that all see each other, and the
/// app `demo` on `dyno` with one request at a time per dyno.
fn cluster(n: usize, dyno: &CountingDyno) -> (Etcd, Proc, Vec<Router>, Vec<TempDir>) {
    let etcd_dir = TempDir::new("owners-etcd");
    let etcd = Etcd::start(&etcd_dir.0);
    let mut dirs = vec![etcd_dir];
    dirs.extend((0..=n).map(|i| TempDir::new(&format!("owners{i}"))));
    let control = control_node(&etcd, &dirs[1]);
    create_app(control.addr("api"), KEY, "demo", Some(dyno.addr));
    let (status, body) = api(
        control.addr("api"),
        KEY,
        "PATCH",
        "/apps/demo/router-settings",
        Some(json!({ "max_dyno_concurrency": 1, "request_timeout_ms": 20_000 })),
    )
    .expect("router settings");
    assert_eq!(status, 200, "{body}");
    let routers: Vec<Router> = dirs[2..].iter().map(|d| router(&etcd, d)).collect();
    for r in &routers {
        eventually("every router sees every router", || {
            metric(r, "router_live_routers ") == n as f64
        });
        eventually("the router serves demo with its settings", || {
            get(r, "/warm", &[]) == Some(200)
        });
    }
    (etcd, control, routers, dirs)
}

/// The one router that forwards nothing: the app's owner.
fn owner_index(routers: &[Router]) -> usize {
    let idle: Vec<usize> = (0..routers.len())
        .filter(|&i| forwarded(&routers[i]) == 0.0)
        .collect();
    assert_eq!(idle.len(), 1, "exactly one router routes demo itself");
    idle[0]
}

#[test]
fn requests_spread_over_three_routers_share_the_owners_queue() {
    let dyno = CountingDyno::start(Duration::from_millis(5));
    let (_etcd, _control, routers, _dirs) = cluster(3, &dyno);
    let addrs: Arc<Vec<SocketAddr>> = Arc::new(routers.iter().map(|r| r.http).collect());
    let owner = owner_index(&routers);
    let before: Vec<f64> = routers.iter().map(forwarded).collect();
    dyno.peak.store(0, Ordering::SeqCst);

    // Six clients at once, two per router, five requests each.
    let clients: Vec<_> = (0..6)
        .map(|c| {
            let addrs = addrs.clone();
            std::thread::spawn(move || {
                (0..5)
                    .map(|i| get_at(addrs[c % 3], &format!("/r{c}-{i}"), &[]))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for c in clients {
        for status in c.join().expect("client") {
            assert_eq!(status, Some(200));
        }
    }
    assert_eq!(
        dyno.peak.load(Ordering::SeqCst),
        1,
        "one queue for the app across routers: never two requests at once"
    );
    let paths = dyno.paths.lock().expect("lock").clone();
    let sent: Vec<_> = paths.iter().filter(|p| p.starts_with("/r")).collect();
    assert_eq!(sent.len(), 30, "each request reached the dyno exactly once");
    assert_eq!(
        dyno.hops_seen.load(Ordering::SeqCst),
        0,
        "no hop header at the dyno"
    );
    // Everything sent to the two others was forwarded to the owner.
    for (i, r) in routers.iter().enumerate() {
        let expected = if i == owner { 0.0 } else { 10.0 };
        assert_eq!(forwarded(r) - before[i], expected, "router {i}");
    }

    // A request already at the hop limit that would be forwarded again is
    // answered H99 (503) and never reaches the dyno; the owner routes it.
    let other = (owner + 1) % 3;
    let at_limit = [("X-Switchyard-Hop", "2; by=elsewhere")];
    assert_eq!(get(&routers[other], "/looped", &at_limit), Some(503));
    assert_eq!(dyno.count("/looped"), 0);
    assert_eq!(
        metric(
            &routers[other],
            "router_forwarded_requests_total{outcome=\"hop_limit\"} "
        ),
        1.0
    );
    assert_eq!(get(&routers[owner], "/at-owner", &at_limit), Some(200));
    assert_eq!(dyno.count("/at-owner"), 1);
}

#[test]
fn the_owner_killed_mid_traffic_loses_only_what_it_held() {
    let dyno = CountingDyno::start(Duration::from_millis(1));
    let (_etcd, _control, mut routers, _dirs) = cluster(3, &dyno);
    let owner = owner_index(&routers);
    let other = (owner + 1) % 3;

    // A request through another router waits at the owner, on the dyno.
    let held_at = routers[other].http;
    let held = std::thread::spawn(move || {
        http(held_at, "GET", "demo.localhost", "/hang", &[], b"").map(|r| r.status)
    });
    eventually("the owner holds /hang on the dyno", || {
        dyno.count("/hang") == 1
    });

    routers[owner].kill9();
    // The forwarding router's connection to the owner broke after the
    // request was sent: it fails, and is not sent again.
    assert_eq!(held.join().expect("join").expect("a response"), 503);
    assert_eq!(dyno.count("/hang"), 1, "never retried");

    // Requests through the survivors succeed from now on: routed where
    // they arrive while the dead owner's lease lives (its port refuses),
    // through the new owner once it expires.
    let survivors: Vec<&Router> = (0..3)
        .filter(|&i| i != owner)
        .map(|i| &routers[i])
        .collect();
    for (n, r) in survivors.iter().enumerate() {
        assert_eq!(get(r, &format!("/during{n}"), &[]), Some(200));
    }
    for r in &survivors {
        eventually("the dead owner's lease expires", || {
            metric(r, "router_live_routers ") == 2.0
        });
    }
    let before: Vec<f64> = survivors.iter().map(|r| forwarded(r)).collect();
    for (n, r) in survivors.iter().enumerate() {
        for i in 0..3 {
            assert_eq!(get(r, &format!("/after{n}-{i}"), &[]), Some(200));
        }
    }
    let after: Vec<f64> = survivors.iter().map(|r| forwarded(r)).collect();
    let moved: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    moved
        .iter()
        .for_each(|m| assert!(*m == 0.0 || *m == 3.0, "{moved:?}"));
    assert_eq!(
        moved.iter().filter(|m| **m == 0.0).count(),
        1,
        "one survivor owns demo now, the other forwards to it: {moved:?}"
    );
}
