//! A router running apart ships its router lines to the log router that
//! owns the app's channel, found in etcd: `switchyard control`, `switchyard
//! logplex --advertise` and `switchyard router`, each a process on one
//! etcd. Requests through the router come out at the app's TCP syslog
//! drain as `heroku[router]` lines, once each; while no log router is up
//! the router still serves, counts the lines it drops, and reports them in
//! the app's stream as soon as a log router is back. A router following a
//! control plane ships to the log router `--logplex-syslog` names, and
//! sends what it has queued before it exits.

use std::net::{SocketAddr, TcpListener};

use crate::etcd_store::{control_on, Etcd};
use crate::logplex_role::{add_drain, logplex_args, ready, LOGPLEX_ROLES};
use crate::support::{create_app, eventually, http, serve, Dyno, Proc, SyslogSink, TempDir, KEY};

/// `switchyard logplex` advertising `syslog` (a socket the test holds and
/// hands over) as its syslog address in etcd, ready.
pub(crate) fn advertised_logplex(store: &str, dir: &TempDir, syslog: &TcpListener) -> Proc {
    let advertise = syslog.local_addr().expect("addr").to_string();
    let mut args = logplex_args(store, &dir.0);
    args.extend([
        "--advertise".into(),
        advertise,
        "--member-ttl".into(),
        "2".into(),
    ]);
    // The control nodes' key: sessions they sign for this node open here.
    let env = [("SWITCHYARD_API_KEY", KEY)];
    let node = Proc::start_with_socket(&args, &env, LOGPLEX_ROLES, "syslog-tcp", syslog);
    eventually("the logplex node is ready", || ready(node.addr("admin")));
    node
}

/// One request through the router; its status.
pub(crate) fn get(router: SocketAddr, path: &str) -> u16 {
    http(router, "GET", "demo.localhost", path, &[], b"")
        .map(|r| r.status)
        .unwrap_or(0)
}

/// The router's metric `name` (summed over its labels), if it has one.
pub(crate) fn metric(admin: SocketAddr, name: &str) -> Option<f64> {
    let text = http(admin, "GET", "admin", "/metrics", &[], b"")
        .ok()?
        .text();
    let values: Vec<f64> = text
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

#[test]
fn a_router_apart_ships_its_lines_to_the_log_router_and_reports_what_it_dropped() {
    let etcd_dir = TempDir::new("etcd");
    let etcd = Etcd::start(&etcd_dir.0);
    let store = etcd.url("/ship");
    let control_dir = TempDir::new("ship-control");
    let control = control_on(&etcd, "/ship", &control_dir.0);
    let api_addr = control.addr("api");
    let dyno = Dyno::start("hi");
    create_app(api_addr, KEY, "demo", Some(dyno.addr));
    let mut drain = SyslogSink::start();
    let drain_token = add_drain(api_addr, "demo", &drain.url());

    let syslog = TcpListener::bind("127.0.0.1:0").expect("bind the log router's socket");
    let logplex_dir = TempDir::new("ship-logplex");
    let mut node = advertised_logplex(&store, &logplex_dir, &syslog);

    let router_dir = TempDir::new("ship-router");
    let mut args: Vec<String> = vec!["router".into(), "--store".into(), store.clone()];
    for flag in ["--http", "--https", "--admin"] {
        args.extend([flag.into(), "127.0.0.1:0".into()]);
    }
    args.extend(["--data-dir".into(), router_dir.0.display().to_string()]);
    let router = Proc::start(&args, &[], &["router-http", "admin"]);
    let (edge, admin) = (router.addr("router-http"), router.addr("admin"));

    // Until the router has the app and the log router runs the drain,
    // probe (each probe its own path) until one comes out at the drain.
    let mut probe = 0;
    eventually("a probe's router line reaches the drain", || {
        probe += 1;
        get(edge, &format!("/probe/{probe}"));
        drain.text().contains("path=\"/probe/")
    });

    // Each request is one `heroku[router]` line at the drain, once.
    let requests = [
        ("/req/a?x=1", 200),
        ("/status/404", 404),
        ("/req/b", 200),
        ("/status/503", 503),
    ];
    for (path, status) in requests {
        assert_eq!(get(edge, path), status, "{path}");
    }
    let line_of = |path: &str, status: u16| {
        (
            format!(" {drain_token} heroku router - - at=info method=GET path=\"{path}\""),
            format!("status={status}"),
        )
    };
    eventually("every request's line reaches the drain", || {
        let text = drain.text();
        requests
            .iter()
            .all(|(p, _)| text.contains(&format!("path=\"{p}\"")))
    });
    let text = drain.text();
    for (path, status) in requests {
        let (head, status) = line_of(path, status);
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(&head)).collect();
        assert_eq!(lines.len(), 1, "{path} once: {text}");
        assert!(
            lines[0].contains(&status) && lines[0].contains("<158>1 "),
            "{path}: {}",
            lines[0]
        );
    }

    // The log router goes (SIGTERM: it leaves the live set at once).
    assert!(node.terminate(), "the logplex node exits cleanly");
    eventually("the router sees no live log router", || {
        metric(admin, "router_log_routers") == Some(0.0)
    });
    let dropped_before = metric(admin, "router_log_lines_dropped_total").unwrap_or(0.0);
    for i in 0..3 {
        assert_eq!(
            get(edge, &format!("/down/{i}")),
            200,
            "requests still succeed"
        );
    }
    eventually("the router counts the three lines it dropped", || {
        metric(admin, "router_log_lines_dropped_total") == Some(dropped_before + 3.0)
    });
    assert_eq!(dropped_before, 0.0, "nothing was dropped before");

    // A log router is back on the same socket: the report comes first,
    // then new lines.
    let node = advertised_logplex(&store, &logplex_dir, &syslog);
    eventually("the router sees the log router and is connected", || {
        metric(admin, "router_log_routers") == Some(1.0)
            && metric(admin, "router_log_links_up") == Some(1.0)
    });
    let mut after = 0;
    eventually("a new line reaches the drain", || {
        after += 1;
        get(edge, &format!("/after/{after}"));
        drain.text().contains("path=\"/after/")
    });
    let text = drain.text();
    let report =
        format!(" {drain_token} heroku router - - Error L10 (output buffer overflow): router '");
    let reports: Vec<&str> = text.lines().filter(|l| l.contains(&report)).collect();
    assert_eq!(reports.len(), 1, "one report: {text}");
    assert!(
        reports[0].contains("' dropped 3 messages since "),
        "the exact count: {}\n{}",
        reports[0],
        http(admin, "GET", "admin", "/metrics", &[], b"")
            .map(|r| r.text())
            .unwrap_or_default()
    );
    // The control node's `heroku[api]` lines of the app's creation went
    // before any log router was live: its own report says so, once.
    let control_report =
        format!(" {drain_token} heroku api - - Error L10 (output buffer overflow): control node '");
    assert_eq!(
        text.lines().filter(|l| l.contains(&control_report)).count(),
        1,
        "{text}"
    );
    let at = |needle: &str| text.find(needle).unwrap_or(usize::MAX);
    assert!(
        at(&report) < at("path=\"/after/"),
        "the report comes first: {text}"
    );
    assert!(
        !text.contains("path=\"/down/"),
        "dropped lines are not sent later: {text}"
    );
    drop(node);
}

/// `switchyard router` following the control plane at `api_addr`, with
/// `ship` (the flags that say where its lines go), on port 0.
fn router_following(api_addr: SocketAddr, ship: &[String], dir: &TempDir) -> Proc {
    let mut args: Vec<String> = vec![
        "router".into(),
        "--control".into(),
        format!("http://{api_addr}"),
        "--api-key".into(),
        KEY.into(),
    ];
    args.extend_from_slice(ship);
    for flag in ["--http", "--https", "--admin"] {
        args.extend([flag.into(), "127.0.0.1:0".into()]);
    }
    args.extend(["--data-dir".into(), dir.0.display().to_string()]);
    Proc::start(&args, &[], &["router-http", "admin"])
}

#[test]
fn a_router_following_a_control_plane_ships_to_the_log_router_it_is_given() {
    ships_through_a_control_plane(false);
}

#[test]
fn a_router_ships_over_syslog_tls_checking_the_log_routers_certificate() {
    ships_through_a_control_plane(true);
}

/// A router following `switchyard serve`'s control plane, shipping to its
/// log router over syslog TCP, or TLS (checked against the certificate
/// `serve` generated for `localhost`).
fn ships_through_a_control_plane(tls: bool) {
    let dir = TempDir::new("ship-serve");
    let sy = serve(&dir.0, None, Some(KEY));
    let api_addr = sy.addr("api");
    let dyno = Dyno::start("hi");
    create_app(api_addr, KEY, "demo", Some(dyno.addr));
    let mut drain = SyslogSink::start();
    let drain_token = add_drain(api_addr, "demo", &drain.url());

    let router_dir = TempDir::new("ship-router-control");
    let ship: Vec<String> = if tls {
        vec![
            "--logplex-syslog".into(),
            format!("localhost:{}", sy.addr("syslog-tls").port()),
            "--logplex-tls".into(),
            "--logplex-ca".into(),
            dir.0.join("tls/default.crt").display().to_string(),
        ]
    } else {
        vec!["--logplex-syslog".into(), sy.addr("syslog-tcp").to_string()]
    };
    let mut router = router_following(api_addr, &ship, &router_dir);
    let edge = router.addr("router-http");
    let mut probe = 0;
    eventually("a probe's router line reaches the drain", || {
        probe += 1;
        get(edge, &format!("/probe/{probe}"));
        drain.text().contains("path=\"/probe/")
    });

    // The last request before SIGTERM: its line is sent before the exit.
    assert_eq!(get(edge, "/status/418"), 418);
    assert!(router.terminate(), "the router exits cleanly");
    let head = format!(" {drain_token} heroku router - - at=info method=GET path=\"/status/418\"");
    eventually("the last line reaches the drain", || {
        drain.text().contains(&head)
    });
    let text = drain.text();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(&head)).collect();
    assert_eq!(lines.len(), 1, "once: {text}");
    assert!(lines[0].contains("status=418"), "{}", lines[0]);
}

#[test]
fn a_log_router_whose_certificate_does_not_check_out_gets_no_lines_and_they_are_counted() {
    let dir = TempDir::new("ship-serve-badca");
    let sy = serve(&dir.0, None, Some(KEY));
    let api_addr = sy.addr("api");
    let dyno = Dyno::start("hi");
    create_app(api_addr, KEY, "demo", Some(dyno.addr));
    let mut drain = SyslogSink::start();
    add_drain(api_addr, "demo", &drain.url());
    // Another self-signed certificate for localhost: not the log router's.
    let other = TempDir::new("ship-other-cert");
    let other_cert = other.0.join("tls/default.crt");
    let generator = serve(&other.0, None, Some(KEY));
    // Its API answers once its certificate is written.
    eventually("the other process answers", || {
        crate::support::api(generator.addr("api"), KEY, "GET", "/apps", None)
            .is_ok_and(|(status, _)| status == 200)
    });
    drop(generator);

    let router_dir = TempDir::new("ship-router-badca");
    let ship = [
        "--logplex-syslog".into(),
        format!("localhost:{}", sy.addr("syslog-tls").port()),
        "--logplex-tls".into(),
        "--logplex-ca".into(),
        other_cert.display().to_string(),
    ];
    let router = router_following(api_addr, &ship, &router_dir);
    let (edge, admin) = (router.addr("router-http"), router.addr("admin"));
    eventually("the router routes the app", || get(edge, "/before") == 200);
    for _ in 0..3 {
        assert_eq!(get(edge, "/refused"), 200, "requests still succeed");
    }
    eventually("the four lines are counted dropped", || {
        metric(admin, "router_log_lines_dropped_total") == Some(4.0)
    });
    assert!(
        !drain.text().contains("heroku router"),
        "no line went to a log router that failed the check: {}",
        drain.text()
    );
}
