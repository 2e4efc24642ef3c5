//! Graceful shutdown: stop accepting, finish what can finish, H24 the rest.

use std::time::Duration;

use router::AppSpec;

use crate::support::{get, normalize, Behaviour, Dyno, Switchyard};

#[tokio::test]
async fn in_flight_requests_finish_within_the_grace_period() {
    let dyno = Dyno::start(Behaviour::Delay(Duration::from_millis(300), "done")).await;
    let mut sy = Switchyard::new()
        .grace(Duration::from_secs(20))
        .app(AppSpec::new("demo").dyno("web.1", dyno.addr))
        .start()
        .await;
    let addr = sy.addr;
    let pending = tokio::spawn(async move { get(addr, "demo.localhost", "/", &[]).await });
    crate::eventually("dyno.requests().len() == 1", || dyno.requests().len() == 1).await;
    let task = sy.shutdown();
    let r = pending.await.expect("join");
    assert_eq!((r.status, r.body.as_str()), (200, "done"));
    task.await.expect("join").expect("serve");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}

/// A dyno that never answers, behind a router whose shutdown grace is 200 ms.
async fn hanging_dyno_behind_a_short_grace() -> (Dyno, crate::support::switchyard::Running) {
    let dyno = Dyno::start(Behaviour::Hang).await;
    let sy = Switchyard::new()
        .grace(Duration::from_millis(200))
        .app(AppSpec::new("demo").dyno("web.1", dyno.addr))
        .start()
        .await;
    (dyno, sy)
}

#[tokio::test]
async fn requests_still_running_after_the_grace_period_are_h24() {
    let (dyno, mut sy) = hanging_dyno_behind_a_short_grace().await;
    let addr = sy.addr;
    let pending = tokio::spawn(async move { get(addr, "demo.localhost", "/long", &[]).await });
    crate::eventually("dyno.requests().len() == 1", || dyno.requests().len() == 1).await;
    sy.shutdown().await.expect("join").expect("serve");
    let _ = pending.await;
    let lines = sy.wait_lines(1).await;
    assert_eq!(
        normalize(&lines[0]),
        r#"at=error code=H24 desc="Forced close" method=GET path="/long" host=demo.localhost request_id=ID fwd="127.0.0.1" dyno=web.1 connect=Nms service=Nms status= bytes= protocol=http queue=0 wait=Nms"#
    );
}

#[tokio::test]
async fn http2_streams_still_waiting_after_the_grace_period_are_h24() {
    // An HTTP/2 stream runs in a task of its own: it is woken by the
    // shutdown itself, not by its connection's task.
    let (dyno, mut sy) = hanging_dyno_behind_a_short_grace().await;
    let tcp = tokio::net::TcpStream::connect(sy.addr)
        .await
        .expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let pending = tokio::spawn(async move {
        let req = http::Request::get("http://demo.localhost/long")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("request");
        let _ = sender.send_request(req).await;
    });
    crate::eventually("dyno.requests().len() == 1", || dyno.requests().len() == 1).await;
    sy.shutdown().await.expect("join").expect("serve");
    let _ = pending.await;
    let lines = sy.wait_lines(1).await;
    assert!(
        normalize(&lines[0])
            .starts_with(r#"at=error code=H24 desc="Forced close" method=GET path="/long""#),
        "{}",
        lines[0]
    );
}
