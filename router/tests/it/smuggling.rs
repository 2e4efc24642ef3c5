//! Request smuggling: raw bytes in, and what the dyno receives — never two
//! requests for one. Then Heroku's size limits and the head deadline
//! (slowloris) through the real listener, and H22.
//!
//! Each hostile sequence ends with a second request (`GET /smuggled`) that
//! a confused parser somewhere along the path could take for a request of
//! its own. The router must answer the client once and either refuse the
//! request (the dyno sees nothing) or deliver exactly one request whose
//! body carries the hidden bytes verbatim.

use std::time::Duration;

use router::{AppSettings, AppSpec, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::dyno::Received;
use crate::support::switchyard::Running;
use crate::support::{normalize, Behaviour, Dyno, Switchyard};

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: demo.localhost\r\n\r\n";

/// What one client connection got back.
struct Outcome {
    /// Status of every response on the connection, in order.
    statuses: Vec<u16>,
    /// Everything the router sent.
    text: String,
}

/// Sends `bytes` on one connection and reads until the router closes it
/// (a kept-alive connection closes at the short head deadline below).
async fn send(sy: &Running, bytes: &[u8]) -> Outcome {
    let mut s = TcpStream::connect(sy.addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the router never closed the connection");
    let text = String::from_utf8_lossy(&out).into_owned();
    let statuses = text
        .split("\r\n")
        .filter_map(|l| l.strip_prefix("HTTP/1.1 "))
        .filter_map(|l| l.get(..3)?.parse().ok())
        .collect();
    Outcome { statuses, text }
}

async fn router(dyno: &Dyno, settings: AppSettings) -> Running {
    Switchyard::new()
        .head_timeout(Duration::from_secs(2))
        .app(
            AppSpec::new("demo")
                .settings(settings)
                .dyno("web.1", dyno.addr),
        )
        .start()
        .await
}

fn assert_not_smuggled(received: &[Received]) {
    assert!(
        received.len() <= 1,
        "the dyno got {} requests",
        received.len()
    );
    for r in received {
        assert!(
            !r.request_line().contains("/smuggled"),
            "the dyno got the smuggled request: {}",
            r.head
        );
    }
}

/// A request the router must refuse with `status`, logging H26 `cause`
/// (`None`: refused by the parser before any app is known, so no line).
async fn refused(request: String, status: u16, cause: Option<&str>) {
    let dyno = Dyno::start(Behaviour::EchoHead).await;
    let sy = router(&dyno, AppSettings::default()).await;
    let out = send(&sy, request.as_bytes()).await;
    assert_eq!(out.statuses, [status], "{request:?} → {}", out.text);
    assert!(dyno.requests().is_empty(), "{request:?} reached the dyno");
    if let Some(cause) = cause {
        let lines = sy.wait_lines(1).await;
        let line = normalize(&lines[0]);
        assert!(
            line.contains("code=H26") && line.contains(&format!("cause=\"{cause}\"")),
            "{line}"
        );
        assert!(line.contains(&format!("status={status}")), "{line}");
    }
}

#[tokio::test]
async fn transfer_encoding_wins_over_content_length_and_the_connection_closes() {
    // RFC 9112 §6.1, and Heroku: with both, chunked framing wins, the
    // Content-Length is dropped, and the connection is closed after the
    // response, so whatever followed the chunked body is never read.
    for request in [
        format!("POST / HTTP/1.1\r\nHost: demo.localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"),
        format!("POST / HTTP/1.1\r\nHost: demo.localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n{SMUGGLED}"),
    ] {
        let dyno = Dyno::start(Behaviour::EchoHead).await;
        let sy = router(&dyno, AppSettings::default()).await;
        let out = send(&sy, request.as_bytes()).await;
        assert_eq!(out.statuses, [200], "{request:?} → {}", out.text);
        let got = dyno.requests();
        assert_not_smuggled(&got);
        assert_eq!(got.len(), 1);
        assert!(got[0].body.is_empty(), "{:?}", got[0].body);
        assert_eq!(got[0].header("content-length"), None, "{}", got[0].head);
    }
    // With a non-chunked coding as well, the router refuses it outright.
    refused(
        format!("POST / HTTP/1.1\r\nHost: demo.localhost\r\nContent-Length: 5\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"),
        400,
        Some("unsupported transfer-encoding"),
    )
    .await;
}

#[tokio::test]
async fn conflicting_content_lengths_are_refused() {
    let body = format!("x{SMUGGLED}");
    refused(
        format!("POST / HTTP/1.1\r\nHost: demo.localhost\r\nContent-Length: 1\r\nContent-Length: {}\r\n\r\n{body}", body.len()),
        400,
        None,
    )
    .await;
    refused(
        format!(
            "POST / HTTP/1.1\r\nHost: demo.localhost\r\nContent-Length: 1, {}\r\n\r\n{body}",
            body.len()
        ),
        400,
        None,
    )
    .await;
    refused(
        format!("POST / HTTP/1.1\r\nHost: demo.localhost\r\nContent-Length: +1\r\n\r\n{body}"),
        400,
        None,
    )
    .await;
}

#[tokio::test]
async fn transfer_encodings_other_than_chunked_are_refused() {
    // The parser refuses a last coding other than chunked; the router
    // refuses any other coding before it, and a repeated header.
    for (te, cause) in [
        ("gzip", None),
        ("chunked, identity", None),
        ("identity", None),
        ("xchunked", None),
        ("gzip, chunked", Some("unsupported transfer-encoding")),
        (
            "chunked\r\nTransfer-Encoding: chunked",
            Some("unsupported transfer-encoding"),
        ),
    ] {
        refused(
            format!("POST / HTTP/1.1\r\nHost: demo.localhost\r\nTransfer-Encoding: {te}\r\n\r\n0\r\n\r\n{SMUGGLED}"),
            400,
            cause,
        )
        .await;
    }
}

#[tokio::test]
async fn malformed_heads_are_refused_by_the_parser() {
    // obs-fold: a continuation line that would hide a header from one
    // parser and not another.
    refused(
        format!("POST / HTTP/1.1\r\nHost: demo.localhost\r\nX-Note: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n{SMUGGLED}"),
        400,
        None,
    )
    .await;
    // A space before the colon: `Transfer-Encoding : chunked`.
    refused(
        format!("POST / HTTP/1.1\r\nHost: demo.localhost\r\nTransfer-Encoding : chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n{SMUGGLED}"),
        400,
        None,
    )
    .await;
    // A space inside a header name.
    refused(
        format!("POST / HTTP/1.1\r\nHost: demo.localhost\r\nContent Length: 4\r\n\r\n{SMUGGLED}"),
        400,
        None,
    )
    .await;
    // A bare CR inside a value, and a NUL.
    refused(
        format!("GET / HTTP/1.1\r\nHost: demo.localhost\r\nX-A: a\rb\r\n\r\n{SMUGGLED}"),
        400,
        None,
    )
    .await;
    refused(
        format!("GET / HTTP/1.1\r\nHost: demo.localhost\r\nX-A: a\0b\r\n\r\n{SMUGGLED}"),
        400,
        None,
    )
    .await;
    // Transfer-Encoding is not HTTP/1.0.
    refused(
        format!("POST / HTTP/1.0\r\nHost: demo.localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"),
        400,
        None,
    )
    .await;
}

#[tokio::test]
async fn bare_lf_line_endings_deliver_one_request_at_most() {
    // hyper's parser reads a head with bare LF line endings; whatever it
    // makes of it, the dyno gets one well-formed request for the first and
    // the router's own framing for the rest.
    let dyno = Dyno::start(Behaviour::EchoHead).await;
    let sy = router(&dyno, AppSettings::default()).await;
    let out = send(
        &sy,
        format!(
            "POST / HTTP/1.1\nHost: demo.localhost\nContent-Length: {}\nConnection: close\n\n{SMUGGLED}",
            SMUGGLED.len()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(out.statuses.len(), 1, "{}", out.text);
    let got = dyno.requests();
    assert_not_smuggled(&got);
    if out.statuses == [200] {
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, SMUGGLED.as_bytes());
        assert!(got[0].head.contains("\r\n"), "re-framed with CRLF");
    } else {
        assert_eq!(out.statuses, [400], "{}", out.text);
        assert!(got.is_empty());
    }
}

#[tokio::test]
async fn malformed_chunk_sizes_end_the_request() {
    for size in ["zz", "-1", "0x5", "ffffffffffffffffffff", "5\n", "", " 5"] {
        let dyno = Dyno::start(Behaviour::EchoHead).await;
        let sy = router(&dyno, AppSettings::default()).await;
        let request = format!(
            "POST / HTTP/1.1\r\nHost: demo.localhost\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nhello\r\n0\r\n\r\n{SMUGGLED}"
        );
        let out = send(&sy, request.as_bytes()).await;
        // The head was fine, so the request went on to a dyno; the body
        // broke on the way. The client gets one 400 (H26 bad chunk) and the
        // dyno never a complete request.
        assert_eq!(out.statuses, [400], "chunk size {size:?} → {}", out.text);
        assert_not_smuggled(&dyno.requests());
        assert!(dyno.requests().is_empty(), "chunk size {size:?}");
        let lines = sy.wait_lines(1).await;
        assert!(
            lines[0].contains("code=H26") && lines[0].contains("cause=\"bad chunk\""),
            "{}",
            lines[0]
        );
    }
}

#[tokio::test]
async fn a_request_hidden_in_a_body_stays_in_the_body() {
    let dyno = Dyno::start(Behaviour::EchoHead).await;
    let sy = router(&dyno, AppSettings::default()).await;
    // By Content-Length.
    let out = send(
        &sy,
        format!(
            "POST /upload HTTP/1.1\r\nHost: demo.localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{SMUGGLED}",
            SMUGGLED.len()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(out.statuses, [200], "{}", out.text);
    // Chunked, the hidden request split across chunks.
    let (a, b) = SMUGGLED.split_at(10);
    let out = send(
        &sy,
        format!(
            "POST /upload HTTP/1.1\r\nHost: demo.localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(out.statuses, [200], "{}", out.text);
    let got = dyno.requests();
    assert_eq!(got.len(), 2, "one request per connection");
    for r in &got {
        assert_eq!(r.request_line(), "POST /upload HTTP/1.1");
        assert_eq!(r.body, SMUGGLED.as_bytes());
    }
}

#[tokio::test]
async fn pipelined_requests_are_counted_one_for_one() {
    // The control case: two honest requests on one connection are two.
    let dyno = Dyno::start(Behaviour::EchoHead).await;
    let sy = router(&dyno, AppSettings::default()).await;
    let out = send(
        &sy,
        b"GET /a HTTP/1.1\r\nHost: demo.localhost\r\n\r\nGET /b HTTP/1.1\r\nHost: demo.localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(out.statuses, [200, 200], "{}", out.text);
    let lines: Vec<String> = dyno
        .requests()
        .iter()
        .map(|r| r.request_line().to_string())
        .collect();
    assert_eq!(lines, ["GET /a HTTP/1.1", "GET /b HTTP/1.1"]);
}

#[tokio::test]
async fn heroku_size_limits_through_the_listener() {
    let dyno = Dyno::start(Behaviour::Respond("ok")).await;
    let sy = router(&dyno, AppSettings::default()).await;
    let get = |extra: String, target: String| {
        format!("GET {target} HTTP/1.1\r\nHost: demo.localhost\r\n{extra}Connection: close\r\n\r\n")
    };
    // `GET <target> HTTP/1.1` is 13 bytes plus the target: 8192 in all passes.
    let target = |n: usize| format!("/{}", "a".repeat(n - 1));
    let cases = [
        (get(String::new(), target(8179)), 200, None),
        (
            get(String::new(), target(8180)),
            414,
            Some("request line too long"),
        ),
        (
            get(format!("X-Big: {}\r\n", "v".repeat(8192)), "/".into()),
            200,
            None,
        ),
        (
            get(format!("X-Big: {}\r\n", "v".repeat(8193)), "/".into()),
            431,
            Some("header value too long"),
        ),
        (
            get(format!("{}: v\r\n", "n".repeat(1000)), "/".into()),
            200,
            None,
        ),
        (
            get(format!("{}: v\r\n", "n".repeat(1001)), "/".into()),
            431,
            Some("header name too long"),
        ),
    ];
    let mut logged = 0;
    for (request, status, cause) in cases {
        let out = send(&sy, request.as_bytes()).await;
        assert_eq!(out.statuses, [status], "{cause:?}: {}", out.text);
        logged += 1;
        let lines = sy.wait_lines(logged).await;
        let line = &lines[logged - 1];
        assert!(line.contains(&format!("status={status}")), "{line}");
        if let Some(cause) = cause {
            assert!(
                line.contains("code=H26") && line.contains(&format!("cause=\"{cause}\"")),
                "{line}"
            );
        }
    }
    assert_eq!(dyno.requests().len(), 3, "only the requests within limits");
}

#[tokio::test]
async fn at_most_1000_headers() {
    let dyno = Dyno::start(Behaviour::Respond("ok")).await;
    let sy = router(&dyno, AppSettings::default()).await;
    let many = |n: usize| {
        // Host and Connection are two of the n.
        let mut r = String::from("GET / HTTP/1.1\r\nHost: demo.localhost\r\nConnection: close\r\n");
        for i in 0..n - 2 {
            r.push_str(&format!("X-{i}: v\r\n"));
        }
        r.push_str("\r\n");
        r
    };
    let o = send(&sy, many(1000).as_bytes()).await;
    assert_eq!(o.statuses, [200], "{}", o.text);
    // One more is refused by the parser itself, before any app is known.
    assert_eq!(send(&sy, many(1001).as_bytes()).await.statuses, [431]);
    assert_eq!(dyno.requests().len(), 1);
    // A lower per-app limit is the router's check, and is logged.
    let dyno = Dyno::start(Behaviour::Respond("ok")).await;
    let settings = AppSettings {
        limits: Limits {
            headers: 10,
            ..Limits::default()
        },
        ..AppSettings::default()
    };
    let sy = router(&dyno, settings).await;
    assert_eq!(send(&sy, many(11).as_bytes()).await.statuses, [431]);
    let lines = sy.wait_lines(1).await;
    assert!(
        lines[0].contains("cause=\"too many headers\""),
        "{}",
        lines[0]
    );
    assert!(dyno.requests().is_empty());
}

#[tokio::test]
async fn max_body_is_enforced_per_app() {
    let dyno = Dyno::start(Behaviour::EchoHead).await;
    let settings = AppSettings {
        limits: Limits {
            max_body: Some(16),
            ..Limits::default()
        },
        ..AppSettings::default()
    };
    let sy = router(&dyno, settings).await;
    let by_length = format!(
        "POST / HTTP/1.1\r\nHost: demo.localhost\r\nContent-Length: 17\r\nConnection: close\r\n\r\n{}",
        "x".repeat(17)
    );
    assert_eq!(send(&sy, by_length.as_bytes()).await.statuses, [413]);
    assert!(dyno.requests().is_empty());
    let lines = sy.wait_lines(1).await;
    assert!(
        lines[0].contains("cause=\"request body too large\""),
        "{}",
        lines[0]
    );
    // A chunked body has no length up front; it is cut where it passes the limit.
    let chunked = "POST / HTTP/1.1\r\nHost: demo.localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n10\r\n0123456789abcdef\r\n1\r\nx\r\n0\r\n\r\n";
    assert_eq!(send(&sy, chunked.as_bytes()).await.statuses, [413]);
    assert!(
        dyno.requests().is_empty(),
        "no complete request reached the dyno"
    );
}

#[tokio::test]
async fn slowloris_is_cut_at_the_head_deadline() {
    let dyno = Dyno::start(Behaviour::Respond("ok")).await;
    let sy = Switchyard::new()
        .head_timeout(Duration::from_millis(500))
        .app(AppSpec::new("demo").dyno("web.1", dyno.addr))
        .start()
        .await;
    // Three ways to hold a connection without finishing a head: say
    // nothing, start an HTTP/2 preface and stop, and trickle a head one
    // byte at a time (each byte well within any per-read timer).
    let mut silent = TcpStream::connect(sy.addr).await.expect("connect");
    let mut preface = TcpStream::connect(sy.addr).await.expect("connect");
    preface
        .write_all(b"PRI * HTTP/2.0\r\n")
        .await
        .expect("write");
    let trickle = TcpStream::connect(sy.addr).await.expect("connect");
    let (mut rd, mut wr) = trickle.into_split();
    let writer = tokio::spawn(async move {
        let head = b"GET / HTTP/1.1\r\nHost: demo.localhost\r\nX-Slow: ";
        for b in head.iter().chain(std::iter::repeat(&b'z')) {
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    for s in [&mut silent, &mut preface] {
        let mut buf = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await;
        assert!(
            closed.is_ok(),
            "an idle connection outlived the head deadline"
        );
    }
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), rd.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "a trickled head outlived the head deadline");
    writer.abort();
    assert!(dyno.requests().is_empty());
}

#[tokio::test]
async fn h22_client_connections_per_app_are_bounded() {
    let dyno = Dyno::start(Behaviour::Respond("ok")).await;
    let settings = AppSettings {
        limits: Limits {
            max_client_connections: Some(2),
            ..Limits::default()
        },
        ..AppSettings::default()
    };
    let sy = Switchyard::new()
        .app(
            AppSpec::new("demo")
                .settings(settings)
                .dyno("web.1", dyno.addr),
        )
        .start()
        .await;
    let keep_alive = b"GET / HTTP/1.1\r\nHost: demo.localhost\r\n\r\n";
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(sy.addr).await.expect("connect");
        s.write_all(keep_alive).await.expect("write");
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        open.push(s);
    }
    let app = sy
        .routes
        .load()
        .lookup("demo.localhost")
        .cloned()
        .expect("app");
    assert_eq!(app.live.clients(), 2);
    // A third connection is refused and closed.
    let out = send(&sy, keep_alive).await;
    assert_eq!(out.statuses, [503], "{}", out.text);
    let lines = sy.wait_lines(3).await;
    let h22: Vec<&String> = lines.iter().filter(|l| l.contains("code=H22")).collect();
    assert_eq!(h22.len(), 1, "{lines:?}");
    assert!(
        normalize(h22[0]).starts_with(r#"at=error code=H22 desc="Connection limit reached" method=GET path="/" host=demo.localhost"#),
        "{}",
        h22[0]
    );
    assert!(
        h22[0].contains("dyno= connect= service= status=503"),
        "{}",
        h22[0]
    );
    // Closing one frees its place.
    drop(open.pop());
    crate::eventually("app.live.clients() == 1", || app.live.clients() == 1).await;
    let out = send(
        &sy,
        b"GET / HTTP/1.1\r\nHost: demo.localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(out.statuses, [200], "{}", out.text);
    crate::eventually("app.live.clients() == 1", || app.live.clients() == 1).await;
}
