//! Router lines reach the app's log stream: a live session shows them as
//! requests flow, and a syslog drain added through the API delivers them to
//! a real TCP syslog receiver as octet-counted RFC 5424 frames.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::mpsc;

use serde_json::json;

use crate::support::{api, create_app, eventually, serve, via_router, Dyno, SyslogSink, TempDir};

#[test]
fn router_lines_reach_a_live_tail_and_a_syslog_drain() {
    let dir = TempDir::new("log-flow");
    let key = "log-flow-test-key-0123456789";
    let sy = serve(&dir.0, None, Some(key));
    let api_addr = sy.addr("api");
    let router = sy.addr("router-http");
    let dyno = Dyno::start("ok");
    create_app(api_addr, key, "demo", Some(dyno.addr));

    // A real syslog receiver: collect every byte it is sent.
    let mut sink = SyslogSink::start();
    let drain_url = sink.url();
    let (status, body) = api(
        api_addr,
        key,
        "POST",
        "/apps/demo/log-drains",
        Some(json!({ "url": drain_url })),
    )
    .expect("drain");
    assert_eq!(status, 201, "{body}");
    let drain_token = body["token"].as_str().expect("drain token").to_string();
    assert!(drain_token.starts_with("d."), "{body}");

    // A live tail (plain text) through a log session.
    let (status, body) = api(
        api_addr,
        key,
        "POST",
        "/apps/demo/log-sessions",
        Some(json!({ "tail": true })),
    )
    .expect("session");
    assert_eq!(status, 201, "{body}");
    let url = url::Url::parse(body["logplex_url"].as_str().expect("url")).expect("parse url");
    let mut tail = TcpStream::connect((url.host_str().expect("host"), url.port().expect("port")))
        .expect("connect tail");
    write!(
        tail,
        "GET {}?{} HTTP/1.1\r\nHost: logplex\r\nAccept: text/plain\r\n\r\n",
        url.path(),
        url.query().unwrap_or("")
    )
    .expect("request tail");
    let (lines_tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(tail).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    // Requests flow until both the tail and the drain have shown a router line.
    let mut tail_saw = false;
    let mut drained = String::new();
    eventually("router lines in the tail and the drain", || {
        assert_eq!(
            via_router(router, "demo.localhost").expect("router").status,
            200
        );
        while let Ok(line) = lines.recv_timeout(std::time::Duration::from_millis(50)) {
            if line.contains("heroku[router]: at=info method=GET path=\"/\" host=demo.localhost") {
                tail_saw = true;
            }
        }
        drained = sink.text();
        tail_saw && drained.contains(&format!(" {drain_token} heroku router - - at=info method=GET path=\"/\" host=demo.localhost"))
    });
    // Octet counting: every frame starts with its length and a space.
    let (len, rest) = drained.split_once(' ').expect("framed");
    let len: usize = len.parse().expect("octet count");
    assert!(rest.len() >= len && rest.starts_with('<'), "{drained}");
}
