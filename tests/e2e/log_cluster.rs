//! Logs across nodes: two `switchyard router` and two `switchyard logplex
//! --advertise` processes on one etcd, with a `switchyard control` node.
//! The router lines of requests sent to either router reach a live tail
//! (opened through the control node) and the app's TCP syslog drain once
//! each, over one drain connection; a line ingested on the node that does
//! not own the channel reaches the owner; the drain's books balance across
//! the nodes; and when the owner is killed the other node takes the
//! channel, says the history went with the dead node, and lines flow again.
//! An owner stopped with SIGTERM under traffic loses no line uncounted.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::json;

use crate::etcd_store::{control_on, Etcd};
use crate::logplex_role::add_drain;
use crate::router_logs::{advertised_logplex, get, metric};
use crate::support::{api, create_app, eventually, Dyno, Proc, SyslogSink, TempDir, KEY};

/// The tests here each run a whole cluster (etcd, a control node, two log
/// routers, routers) and time its failovers against member leases: one at
/// a time, so that one's load does not stretch the other's.
static ONE_CLUSTER: Mutex<()> = Mutex::new(());

fn one_cluster() -> std::sync::MutexGuard<'static, ()> {
    ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner())
}

/// What both tests start: etcd, a control node with the `demo` app on a
/// dyno, a syslog sink for its drain, and two advertised log routers on
/// sockets the test bound (`sockets[i]` is `nodes[i]`'s).
struct Fleet {
    nodes: Vec<Proc>,
    sockets: Vec<TcpListener>,
    drain: SyslogSink,
    dyno: Dyno,
    control: Proc,
    api_addr: SocketAddr,
    etcd: Etcd,
    store: String,
    _dirs: Vec<TempDir>,
}

impl Fleet {
    /// A fleet under the etcd prefix `/{prefix}`.
    fn start(prefix: &str) -> Fleet {
        let etcd_dir = TempDir::new("etcd");
        let etcd = Etcd::start(&etcd_dir.0);
        let store = etcd.url(&format!("/{prefix}"));
        let control_dir = TempDir::new(&format!("{prefix}-control"));
        let control = control_on(&etcd, &format!("/{prefix}"), &control_dir.0);
        let api_addr = control.addr("api");
        let dyno = Dyno::start("hi");
        create_app(api_addr, KEY, "demo", Some(dyno.addr));
        let drain = SyslogSink::start();
        let sockets: Vec<TcpListener> = (0..2)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a log router's socket"))
            .collect();
        let node_dirs: Vec<TempDir> = (0..2)
            .map(|i| TempDir::new(&format!("{prefix}-logplex{i}")))
            .collect();
        let nodes: Vec<Proc> = (0..2)
            .map(|i| advertised_logplex(&store, &node_dirs[i], &sockets[i]))
            .collect();
        let mut dirs = vec![etcd_dir, control_dir];
        dirs.extend(node_dirs);
        Fleet {
            nodes,
            sockets,
            drain,
            dyno,
            control,
            api_addr,
            etcd,
            store,
            _dirs: dirs,
        }
    }
}

/// `switchyard router` following etcd at `store`, on port 0.
fn router(store: &str, dir: &TempDir) -> Proc {
    let mut args: Vec<String> = vec!["router".into(), "--store".into(), store.into()];
    for flag in ["--http", "--https", "--admin"] {
        args.extend([flag.into(), "127.0.0.1:0".into()]);
    }
    args.extend(["--data-dir".into(), dir.0.display().to_string()]);
    Proc::start(&args, &[], &["router-http", "admin"])
}

/// A live tail through a session the control node signs: every line the
/// owning log router streams, collected as it comes (until it closes).
fn open_tail(api_addr: SocketAddr) -> Arc<Mutex<Vec<String>>> {
    let (status, session) = api(
        api_addr,
        KEY,
        "POST",
        "/apps/demo/log-sessions",
        Some(json!({ "lines": 1500, "tail": true })),
    )
    .expect("session");
    assert_eq!(status, 201, "{session}");
    let url = url::Url::parse(session["logplex_url"].as_str().expect("url")).expect("url");
    let mut stream = TcpStream::connect((url.host_str().expect("host"), url.port().expect("port")))
        .expect("connect to the session");
    write!(
        stream,
        "GET {}?{} HTTP/1.1\r\nHost: logplex\r\nAccept: text/plain\r\n\r\n",
        url.path(),
        url.query().unwrap_or("")
    )
    .expect("request the session");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let into = seen.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            into.lock().expect("lock").push(line);
        }
    });
    seen
}

/// How many of `lines` contain `needle`.
fn count<S: AsRef<str>>(lines: &[S], needle: &str) -> usize {
    lines.iter().filter(|l| l.as_ref().contains(needle)).count()
}

/// Which node owns the demo app's channel, by its gauge.
fn owner_of(nodes: &[&Proc]) -> Option<usize> {
    let owned: Vec<usize> = nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| metric(n.addr("admin"), "logplex_channels_owned") == Some(1.0))
        .map(|(i, _)| i)
        .collect();
    (owned.len() == 1).then(|| owned[0])
}

#[test]
fn router_lines_from_two_routers_reach_one_tail_and_one_drain_through_a_two_node_logplex() {
    let _one = one_cluster();
    // Bound in this order so that they drop in reverse: the processes
    // before the directories they use.
    let Fleet {
        _dirs,
        etcd: _etcd,
        store,
        control: _control,
        api_addr,
        dyno: _dyno,
        mut drain,
        sockets,
        mut nodes,
    } = Fleet::start("fleet");
    // The nodes hold their sockets now: a killed node's port must refuse.
    let advertised: Vec<String> = sockets
        .into_iter()
        .map(|s| s.local_addr().expect("addr").to_string())
        .collect();
    let router_dirs: Vec<TempDir> = (0..2)
        .map(|i| TempDir::new(&format!("fleet-router{i}")))
        .collect();
    let routers: Vec<Proc> = router_dirs.iter().map(|d| router(&store, d)).collect();
    let edges: Vec<SocketAddr> = routers.iter().map(|r| r.addr("router-http")).collect();

    eventually("one node owns the channel", || {
        owner_of(&[&nodes[0], &nodes[1]]).is_some()
    });
    let owner = owner_of(&[&nodes[0], &nodes[1]]).expect("owner");
    let other = 1 - owner;
    // The drain is added once both nodes agree on the owner, so it has one
    // connection from the start (a node joining later moves the channel,
    // and the drain's connection with it).
    add_drain(api_addr, "demo", &drain.url());
    // Both routers route the app and their lines reach the drain.
    for (r, edge) in edges.iter().enumerate() {
        let mut probe = 0;
        eventually(
            "a probe's line through each router reaches the drain",
            || {
                probe += 1;
                get(*edge, &format!("/probe/{r}/{probe}"));
                drain.text().contains(&format!("path=\"/probe/{r}/"))
            },
        );
    }
    let lines = open_tail(api_addr);
    let mut probe = 0;
    eventually("the tail is live", || {
        probe += 1;
        get(edges[0], &format!("/tail-probe/{probe}"));
        count(&lines.lock().expect("lock"), "path=\"/tail-probe/") > 0
    });

    // Ten requests through each router, each its own path.
    let paths: Vec<String> = (0..2)
        .flat_map(|r| (0..10).map(move |i| format!("/r{r}/{i}")))
        .collect();
    for (n, path) in paths.iter().enumerate() {
        assert_eq!(get(edges[n / 10], path), 200, "{path}");
    }
    // A line ingested on the node that does not own the channel.
    let token = crate::logplex_role::app_token(api_addr, "demo");
    crate::logplex_role::send_frame(
        nodes[other].addr("syslog-tcp"),
        &token,
        "sent to the other node",
    );
    let needles: Vec<String> = paths
        .iter()
        .map(|p| format!("path=\"{p}\""))
        .chain(["sent to the other node".to_string()])
        .collect();
    eventually("every line is in the tail and at the drain", || {
        let text = drain.text();
        let tail = lines.lock().expect("lock");
        needles
            .iter()
            .all(|n| text.contains(n.as_str()) && count(&tail, n) > 0)
    });
    // A last request through each router: once its line is in, any copy
    // of an earlier one would be too.
    for (r, edge) in edges.iter().enumerate() {
        assert_eq!(get(*edge, &format!("/last/{r}")), 200);
    }
    eventually("the last lines are in", || {
        let text = drain.text();
        let tail = lines.lock().expect("lock");
        (0..2).all(|r| {
            let n = format!("path=\"/last/{r}\"");
            text.contains(&n) && count(&tail, &n) > 0
        })
    });
    let text = drain.text();
    let drained: Vec<&str> = text.lines().collect();
    let tail = lines.lock().expect("lock").clone();
    for n in &needles {
        assert_eq!(count(&drained, n), 1, "{n} once at the drain: {text}");
        assert_eq!(count(&tail, n), 1, "{n} once in the tail: {tail:?}");
    }
    assert_eq!(
        drain.connections.load(Ordering::SeqCst),
        1,
        "one drain connection cluster-wide"
    );
    // The non-owner forwarded the line it ingested and runs no drain.
    let other_admin = nodes[other].addr("admin");
    assert_eq!(
        metric(other_admin, "logplex_forwarded_lines_total"),
        Some(1.0)
    );
    assert_eq!(
        metric(other_admin, "logplex_drain_accepted_lines_total").unwrap_or(0.0),
        0.0
    );
    // The books balance across the nodes once the drain is idle.
    eventually("accepted = delivered + dropped over both nodes", || {
        let sum = |name: &str| -> f64 {
            nodes
                .iter()
                .filter_map(|n| metric(n.addr("admin"), name))
                .sum()
        };
        let accepted = sum("logplex_drain_accepted_lines_total");
        accepted > 0.0
            && accepted
                == sum("logplex_drain_delivered_lines_total")
                    + sum("logplex_drain_dropped_lines_total")
    });

    // The owner dies. The other node takes the channel once its lease
    // expires (TTL 2 s) and says where the history went; lines flow again.
    let dead = advertised[owner].clone();
    let killed = Instant::now();
    nodes[owner].kill9();
    let mut after = 0;
    eventually("lines reach the drain through the new owner", || {
        after += 1;
        for edge in &edges {
            get(*edge, &format!("/after/{after}"));
        }
        drain.text().contains("path=\"/after/")
    });
    eprintln!(
        "lines flowed again {:?} after the owner was killed (member TTL 2 s)",
        killed.elapsed()
    );
    assert_eq!(owner_of(&[&nodes[other]]), Some(0), "the survivor owns it");
    let text = drain.text();
    let moved = "logplex - - Channel moved to log router '";
    let moves: Vec<&str> = text.lines().filter(|l| l.contains(moved)).collect();
    assert_eq!(moves.len(), 1, "{text}");
    assert!(
        moves[0].contains(&format!(
            "log router '{dead}' is gone, and the history it held"
        )),
        "{}",
        moves[0]
    );
    assert_eq!(
        drain.connections.load(Ordering::SeqCst),
        2,
        "the new owner opened the drain's one connection"
    );
    // A new tail, through the control node, reads the survivor.
    let lines = open_tail(api_addr);
    eventually("the new owner's history has the line it wrote", || {
        count(&lines.lock().expect("lock"), "Channel moved to log router") == 1
    });
    // Lines a router could not send while the owner was dead (if any)
    // are counted and reported in the stream once the survivor owns it.
    let dropped: f64 = routers
        .iter()
        .filter_map(|r| metric(r.addr("admin"), "router_log_lines_dropped_total"))
        .sum();
    eprintln!("routers counted {dropped} lines dropped while the owner was dead");
    if dropped > 0.0 {
        let reported = |text: &str| -> f64 {
            text.lines()
                .filter(|l| l.contains("Error L10 (output buffer overflow): router '"))
                .filter_map(|l| {
                    l.split("' dropped ")
                        .nth(1)?
                        .split(' ')
                        .next()?
                        .parse::<f64>()
                        .ok()
                })
                .sum::<f64>()
        };
        let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            eventually("the routers report what they dropped", || {
                reported(&drain.text()) == dropped
            })
        }));
        if waited.is_err() {
            let text = drain.text();
            let l10: Vec<&str> = text.lines().filter(|l| l.contains("Error L10")).collect();
            let survivor = nodes[other].addr("admin");
            let views: Vec<String> = routers
                .iter()
                .map(|r| {
                    let m = |name: &str| metric(r.addr("admin"), name);
                    format!(
                        "log routers {:?}, links up {:?}, shipped {:?}, dropped {:?}",
                        m("router_log_routers"),
                        m("router_log_links_up"),
                        m("router_log_lines_shipped_total"),
                        m("router_log_lines_dropped_total")
                    )
                })
                .collect();
            panic!(
                "the routers reported {} of {dropped} dropped lines; L10 lines at the drain: {l10:#?}; \
                 routers: {views:#?}; the survivor forwarded {:?} and dropped {:?} forwarding",
                reported(&text),
                metric(survivor, "logplex_forwarded_lines_total"),
                metric(survivor, "logplex_forward_dropped_lines_total"),
            );
        }
    }
    drop(routers);
}

/// The owner of a channel is stopped (SIGTERM) while a router sends it
/// lines: every router line reaches the drain once, through the old owner
/// or the new one, or the router counts it dropped. None vanishes in the
/// gap between the old owner's last flush and its exit, nor in the next
/// owner's forwarder as the channel moves to it.
#[test]
fn an_owner_stopped_under_traffic_delivers_or_has_counted_every_router_line() {
    let _one = one_cluster();
    // Bound in this order so that they drop in reverse: the processes
    // before the directories they use.
    let Fleet {
        _dirs,
        etcd: _etcd,
        store,
        control: _control,
        api_addr,
        dyno: _dyno,
        mut drain,
        sockets,
        mut nodes,
    } = Fleet::start("stop");
    // The nodes hold their sockets now: a stopped node's port refuses.
    drop(sockets);
    let router_dir = TempDir::new("stop-router");
    let router = router(&store, &router_dir);
    let (edge, admin) = (router.addr("router-http"), router.addr("admin"));
    eventually("one node owns the channel", || {
        owner_of(&[&nodes[0], &nodes[1]]).is_some()
    });
    let owner = owner_of(&[&nodes[0], &nodes[1]]).expect("owner");
    add_drain(api_addr, "demo", &drain.url());
    let mut probe = 0;
    eventually("a probe's line reaches the drain", || {
        probe += 1;
        get(edge, &format!("/probe/{probe}"));
        drain.text().contains("path=\"/probe/")
    });

    // Requests one after another, each its own path, until told to stop.
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (sent, stop) = (sent.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let i = sent.load(Ordering::SeqCst);
                assert_eq!(get(edge, &format!("/t/{i}")), 200, "request {i}");
                sent.store(i + 1, Ordering::SeqCst);
            }
        })
    };
    eventually("traffic flows to the drain", || {
        drain.text().contains("path=\"/t/20\"")
    });
    assert!(nodes[owner].terminate(), "the owner exits cleanly");
    let at_exit = sent.load(Ordering::SeqCst);
    eventually("lines flow through the new owner", || {
        drain
            .text()
            .contains(&format!("path=\"/t/{}\"", at_exit + 20))
    });
    stop.store(true, Ordering::SeqCst);
    traffic.join().expect("the traffic thread");
    let total = sent.load(Ordering::SeqCst);
    // In order through the new owner's one drain: once the last line is
    // in, every earlier line sent there is too.
    assert_eq!(get(edge, "/last"), 200);
    eventually("the last line is in", || {
        drain.text().contains("path=\"/last\"")
    });

    let text = drain.text();
    let drained: Vec<&str> = text.lines().collect();
    let mut missing = Vec::new();
    for i in 0..total {
        match count(&drained, &format!("path=\"/t/{i}\"")) {
            0 => missing.push(i),
            1 => {}
            n => panic!("/t/{i} reached the drain {n} times"),
        }
    }
    let dropped = metric(admin, "router_log_lines_dropped_total").unwrap_or(0.0);
    eprintln!(
        "{total} requests, the owner stopped after {at_exit}: {} lines missing, {dropped} counted dropped by the router",
        missing.len()
    );
    let survivor = nodes[1 - owner].addr("admin");
    let seen = |admin: SocketAddr, name: &str| metric(admin, name).unwrap_or(0.0);
    assert!(
        missing.len() as f64 <= dropped,
        "lines neither delivered nor counted: {missing:?} missing, {dropped} counted; \
         the router shipped {}; the survivor forwarded {} and dropped {} forwarding, \
         it received {} frames and its drain accepted {}; the drain had {} connections",
        seen(admin, "router_log_lines_shipped_total"),
        seen(survivor, "logplex_forwarded_lines_total"),
        seen(survivor, "logplex_forward_dropped_lines_total"),
        seen(survivor, "logplex_frames_received_total"),
        seen(survivor, "logplex_drain_accepted_lines_total"),
        drain.connections.load(Ordering::SeqCst),
    );
    drop(nodes);
}
