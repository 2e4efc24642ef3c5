//! Connection limits and timers of the sources, on real sockets: the syslog
//! idle timeout (TCP and TLS), the HTTP source's connection cap, its head
//! deadline and its body deadline. Timers run on paused time.

use std::time::Duration;

use logplex::{LogplexSettings, Transport};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::*;

fn frame(token: &str, msg: &str) -> Vec<u8> {
    frames(&[&format!(
        "<190>1 2026-11-23T20:00:00.000000+00:00 host {token} web.1 - - {msg}"
    )])
}

/// Reads until the server closes (within an hour, paused or not); returns
/// what it sent.
async fn until_closed(mut s: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3600), s.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "the server kept the connection open for an hour"
    );
    out
}

#[tokio::test(start_paused = true)]
async fn a_syslog_tcp_connection_that_sends_nothing_for_the_idle_timeout_is_closed() {
    let app = App::new("demo");
    let settings = LogplexSettings::default();
    assert_eq!(settings.stream_idle_timeout, Duration::from_secs(240));
    let plex = Plex::start(settings, &[&app]).await;
    let mut s = TcpStream::connect(plex.tcp).await.unwrap();
    // A line every 200 s keeps the connection.
    let mut last = Instant::now();
    for i in 0..3 {
        tokio::time::sleep(Duration::from_secs(200)).await;
        s.write_all(&frame(&app.app_token, &format!("line {i}")))
            .await
            .unwrap();
        last = Instant::now();
    }
    assert_eq!(until_closed(&mut s).await, b"");
    let quiet = last.elapsed();
    assert!(
        quiet >= Duration::from_secs(240) && quiet < Duration::from_secs(241),
        "closed after {quiet:?} of silence"
    );
    eventually("the place is free", || {
        plex.logplex.connection_stats(Transport::Tcp).open == 0
    })
    .await;
    let stats = plex.logplex.connection_stats(Transport::Tcp);
    assert_eq!((stats.idle_closed, stats.refused), (1, 0), "{stats:?}");
    assert_eq!(plex.messages(&app), ["line 0", "line 1", "line 2"]);
}

#[tokio::test(start_paused = true)]
async fn a_syslog_tls_connection_idle_past_a_configured_timeout_is_closed() {
    let app = App::new("demo");
    let plex = Plex::start(
        LogplexSettings {
            stream_idle_timeout: Duration::from_secs(5),
            ..LogplexSettings::default()
        },
        &[&app],
    )
    .await;
    let connector = tokio_rustls::TlsConnector::from(client_trusting(&plex.tls_cert));
    let tcp = TcpStream::connect(plex.tls).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(&frame(&app.app_token, "over tls"))
        .await
        .unwrap();
    tls.flush().await.unwrap();
    let sent = Instant::now();
    until_closed(&mut tls).await;
    let quiet = sent.elapsed();
    assert!(
        quiet >= Duration::from_secs(5) && quiet < Duration::from_secs(6),
        "closed after {quiet:?} of silence"
    );
    assert_eq!(plex.messages(&app), ["over tls"]);
    eventually("counted", || {
        plex.logplex.connection_stats(Transport::Tls).idle_closed == 1
    })
    .await;
    assert_eq!(
        plex.logplex.connection_stats(Transport::Tcp).idle_closed,
        0,
        "counted by transport"
    );
}

#[tokio::test]
async fn syslog_tcp_and_tls_share_one_connection_cap() {
    let app = App::new("demo");
    let plex = Plex::start(
        LogplexSettings {
            max_stream_connections: 2,
            ..LogplexSettings::default()
        },
        &[&app],
    )
    .await;
    let mut tcp = TcpStream::connect(plex.tcp).await.unwrap();
    tcp.write_all(&frame(&app.app_token, "tcp")).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_trusting(&plex.tls_cert));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let raw = TcpStream::connect(plex.tls).await.unwrap();
    let mut tls = connector.connect(name.clone(), raw).await.unwrap();
    tls.write_all(&frame(&app.app_token, "tls")).await.unwrap();
    tls.flush().await.unwrap();
    eventually("both lines", || plex.messages(&app).len() == 2).await;
    // The pool is full: a third connection, on either listener, is closed.
    let refused = TcpStream::connect(plex.tls).await.unwrap();
    assert!(connector.connect(name, refused).await.is_err());
    let third = TcpStream::connect(plex.tcp).await.unwrap();
    assert_eq!(until_closed(third).await, b"");
    let (t, s) = (
        plex.logplex.connection_stats(Transport::Tcp),
        plex.logplex.connection_stats(Transport::Tls),
    );
    assert_eq!((t.open, t.refused, s.open, s.refused), (1, 1, 1, 1));
    drop(tcp);
}

/// A keep-alive `GET /healthcheck` on `s`; the status.
async fn healthcheck(s: &mut TcpStream) -> u16 {
    s.write_all(b"GET /healthcheck HTTP/1.1\r\nHost: logplex\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let mut got = Vec::new();
    while !got.ends_with(b"OK\n") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    parse_response(&got).0
}

#[tokio::test]
async fn http_connections_past_the_cap_are_closed_on_arrival_and_counted() {
    let app = App::new("demo");
    let plex = Plex::start(
        LogplexSettings {
            max_http_connections: 2,
            ..LogplexSettings::default()
        },
        &[&app],
    )
    .await;
    let mut a = TcpStream::connect(plex.http).await.unwrap();
    let mut b = TcpStream::connect(plex.http).await.unwrap();
    assert_eq!(healthcheck(&mut a).await, 200);
    assert_eq!(healthcheck(&mut b).await, 200);
    let c = TcpStream::connect(plex.http).await.unwrap();
    assert_eq!(until_closed(c).await, b"", "closed without a response");
    let stats = plex.logplex.connection_stats(Transport::Http);
    assert_eq!((stats.open, stats.refused), (2, 1), "{stats:?}");
    drop(a);
    eventually("a place is freed", || {
        plex.logplex.connection_stats(Transport::Http).open == 1
    })
    .await;
    let mut d = TcpStream::connect(plex.http).await.unwrap();
    assert_eq!(healthcheck(&mut d).await, 200);
    assert_eq!(
        healthcheck(&mut b).await,
        200,
        "kept-alive one still served"
    );
}

#[tokio::test(start_paused = true)]
async fn http_heads_that_never_come_or_trickle_are_cut_at_the_head_timeout() {
    let app = App::new("demo");
    let settings = LogplexSettings::default();
    let head_timeout = settings.http_head_timeout;
    assert_eq!(head_timeout, Duration::from_secs(30));
    let plex = Plex::start(settings, &[&app]).await;
    let cut_within = |since: Instant| {
        let t = since.elapsed();
        assert!(
            t >= head_timeout && t < head_timeout + Duration::from_secs(1),
            "closed after {t:?}"
        );
    };
    // Silent from the start.
    let start = Instant::now();
    let silent = TcpStream::connect(plex.http).await.unwrap();
    assert_eq!(until_closed(silent).await, b"");
    cut_within(start);
    // A head sent one byte every 5 s: the timer runs from its first byte,
    // not from the last.
    let start = Instant::now();
    let s = TcpStream::connect(plex.http).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let trickle = tokio::spawn(async move {
        for b in b"GET /healthcheck HTTP/1.1\r\nHost: logplex\r\n\r\n" {
            if w.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    });
    assert_eq!(until_closed(&mut r).await, b"");
    cut_within(start);
    trickle.abort();
    // A kept-alive connection waiting for its next head is cut the same way.
    let mut kept = TcpStream::connect(plex.http).await.unwrap();
    assert_eq!(healthcheck(&mut kept).await, 200);
    let answered = Instant::now();
    assert_eq!(until_closed(kept).await, b"");
    cut_within(answered);
}

#[tokio::test(start_paused = true)]
async fn a_post_body_that_trickles_is_refused_at_the_body_timeout() {
    let app = App::new("demo");
    let plex = Plex::start(
        LogplexSettings {
            http_body_timeout: Duration::from_secs(2),
            ..LogplexSettings::default()
        },
        &[&app],
    )
    .await;
    let body = frame(&app.app_token, "slowly");
    let request = post_logs(Some(&app.app_token), &body, &[]);
    let head_len = request.len() - body.len();
    let s = TcpStream::connect(plex.http).await.unwrap();
    let (mut r, mut w) = s.into_split();
    w.write_all(&request[..head_len]).await.unwrap();
    let start = Instant::now();
    // One body byte every 100 ms would take seconds; the deadline is for
    // the whole body, not between bytes.
    let trickle = tokio::spawn(async move {
        for b in body {
            if w.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let answer = until_closed(&mut r).await;
    let took = start.elapsed();
    trickle.abort();
    assert_eq!(parse_response(&answer).0, 408, "{answer:?}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_millis(2_200),
        "answered after {took:?}"
    );
    assert!(plex.messages(&app).is_empty(), "nothing of it was taken");
}
