//! Hostile input on the control API's real listener: oversized bodies, bad
//! JSON, hostile names and paths. Each ends in a clear 4xx with Heroku's
//! error body — never a 5xx, a hang or a panic — and the API keeps serving.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use control::{Control, ControlSettings, MemoryStore};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const KEY: &str = "hostile-test-key-0123456789";

async fn start() -> SocketAddr {
    let routes = Arc::new(router::Routes::new(
        router::RouteTable::builder().build().expect("table"),
    ));
    let control = Control::open(
        Arc::new(MemoryStore::new()),
        ControlSettings::default(),
        Some(routes),
        None,
    )
    .expect("open");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(control::api::serve(
        listener,
        control,
        KEY.into(),
        std::future::pending(),
    ));
    addr
}

/// One request over raw TCP (so paths and bodies are exactly as given);
/// returns the status and the JSON body (`Null` if none).
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    key: Option<&str>,
) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: api\r\nAccept: application/vnd.heroku+json; version=3\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(k) = key {
        head.push_str(&format!("Authorization: Bearer {k}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.expect("write");
    // The server may answer before reading all of a large body.
    let _ = s.write_all(body).await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "{method} {path}: no answer");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

async fn authed(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    call(addr, method, path, body, Some(KEY)).await
}

/// A 4xx with Heroku's `{"id", "message"}` body.
fn assert_heroku_4xx(what: &str, (status, body): &(u16, Value), want: &[u16]) {
    assert!(
        want.contains(status),
        "{what}: status {status}, body {body}"
    );
    assert!(body["id"].is_string(), "{what}: no error id in {body}");
    assert!(body["message"].is_string(), "{what}: no message in {body}");
}

async fn still_serving(addr: SocketAddr) {
    let (status, _) = call(addr, "GET", "/healthz", b"", None).await;
    assert_eq!(status, 200);
    let (status, body) = authed(addr, "GET", "/apps", b"").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let addr = start().await;
    // Beyond the 2 MiB body limit: a 4xx, not a 5xx or an exhausted server.
    let mut big = br#"{"name":"big","pad":""#.to_vec();
    big.extend(std::iter::repeat_n(b'x', 3 * 1024 * 1024));
    big.extend_from_slice(br#""}"#);
    let r = authed(addr, "POST", "/apps", &big).await;
    assert_heroku_4xx("3 MiB body", &r, &[413]);
    assert_eq!(r.1["id"], "request_too_large", "{r:?}");
    still_serving(addr).await;
}

#[tokio::test]
async fn bad_json_is_a_clear_400_or_422() {
    let addr = start().await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        ("truncated", br#"{"name": [1, 2"#.to_vec(), &[400]),
        ("not an object", b"[]".to_vec(), &[400, 422]),
        ("wrong type", br#"{"name": 5}"#.to_vec(), &[400, 422]),
        (
            "not UTF-8",
            b"{\"name\": \"\xff\xfe\"}".to_vec(),
            &[400, 422],
        ),
        (
            "trailing garbage",
            br#"{"name":"ok-name"} x"#.to_vec(),
            &[400],
        ),
        ("nested 100 000 deep", deep.into_bytes(), &[400, 422]),
        ("NUL bytes", b"\0\0\0\0".to_vec(), &[400]),
    ];
    for (what, body, want) in cases {
        let r = authed(addr, "POST", "/apps", &body).await;
        assert_heroku_4xx(what, &r, want);
    }
    still_serving(addr).await;
}

#[tokio::test]
async fn hostile_names_and_values_are_refused() {
    let addr = start().await;
    let (status, body) = authed(addr, "POST", "/apps", br#"{"name":"demo"}"#).await;
    assert_eq!(status, 201, "{body}");
    let long = "a".repeat(10_000);
    let cases: Vec<(&str, &str, &str, String)> = vec![
        (
            "POST",
            "/apps",
            "path traversal name",
            r#"{"name":"../../etc/passwd"}"#.into(),
        ),
        (
            "POST",
            "/apps",
            "NUL in name",
            r#"{"name":"de\u0000mo"}"#.into(),
        ),
        (
            "POST",
            "/apps",
            "unicode name",
            r#"{"name":"dém0-app"}"#.into(),
        ),
        (
            "POST",
            "/apps",
            "10 000-byte name",
            format!(r#"{{"name":"{long}"}}"#),
        ),
        (
            "PATCH",
            "/apps/demo",
            "rename to garbage",
            r#"{"name":"DROP TABLE"}"#.into(),
        ),
        (
            "POST",
            "/apps/demo/domains",
            "double wildcard",
            r#"{"hostname":"*.*.example.com"}"#.into(),
        ),
        (
            "POST",
            "/apps/demo/domains",
            "IP address",
            r#"{"hostname":"127.0.0.1"}"#.into(),
        ),
        (
            "POST",
            "/apps/demo/domains",
            "empty label",
            r#"{"hostname":"a..example.com"}"#.into(),
        ),
        (
            "POST",
            "/apps/demo/domains",
            "huge hostname",
            format!(r#"{{"hostname":"{long}.com"}}"#),
        ),
        (
            "PUT",
            "/apps/demo/dynos/web.1",
            "port 0",
            r#"{"address":"127.0.0.1:0"}"#.into(),
        ),
        (
            "PUT",
            "/apps/demo/dynos/web.1",
            "not an address",
            r#"{"address":"localhost"}"#.into(),
        ),
        (
            "PUT",
            "/apps/demo/dynos/web.1",
            "unknown state",
            r#"{"address":"127.0.0.1:5001","state":"pwned"}"#.into(),
        ),
        (
            "POST",
            "/apps/demo/log-drains",
            "file URL",
            r#"{"url":"file:///etc/passwd"}"#.into(),
        ),
        (
            "POST",
            "/apps/demo/log-drains",
            "syslog without port",
            r#"{"url":"syslog://logs.example.com"}"#.into(),
        ),
        (
            "PATCH",
            "/apps/demo/config-vars",
            "bad key",
            r#"{"A=B":"x"}"#.into(),
        ),
        (
            "PATCH",
            "/apps/demo/formation",
            "huge quantity",
            r#"{"updates":[{"type":"web","quantity":99999999999}]}"#.into(),
        ),
        (
            "PATCH",
            "/apps/demo/router-settings",
            "zero timer",
            r#"{"connect_timeout_ms":0}"#.into(),
        ),
    ];
    for (method, path, what, body) in cases {
        let r = authed(addr, method, path, body.as_bytes()).await;
        assert_heroku_4xx(what, &r, &[400, 404, 422]);
    }
    // The app kept its name through all of it.
    let (status, body) = authed(addr, "GET", "/apps/demo", b"").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "demo");
}

#[tokio::test]
async fn hostile_paths_are_404_or_400() {
    let addr = start().await;
    let long = format!("/apps/{}", "x".repeat(8000));
    for path in [
        "/apps/..%2f..%2fetc%2fpasswd",
        "/apps/%00",
        "/apps/demo/../../etc/passwd",
        "/apps/%ff%fe/domains",
        "/apps/demo/dynos/..%2fweb.1",
        long.as_str(),
        "/nope",
    ] {
        let r = authed(addr, "GET", path, b"").await;
        assert_heroku_4xx(path, &r, &[400, 404]);
    }
    still_serving(addr).await;
}

#[tokio::test]
async fn without_the_key_nothing_is_read() {
    let addr = start().await;
    for key in [None, Some(""), Some("x"), Some(&KEY[..KEY.len() - 1])] {
        let r = call(addr, "GET", "/apps", b"", key).await;
        assert_heroku_4xx("bad key", &r, &[401]);
    }
}
