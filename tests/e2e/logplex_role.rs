//! `switchyard logplex`: the log router alone, configured from etcd. A
//! `switchyard control` node writes apps and drains into etcd; a logplex
//! node on the same prefix ingests syslog with the app's token and delivers
//! to the drains, picks up a drain added later, and refuses `--store redb`;
//! with `--advertise` it is a leased member in etcd until it leaves or dies.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::json;

use crate::etcd_store::{control_on, Etcd};
use crate::support::{api, create_app, eventually, http, patience, Proc, SyslogSink, TempDir, KEY};

/// The roles a logplex node announces.
pub(crate) const LOGPLEX_ROLES: &[&str] = &["logplex-http", "syslog-tcp", "syslog-tls", "admin"];

/// `switchyard logplex` on port 0 everywhere, configured from `store`.
fn logplex_node(store: &str, data_dir: &std::path::Path) -> Proc {
    Proc::start(&logplex_args(store, data_dir), &[], LOGPLEX_ROLES)
}

pub(crate) fn logplex_args(store: &str, data_dir: &std::path::Path) -> Vec<String> {
    let mut args: Vec<String> = vec!["logplex".into()];
    for flag in ["--logplex-http", "--syslog", "--syslog-tls", "--admin"] {
        args.extend([flag.into(), "127.0.0.1:0".into()]);
    }
    args.extend([
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--store".into(),
        store.into(),
    ]);
    args
}

/// The app's `app` input token, as the control node lists it.
pub(crate) fn app_token(control: SocketAddr, app: &str) -> String {
    let (status, tokens) = api(
        control,
        KEY,
        "GET",
        &format!("/apps/{app}/log-tokens"),
        None,
    )
    .expect("tokens");
    assert_eq!(status, 200, "{tokens}");
    tokens
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "app"))
        .and_then(|t| t["token"].as_str())
        .expect("the app's token")
        .to_string()
}

/// Adds a drain to `app` through the control node; returns its `d.` token.
pub(crate) fn add_drain(control: SocketAddr, app: &str, url: &str) -> String {
    let (status, body) = api(
        control,
        KEY,
        "POST",
        &format!("/apps/{app}/log-drains"),
        Some(json!({ "url": url })),
    )
    .expect("add drain");
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().expect("drain token").to_string()
}

/// One octet-counted RFC 5424 frame over a fresh TCP connection.
pub(crate) fn send_frame(syslog: SocketAddr, token: &str, message: &str) {
    let line = format!("<134>1 2026-01-01T00:00:00Z host {token} web.1 - - {message}");
    let mut s = TcpStream::connect(syslog).expect("connect syslog");
    s.write_all(format!("{} {line}", line.len()).as_bytes())
        .expect("send frame");
}

/// `logger --octet-count` over TCP, the app's token as its tag.
fn logger(syslog: SocketAddr, token: &str, message: &str) {
    let status = Command::new("logger")
        .args([
            "--octet-count",
            "--tcp",
            "--rfc5424=notq",
            "-n",
            "127.0.0.1",
        ])
        .args(["-P", &syslog.port().to_string(), "-t", token, message])
        .stdin(Stdio::null())
        .status()
        .expect("logger (util-linux)");
    assert!(status.success(), "logger: {status}");
}

pub(crate) fn ready(admin: SocketAddr) -> bool {
    http(admin, "GET", "admin", "/readyz", &[], b"").is_ok_and(|r| r.status == 200)
}

#[test]
fn a_logplex_node_delivers_to_drains_written_through_a_control_node() {
    let etcd_dir = TempDir::new("etcd");
    let etcd = Etcd::start(&etcd_dir.0);
    let control_dir = TempDir::new("logplex-control");
    let control = control_on(&etcd, "/logs", &control_dir.0);
    let api_addr = control.addr("api");
    create_app(api_addr, KEY, "demo", None);
    let mut first = SyslogSink::start();
    let first_token = add_drain(api_addr, "demo", &first.url());
    let token = app_token(api_addr, "demo");

    let logplex_dir = TempDir::new("logplex-node");
    let mut node = logplex_node(&etcd.url("/logs"), &logplex_dir.0);
    eventually("the logplex node is ready", || ready(node.addr("admin")));
    let syslog = node.addr("syslog-tcp");

    // A raw octet-counted frame with the app's token reaches the drain,
    // with the drain's token as host and the token's name as app name.
    // (Ready means the configuration is loaded: the token is known.)
    send_frame(syslog, &token, "hello over tcp");
    let expected = format!(" {first_token} app web.1 - - hello over tcp");
    eventually("the raw frame reaches the drain", || {
        first.text().contains(&expected)
    });
    logger(syslog, &token, "hello from logger");
    eventually("logger's line reaches the drain", || {
        first.text().contains("hello from logger")
    });

    // A drain added later through the control node starts on the running
    // node (lines sent before it started are not its business: keep sending
    // until one arrives).
    let mut second = SyslogSink::start();
    let second_token = add_drain(api_addr, "demo", &second.url());
    let mut n = 0;
    eventually("a drain added later receives lines", || {
        n += 1;
        send_frame(syslog, &token, &format!("later {n}"));
        second
            .text()
            .contains(&format!(" {second_token} app web.1 - - later "))
    });
    assert!(
        first
            .text()
            .contains(&format!(" {first_token} app web.1 - - later ")),
        "the first drain keeps running: {}",
        first.text()
    );
    assert!(node.terminate(), "SIGTERM: a clean exit");
}

/// The member records under `<prefix>/members/logplex/`, read with etcdctl:
/// key → value.
fn logplex_members(etcd: &Etcd, prefix: &str) -> Vec<(String, serde_json::Value)> {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=http://{}", etcd.endpoint))
        .args(["get", "--prefix", &format!("{prefix}/members/logplex/")])
        .output()
        .expect("etcdctl get");
    assert!(out.status.success(), "etcdctl: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    lines
        .chunks(2)
        .map(|kv| {
            let value = kv.get(1).and_then(|v| serde_json::from_str(v).ok());
            (kv[0].to_string(), value.unwrap_or_default())
        })
        .collect()
}

#[test]
fn logplex_nodes_register_as_members_and_leave() {
    let etcd_dir = TempDir::new("etcd");
    let etcd = Etcd::start(&etcd_dir.0);
    let start = |advertise: &str, dir: &TempDir| {
        let mut args = logplex_args(&etcd.url("/logs"), &dir.0);
        args.extend(["--advertise".into(), advertise.into()]);
        args.extend(["--member-ttl".into(), "2".into()]);
        let node = Proc::start(&args, &[], LOGPLEX_ROLES);
        eventually("the node is ready", || ready(node.addr("admin")));
        node
    };
    let (dir_a, dir_b) = (TempDir::new("logplex-a"), TempDir::new("logplex-b"));
    let mut a = start("10.0.0.1:6001", &dir_a);
    let mut b = start("10.0.0.2:6001", &dir_b);
    // Ready means registered.
    let members = logplex_members(&etcd, "/logs");
    let keys: Vec<&str> = members.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "/logs/members/logplex/10.0.0.1:6001",
            "/logs/members/logplex/10.0.0.2:6001"
        ]
    );
    assert_eq!(members[1].1["addresses"]["syslog"], "10.0.0.2:6001");

    // SIGTERM: the node leaves before it exits.
    assert!(a.terminate(), "SIGTERM: a clean exit");
    let keys: Vec<String> = logplex_members(&etcd, "/logs")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, ["/logs/members/logplex/10.0.0.2:6001"]);
    // kill -9: etcd drops it when its lease runs out.
    b.kill9();
    eventually("the killed node's lease expires", || {
        logplex_members(&etcd, "/logs").is_empty()
    });
}

/// `heroku logs` through a control node running apart: the control node
/// signs a session for the live log router that owns the app, and that node
/// (given the same API key) serves it with the lines it ingested.
#[test]
fn heroku_logs_through_a_control_node_reads_the_owning_log_router() {
    let etcd_dir = TempDir::new("etcd");
    let etcd = Etcd::start(&etcd_dir.0);
    let control_dir = TempDir::new("control");
    let control = control_on(&etcd, "/sessions", &control_dir.0);
    let api_addr = control.addr("api");
    create_app(api_addr, KEY, "demo", None);
    let token = app_token(api_addr, "demo");

    let node_dir = TempDir::new("logplex");
    // Its syslog socket is the test's, so the address it advertises is
    // the one it serves.
    let syslog = std::net::TcpListener::bind("127.0.0.1:0").expect("bind syslog");
    let mut args = logplex_args(&etcd.url("/sessions"), &node_dir.0);
    args.extend([
        "--advertise".into(),
        syslog.local_addr().expect("addr").to_string(),
    ]);
    let node = Proc::start_with_socket(
        &args,
        &[("SWITCHYARD_API_KEY", KEY)],
        LOGPLEX_ROLES,
        "syslog-tcp",
        &syslog,
    );
    eventually("the node is ready", || ready(node.addr("admin")));
    send_frame(node.addr("syslog-tcp"), &token, "hello from web.1");

    // The control node sees the new member, then signs sessions for it:
    // the URL is the member's advertised host with its HTTP port.
    let port = node.addr("logplex-http").port();
    let session = || {
        api(
            api_addr,
            KEY,
            "POST",
            "/apps/demo/log-sessions",
            Some(json!({ "lines": 10 })),
        )
    };
    eventually("the control node signs a session", || {
        session().is_ok_and(|(status, _)| status == 201)
    });
    let admin = control.addr("admin");
    let metrics = http(admin, "GET", "admin", "/metrics", &[], b"").expect("metrics");
    assert!(
        metrics
            .text()
            .contains("switchyard_members{kind=\"logplex\"} 1"),
        "the control node counts the live log router"
    );
    eventually("heroku logs shows the line", || {
        crate::heroku_cli::heroku(api_addr, &["logs", "-a", "demo"]).contains("hello from web.1")
    });
    // The control node's own change lines reach the owning log router too.
    let (status, _) = api(
        api_addr,
        KEY,
        "PATCH",
        "/apps/demo/config-vars",
        Some(json!({ "FOO": "bar" })),
    )
    .expect("config");
    assert_eq!(status, 200);
    eventually("heroku logs shows the control node's line", || {
        crate::heroku_cli::heroku(api_addr, &["logs", "-a", "demo"])
            .contains("heroku[api]: Set FOO config vars")
    });
    let (_, session) = session().expect("session");
    let url = session["logplex_url"].as_str().expect("url");
    assert!(
        url.starts_with(&format!("http://127.0.0.1:{port}/sessions/g1.")),
        "{url}"
    );
    // A grant signed with another key does not open.
    let forged = url.replace("/sessions/g1.", "/sessions/g1.x");
    let path = &forged[forged.find("/sessions/").expect("path")..];
    let resp = http(
        node.addr("logplex-http"),
        "GET",
        "localhost",
        path,
        &[],
        b"",
    )
    .expect("get");
    assert_eq!(resp.status, 404);
}

#[test]
fn a_logplex_node_refuses_a_redb_store() {
    let dir = TempDir::new("logplex-redb");
    for store in [Some("redb"), None] {
        let mut args = logplex_args("redb", &dir.0);
        if store.is_none() {
            args.truncate(args.len() - 2);
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(&args)
            .env_remove("SWITCHYARD_STORE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn switchyard");
        let deadline = Instant::now() + patience();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("switchyard logplex --store {store:?} kept running");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
            .expect("read stderr");
        assert!(!status.success(), "{store:?}: {err}");
        assert!(
            err.contains("give --store etcd://HOST:PORT[/prefix]")
                && err.contains("switchyard serve"),
            "{store:?}: the refusal says what to use: {err}"
        );
    }
}
