//! Hostile input on logplex's real listeners: giant and negative octet
//! counts, binary garbage, frames that never end, oversized and
//! gzip-bomb `POST /logs` bodies, and floods of connections and datagrams.
//! Every bad frame is counted, nothing panics, and an honest sender is
//! still served afterwards.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use logplex::{IngestStats, Logplex, LogplexSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::support::{eventually, App, Plex};

const APP: &str = "app-1";
const TOKEN: &str = "t.11111111-2222-3333-4444-555555555555";

/// A logplex with one app, `APP`, whose token is `TOKEN`.
async fn start(settings: LogplexSettings) -> Plex {
    let mut app = App::new("demo");
    app.id = APP.into();
    app.app_token = TOKEN.into();
    Plex::start(settings, &[&app]).await
}

fn line(msg: &str) -> String {
    format!("<190>1 2026-11-23T20:00:00.000000+00:00 host {TOKEN} web.1 - - {msg}")
}

fn framed(msg: &str) -> String {
    let l = line(msg);
    format!("{} {l}", l.len())
}

async fn send_tcp(addr: SocketAddr, bytes: &[u8]) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    s.shutdown().await.expect("shutdown");
}

/// Waits until `cond` holds on the ingest counters; returns them.
async fn stats_until(lp: &Logplex, what: &str, cond: impl Fn(&IngestStats) -> bool) -> IngestStats {
    eventually(what, || cond(&lp.ingest_stats())).await;
    lp.ingest_stats()
}

#[tokio::test]
async fn giant_negative_and_unterminated_octet_counts_are_counted_and_skipped() {
    let settings = LogplexSettings {
        max_frame_bytes: 1024,
        ..LogplexSettings::default()
    };
    let r = start(settings).await;
    // A count far beyond the limit: the announced bytes are skipped, and
    // the honest frame after them is read.
    let mut giant = b"999999999 ".to_vec();
    giant.extend_from_slice(&[b'x'; 4096]);
    send_tcp(r.tcp, &giant).await;
    // A count with more digits than any frame could have is a line; so is a
    // negative one; neither is syslog.
    send_tcp(r.tcp, b"12345678901234567890 <13>1 - h t.x p - - m\n").await;
    send_tcp(r.tcp, format!("-5 {}\n", line("neg")).as_bytes()).await;
    // An octet-counted frame the stream ends inside.
    send_tcp(r.tcp, b"500 <13>1 - host t.x web.1 - - cut off").await;
    let s = stats_until(&r.logplex, "four malformed frames", |s| s.malformed >= 4).await;
    assert_eq!(s.malformed, 4, "{s:?}");
    assert_eq!(s.published, 0, "{s:?}");
    // The same listener still serves an honest sender.
    send_tcp(
        r.tcp,
        format!("{}{}", framed("one"), framed("two")).as_bytes(),
    )
    .await;
    let s = stats_until(&r.logplex, "two lines", |s| s.published == 2).await;
    assert_eq!(s.malformed, 4, "{s:?}");
    let recent = r.logplex.recent(APP, 10);
    assert_eq!(recent.len(), 2, "{recent:?}");
}

#[tokio::test]
async fn binary_garbage_is_counted_and_memory_stays_bounded() {
    let settings = LogplexSettings {
        max_frame_bytes: 1024,
        ..LogplexSettings::default()
    };
    let r = start(settings).await;
    // 4 MiB of pseudo-random bytes on one connection: no frame of it is
    // syslog, and none may be held beyond the frame limit.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let garbage: Vec<u8> = (0..4 * 1024 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    send_tcp(r.tcp, &garbage).await;
    let s = stats_until(&r.logplex, "the whole stream read", |s| s.received > 1000).await;
    assert_eq!(s.published, 0, "garbage became lines: {s:?}");
    // Over UDP too: one datagram is one frame.
    let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    for chunk in garbage.chunks(1200).take(50) {
        udp.send_to(chunk, r.udp).await.expect("send");
    }
    // Datagrams may be lost; the honest one after them is retried until seen.
    let honest = line("after garbage");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while r.logplex.ingest_stats().published == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "UDP line never arrived"
        );
        udp.send_to(honest.as_bytes(), r.udp).await.expect("send");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = r.logplex.ingest_stats();
    assert_eq!(
        s.received,
        s.published + s.malformed + s.unknown_token,
        "{s:?}"
    );
}

#[tokio::test]
async fn a_flood_of_connections_loses_nothing_it_accepted() {
    let r = start(LogplexSettings::default()).await;
    // 300 senders at once, each two frames in one write, half of them
    // holding the connection open afterwards.
    let mut held = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..300 {
        let addr = r.tcp;
        let frames = format!(
            "{}{}",
            framed(&format!("flood {i} a")),
            framed(&format!("flood {i} b"))
        );
        tasks.spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(frames.as_bytes()).await.expect("write");
            (i % 2 == 0).then_some(s)
        });
    }
    while let Some(s) = tasks.join_next().await {
        held.extend(s.expect("task"));
    }
    let s = stats_until(&r.logplex, "600 lines", |s| s.published == 600).await;
    assert_eq!(s.malformed, 0, "{s:?}");
    // Every line is in the history exactly once, each sender's in the order
    // it sent them (senders race each other, so there is no order across
    // them).
    let got: Vec<String> = r
        .logplex
        .recent(APP, 5000)
        .iter()
        .map(|l| {
            l.rsplit_once(": ")
                .map_or(l.clone(), |(_, m)| m.to_string())
        })
        .collect();
    assert_eq!(got.len(), 600, "{got:?}");
    for i in 0..300 {
        let at = |m: String| got.iter().position(|g| *g == m);
        let (a, b) = (at(format!("flood {i} a")), at(format!("flood {i} b")));
        assert!(
            matches!((a, b), (Some(a), Some(b)) if a < b),
            "sender {i}: {a:?} {b:?}"
        );
    }
    drop(held);
}

#[tokio::test]
async fn syslog_connections_past_the_limit_are_closed_and_counted_out() {
    let r = start(LogplexSettings {
        max_stream_connections: 3,
        ..LogplexSettings::default()
    })
    .await;
    let mut held = Vec::new();
    for i in 0..3 {
        let mut s = TcpStream::connect(r.tcp).await.expect("connect");
        s.write_all(framed(&format!("held {i}")).as_bytes())
            .await
            .expect("write");
        held.push(s);
    }
    stats_until(&r.logplex, "3 held lines", |s| s.published == 3).await;
    // The fourth is closed at once; its line goes nowhere.
    let mut extra = TcpStream::connect(r.tcp).await.expect("connect");
    let _ = extra.write_all(framed("over the limit").as_bytes()).await;
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(10), extra.read(&mut buf))
        .await
        .expect("logplex closes the connection");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    assert_eq!(r.logplex.ingest_stats().published, 3);
    // A freed place is taken again, once the server has seen the close.
    drop(held.pop());
    eventually("the server has seen the close", || {
        r.logplex.connection_stats(logplex::Transport::Tcp).open == 2
    })
    .await;
    let mut s = TcpStream::connect(r.tcp).await.expect("connect");
    s.write_all(framed("after a close").as_bytes())
        .await
        .expect("write");
    stats_until(&r.logplex, "the line after a close", |s| s.published == 4).await;
    held.push(s);
    let conns = r.logplex.connection_stats(logplex::Transport::Tcp);
    assert_eq!((conns.open, conns.refused), (3, 1), "{conns:?}");
    let recent = r.logplex.recent(APP, 10);
    assert!(
        !recent.iter().any(|l| l.contains("over the limit")),
        "{recent:?}"
    );
}

async fn post(addr: SocketAddr, headers: &str, body: &[u8]) -> u16 {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /logs HTTP/1.1\r\nHost: logs\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("write");
    // The server may answer (413) before reading all of a large body.
    let _ = s.write_all(body).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn hostile_logplex_bodies_are_refused() {
    let settings = LogplexSettings {
        max_body_bytes: 64 * 1024,
        ..LogplexSettings::default()
    };
    let r = start(settings).await;
    use base64::Engine as _;
    let auth = format!(
        "Authorization: Basic {}\r\nContent-Type: application/logplex-1\r\n",
        base64::engine::general_purpose::STANDARD.encode(format!("token:{TOKEN}"))
    );
    // Too large as sent.
    assert_eq!(post(r.http, &auth, &vec![b'1'; 65 * 1024]).await, 413);
    // A gzip bomb: 100 KiB of zeros compress to a few hundred bytes.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![0u8; 100 * 1024]).expect("gzip");
    let bomb = gz.finish().expect("gzip");
    assert!(bomb.len() < 2048);
    let gz_headers = format!("{auth}Content-Encoding: gzip\r\n");
    assert_eq!(post(r.http, &gz_headers, &bomb).await, 413);
    // Not gzip at all.
    assert_eq!(post(r.http, &gz_headers, b"not gzip").await, 400);
    // Malformed frames: a negative count, a count past the body, garbage.
    for body in [
        b"-5 hello".to_vec(),
        b"999 short".to_vec(),
        b"\xff\xfe\x00garbage".to_vec(),
    ] {
        assert_eq!(post(r.http, &auth, &body).await, 400, "{body:?}");
    }
    // No token, no entry.
    assert_eq!(
        post(
            r.http,
            "Content-Type: application/logplex-1\r\n",
            framed("x").as_bytes()
        )
        .await,
        401
    );
    // And an honest body still goes through.
    assert_eq!(post(r.http, &auth, framed("ok").as_bytes()).await, 204);
    stats_until(&r.logplex, "the honest line", |s| s.published == 1).await;
}

/// Sends a `POST /logs` head announcing `announced` body bytes and then only
/// `body`; with `half_close` the sender then shuts its write side. Returns
/// everything the server wrote until it closed.
async fn partial_post(http: SocketAddr, announced: usize, body: &[u8], half_close: bool) -> String {
    use base64::Engine as _;
    let mut s = TcpStream::connect(http).await.expect("connect");
    let head = format!(
        "POST /logs HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {}\r\n\
         Content-Type: application/logplex-1\r\nContent-Length: {announced}\r\n\r\n",
        base64::engine::general_purpose::STANDARD.encode(format!("token:{TOKEN}"))
    );
    s.write_all(head.as_bytes()).await.expect("write");
    s.write_all(body).await.expect("write");
    if half_close {
        s.shutdown().await.expect("shutdown");
    }
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("the server answers and closes instead of waiting for the rest")
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_post_body_that_stalls_or_breaks_off_is_refused_not_waited_for() {
    let r = start(LogplexSettings {
        http_body_timeout: Duration::from_millis(300),
        ..LogplexSettings::default()
    })
    .await;
    let first = framed("never finished");
    let stalled = partial_post(r.http, first.len() + 50, first.as_bytes(), false).await;
    assert!(stalled.starts_with("HTTP/1.1 408 "), "{stalled}");
    assert!(
        stalled.contains("Body not received within 0.3 s"),
        "{stalled}"
    );
    let cut = partial_post(r.http, first.len() + 50, first.as_bytes(), true).await;
    assert!(cut.is_empty() || cut.starts_with("HTTP/1.1 400 "), "{cut}");
    // Nothing of either half-sent body was taken, and honest senders are
    // still served.
    use base64::Engine as _;
    let auth = format!(
        "Authorization: Basic {}\r\nContent-Type: application/logplex-1\r\n",
        base64::engine::general_purpose::STANDARD.encode(format!("token:{TOKEN}"))
    );
    assert_eq!(post(r.http, &auth, framed("ok").as_bytes()).await, 204);
    stats_until(&r.logplex, "the honest line", |s| s.published == 1).await;
}
