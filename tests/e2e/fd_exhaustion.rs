//! Running out of file descriptors: `switchyard serve` started with a soft
//! and hard limit of 1,024 open files, and 1,100 syslog TCP connections that
//! never send a byte held open against it. The syslog listener's share of
//! the descriptors is bounded, so `/healthz`, the router and the control API
//! keep answering while the connections are held, and everything is as it
//! was once they are gone.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::{
    api, create_app, eventually, http, serve_args, via_router, Dyno, Proc, TempDir, SERVE_ROLES,
};

const KEY: &str = "fd-exhaustion-key-0123456789";
const SILENT: usize = 1_100;

/// Each probe must answer within this, or it counts as not answering. A
/// starved process never answers (before the caps, curl waited out any
/// timeout); a healthy one answers in milliseconds, so this is generous
/// for a loaded CI machine rather than a latency bound.
const PROBE: Duration = Duration::from_secs(10);

/// Runs `f` on its own thread; `None` if it has not returned within `limit`.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).ok()
}

/// The statuses of `/healthz`, a request routed to the app's dyno, and
/// `GET /apps` on the control API, each `None` when it did not answer in
/// time; with how long the three took.
fn probes(sy: &Proc) -> ([Option<u16>; 3], Duration) {
    let (admin, router, api_addr) = (sy.addr("admin"), sy.addr("router-http"), sy.addr("api"));
    let start = Instant::now();
    let healthz = within(PROBE, move || {
        http(admin, "GET", &admin.to_string(), "/healthz", &[], b"").map(|r| r.status)
    });
    let routed = within(PROBE, move || {
        via_router(router, "fdtest.localhost").map(|r| r.status)
    });
    let listed = within(PROBE, move || {
        api(api_addr, KEY, "GET", "/apps", None).map(|(status, _)| status)
    });
    let statuses = [
        healthz.and_then(Result::ok),
        routed.flatten(),
        listed.and_then(Result::ok),
    ];
    (statuses, start.elapsed())
}

/// The sum of `name`'s samples labelled `transport="tcp"` on the admin
/// listener's `/metrics`, if it answers in time.
fn tcp_metric(admin: SocketAddr, name: &str) -> Option<f64> {
    let text = within(PROBE, move || {
        http(admin, "GET", &admin.to_string(), "/metrics", &[], b"").map(|r| r.text())
    })?
    .ok()?;
    let prefix = format!("{name}{{");
    Some(
        text.lines()
            .filter(|l| l.starts_with(&prefix) && l.contains("transport=\"tcp\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

#[test]
fn silent_syslog_connections_past_the_fd_limit_leave_healthz_router_and_api_answering() {
    // This process holds the 1,100 connections: it needs the descriptors
    // the server is denied.
    rlimit::increase_nofile_limit(4 * SILENT as u64).expect("raise this test's own limit");
    let dir = TempDir::new("fd-exhaustion");
    let sy = Proc::start_under(
        &["prlimit", "--nofile=1024:1024"],
        &serve_args(&dir.0, None),
        &[("SWITCHYARD_API_KEY", KEY)],
        &[SERVE_ROLES, &["syslog-tcp"]].concat(),
    );
    let admin = sy.addr("admin");
    let syslog = sy.addr("syslog-tcp");
    let dyno = Dyno::start("ok");
    create_app(sy.addr("api"), KEY, "fdtest", Some(dyno.addr));
    eventually("the app is routed", || probes(&sy).0 == [Some(200); 3]);

    let mut silent = Vec::with_capacity(SILENT);
    for i in 0..SILENT {
        let s = TcpStream::connect_timeout(&syslog, PROBE)
            .unwrap_or_else(|e| panic!("syslog connect {i}: {e}"));
        silent.push(s);
    }
    // Every connection has been taken off the accept queue: held open, or
    // closed on arrival as past the listener's share of descriptors.
    eventually("the syslog listener has taken every connection", || {
        let open = tcp_metric(admin, "logplex_connections_open");
        let refused = tcp_metric(admin, "logplex_connections_refused_total");
        eprintln!("syslog tcp connections: open {open:?}, refused {refused:?}");
        matches!((open, refused), (Some(o), Some(r)) if o + r == SILENT as f64 && r > 0.0)
    });
    for round in 0..3 {
        let (statuses, took) = probes(&sy);
        eprintln!("holding {SILENT} connections, round {round}: {statuses:?} in {took:?}");
        assert_eq!(
            statuses,
            [Some(200); 3],
            "/healthz, the router and the API answer while {SILENT} silent syslog connections are held"
        );
    }

    drop(silent);
    eventually("the held syslog connections are closed", || {
        tcp_metric(admin, "logplex_connections_open") == Some(0.0)
    });
    let (statuses, _) = probes(&sy);
    assert_eq!(statuses, [Some(200); 3], "everything answers afterwards");
    // A new syslog connection is taken and read again: its frame (for a
    // token nobody has) is counted.
    let refused = tcp_metric(admin, "logplex_connections_refused_total");
    let mut sender = TcpStream::connect_timeout(&syslog, PROBE).expect("syslog connect");
    sender
        .write_all(b"<134>1 2026-01-01T00:00:00Z host t.nobody web.1 - - hello\n")
        .expect("send a line");
    eventually("the new connection's line is read", || {
        tcp_metric(admin, "logplex_frames_unknown_token_total") == Some(1.0)
    });
    assert_eq!(
        tcp_metric(admin, "logplex_connections_refused_total"),
        refused,
        "the new connection was not refused"
    );
}
