//! Keep-alive client connections between requests: an idle HTTP/1
//! connection gives up its HTTP state ("parks") and is served again when
//! the client sends, with any bytes it sent ahead kept.

use std::time::Duration;

use router::AppSpec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::eventually;
use crate::support::client::{parse, Resp};
use crate::support::dyno::{Behaviour, Dyno};
use crate::support::switchyard::{Running, Switchyard};

const REQUEST: &[u8] = b"GET /next HTTP/1.1\r\nHost: demo.localhost\r\n\r\n";

/// Reads one whole response (its body has a Content-Length) off `s`.
async fn read_response(s: &mut TcpStream) -> Resp {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
            .await
            .expect("a response in time")
            .expect("read");
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        let resp = parse(&got);
        let len = resp.header("content-length").and_then(|l| l.parse().ok());
        if len.is_some_and(|len: usize| resp.body.len() >= len) {
            return resp;
        }
    }
}

async fn demo(dyno: &Dyno, park: Duration) -> Running {
    Switchyard::new()
        .app(AppSpec::new("demo").dyno("web.1", dyno.addr))
        .park_idle_after(park)
        .start()
        .await
}

#[tokio::test]
async fn a_parked_connection_serves_its_next_request() {
    let dyno = Dyno::start(Behaviour::Respond("ok")).await;
    let sy = demo(&dyno, Duration::from_millis(20)).await;
    let mut s = TcpStream::connect(sy.addr).await.expect("connect");
    eventually("the silent connection is counted idle", || {
        sy.router.idle_connections() == 1
    })
    .await;
    for round in 0..3 {
        s.write_all(REQUEST).await.expect("write");
        let resp = read_response(&mut s).await;
        assert_eq!(resp.status, 200, "round {round}");
        assert_eq!(resp.body, "ok");
        // The connection stays open and gives up its HTTP state.
        eventually("the connection parks", || sy.router.idle_connections() == 1).await;
    }
    assert_eq!(dyno.requests().len(), 3);
    drop(s);
    eventually("a closed connection is not counted", || {
        sy.router.idle_connections() == 0
    })
    .await;
}

#[tokio::test]
async fn a_head_sent_ahead_in_pieces_survives_the_park() {
    let dyno = Dyno::start(Behaviour::EchoHead).await;
    // Parks after every response, with whatever was read ahead.
    let sy = demo(&dyno, Duration::ZERO).await;
    let mut s = TcpStream::connect(sy.addr).await.expect("connect");
    let (first, rest) = REQUEST.split_at(20);
    let mut ahead = b"GET /one HTTP/1.1\r\nHost: demo.localhost\r\n\r\n".to_vec();
    ahead.extend_from_slice(first);
    s.write_all(&ahead).await.expect("write");
    let one = read_response(&mut s).await;
    assert_eq!(one.status, 200);
    assert!(one.body.starts_with("GET /one "), "{}", one.body);
    s.write_all(rest).await.expect("write");
    let next = read_response(&mut s).await;
    assert_eq!(next.status, 200);
    assert!(next.body.starts_with("GET /next "), "{}", next.body);
}

#[tokio::test]
async fn a_parked_connection_is_closed_after_the_head_timeout() {
    let dyno = Dyno::start(Behaviour::Respond("ok")).await;
    let sy = Switchyard::new()
        .app(AppSpec::new("demo").dyno("web.1", dyno.addr))
        .park_idle_after(Duration::ZERO)
        .head_timeout(Duration::from_millis(300))
        .start()
        .await;
    let mut s = TcpStream::connect(sy.addr).await.expect("connect");
    s.write_all(REQUEST).await.expect("write");
    assert_eq!(read_response(&mut s).await.status, 200);
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut rest))
        .await
        .expect("closed")
        .expect("read");
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    eventually("nothing is left counted", || {
        sy.router.idle_connections() == 0
    })
    .await;
}
