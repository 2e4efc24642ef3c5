//! One test per H-code: the status, the page, and the exact log line.

use std::time::Duration;

use router::{AppSettings, AppSpec, DynoState, Timers};
use tokio::io::AsyncWriteExt;

use crate::support::{get, normalize, raw, Behaviour, Dyno, Switchyard};

/// Short timers so nothing waits 30 s.
pub fn fast() -> AppSettings {
    AppSettings {
        timers: Timers {
            connect: Duration::from_millis(300),
            first_byte: Duration::from_millis(400),
            idle: Duration::from_millis(400),
            boot: Duration::from_millis(400),
        },
        ..AppSettings::default()
    }
}

fn demo() -> AppSpec {
    AppSpec::new("demo").settings(fast())
}

const APP_ERROR: &str = "Application Error";

async fn one_line(sy: &crate::support::switchyard::Running) -> String {
    let lines = sy.wait_lines(1).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    normalize(&lines[0])
}

#[tokio::test]
async fn h10_every_web_dyno_crashed() {
    let refused = Dyno::refusing();
    let sy = Switchyard::new()
        .app(demo().dyno_in("web.1", refused.addr, DynoState::Crashed))
        .start()
        .await;
    let r = get(sy.addr, "demo.localhost", "/", &[]).await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains(APP_ERROR));
    assert_eq!(
        one_line(&sy).await,
        r#"at=error code=H10 desc="App crashed" method=GET path="/" host=demo.localhost request_id=ID fwd="127.0.0.1" dyno= connect= service= status=503 bytes= protocol=http queue=0 wait=Nms"#
    );
}

#[tokio::test]
async fn h11_backlog_too_deep() {
    let dyno = Dyno::start(Behaviour::Hang).await;
    let settings = AppSettings {
        max_in_flight: Some(1),
        ..fast()
    };
    let sy = Switchyard::new()
        .app(
            AppSpec::new("demo")
                .settings(settings)
                .dyno("web.1", dyno.addr),
        )
        .start()
        .await;
    let addr = sy.addr;
    let first = tokio::spawn(async move { get(addr, "demo.localhost", "/slow", &[]).await });
    crate::eventually("dyno.requests().len() == 1", || dyno.requests().len() == 1).await;
    let r = get(sy.addr, "demo.localhost", "/", &[]).await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains(APP_ERROR));
    let lines = sy.wait_lines(1).await;
    assert_eq!(
        normalize(&lines[0]),
        r#"at=error code=H11 desc="Backlog too deep" method=GET path="/" host=demo.localhost request_id=ID fwd="127.0.0.1" dyno= connect= service= status=503 bytes= protocol=http queue=0 wait=Nms"#
    );
    assert_eq!(
        first.await.expect("join").status,
        503,
        "the first request times out (H12)"
    );
}

#[tokio::test]
async fn h12_request_timeout() {
    let dyno = Dyno::start(Behaviour::Hang).await;
    let sy = Switchyard::new()
        .app(demo().dyno("web.1", dyno.addr))
        .start()
        .await;
    let r = get(sy.addr, "demo.localhost", "/x?y=1", &[]).await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains(APP_ERROR));
    assert_eq!(
        one_line(&sy).await,
        r#"at=error code=H12 desc="Request timeout" method=GET path="/x?y=1" host=demo.localhost request_id=ID fwd="127.0.0.1" dyno=web.1 connect=Nms service=Nms status=503 bytes= protocol=http queue=0 wait=Nms"#
    );
}

#[tokio::test]
async fn h13_connection_closed_without_response() {
    let dyno = Dyno::start(Behaviour::CloseWithoutResponse).await;
    let sy = Switchyard::new()
        .app(demo().dyno("web.1", dyno.addr))
        .start()
        .await;
    let r = get(sy.addr, "demo.localhost", "/", &[]).await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains(APP_ERROR));
    assert_eq!(
        one_line(&sy).await,
        r#"at=error code=H13 desc="Connection closed without response" method=GET path="/" host=demo.localhost request_id=ID fwd="127.0.0.1" dyno=web.1 connect=Nms service=Nms status=503 bytes= protocol=http queue=0 wait=Nms"#
    );
}

#[tokio::test]
async fn h14_no_web_dynos() {
    let worker = Dyno::start(Behaviour::Respond("worker")).await;
    let sy = Switchyard::new()
        .app(demo().dyno("worker.1", worker.addr))
        .start()
        .await;
    let r = get(sy.addr, "demo.localhost", "/", &[]).await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains(APP_ERROR));
    assert!(worker.requests().is_empty(), "worker dynos never take HTTP");
    assert_eq!(
        one_line(&sy).await,
        r#"at=error code=H14 desc="No web processes running" method=GET path="/" host=demo.localhost request_id=ID fwd="127.0.0.1" dyno= connect= service= status=503 bytes= protocol=http queue=0 wait=Nms"#
    );
}

#[tokio::test]
async fn h15_idle_connection_after_first_byte() {
    let dyno = Dyno::start(Behaviour::StallAfterFirstByte).await;
    let sy = Switchyard::new()
        .app(demo().dyno("web.1", dyno.addr))
        .start()
        .await;
    let r = get(sy.addr, "demo.localhost", "/", &[]).await;
    assert_eq!(r.status, 200, "the head was already sent");
    assert_eq!(
        r.body, "0123456789",
        "the client gets the partial body, then the cut"
    );
    let line = one_line(&sy).await;
    assert!(
        line.starts_with(r#"at=error code=H15 desc="Idle connection" method=GET path="/" host=demo.localhost request_id=ID fwd="127.0.0.1" dyno=web.1 connect=Nms service=Nms status=200 bytes="#),
        "{line}"
    );
}

#[tokio::test]
async fn h17_poorly_formatted_response() {
    let dyno = Dyno::start(Behaviour::Garbage).await;
    let sy = Switchyard::new()
        .app(demo().dyno("web.1", dyno.addr))
        .start()
        .await;
    let r = get(sy.addr, "demo.localhost", "/", &[]).await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains(APP_ERROR));
    assert_eq!(
        one_line(&sy).await,
        r#"at=error code=H17 desc="Poorly formatted HTTP response" method=GET path="/" host=demo.localhost request_id=ID fwd="127.0.0.1" dyno=web.1 connect=Nms service=Nms status=503 bytes= protocol=http queue=0 wait=Nms"#
    );
}

#[tokio::test]
async fn h18_server_request_interrupted() {
    let dyno = Dyno::start(Behaviour::CloseMidBody).await;
    let sy = Switchyard::new()
        .app(demo().dyno("web.1", dyno.addr))
        .start()
        .await;
    let r = get(sy.addr, "demo.localhost", "/", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "0123456789");
    let line = one_line(&sy).await;
    assert!(
        line.starts_with(r#"sock=backend at=error code=H18 desc="Server Request Interrupted" method=GET path="/" host=demo.localhost request_id=ID fwd="127.0.0.1" dyno=web.1 connect=Nms service=Nms status=200 bytes="#),
        "{line}"
    );
}

#[tokio::test]
async fn h19_backend_connection_timeout() {
    let blackhole = crate::support::dyno::blackhole().await;
    let sy = Switchyard::new()
        .app(demo().dyno("web.1", blackhole.addr))
        .start()
        .await;
    let r = get(sy.addr, "demo.localhost", "/", &[]).await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains(APP_ERROR));
    assert_eq!(
        one_line(&sy).await,
        r#"at=error code=H19 desc="Backend connection timeout" method=GET path="/" host=demo.localhost request_id=ID fwd="127.0.0.1" dyno=web.1 connect=Nms service= status=503 bytes= protocol=http queue=0 wait=Nms"#
    );
}

#[tokio::test]
async fn h20_app_boot_timeout() {
    let refused = Dyno::refusing();
    let sy = Switchyard::new()
        .app(demo().dyno_in("web.1", refused.addr, DynoState::Starting))
        .start()
        .await;
    let r = get(sy.addr, "demo.localhost", "/", &[]).await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains(APP_ERROR));
    assert_eq!(
        one_line(&sy).await,
        r#"at=error code=H20 desc="App boot timeout" method=GET path="/" host=demo.localhost request_id=ID fwd="127.0.0.1" dyno= connect= service= status=503 bytes= protocol=http queue=0 wait=Nms"#
    );
}

#[tokio::test]
async fn starting_dyno_takes_the_request_once_up() {
    let dyno = Dyno::start(Behaviour::Respond("booted")).await;
    let mut settings = fast();
    settings.timers.boot = Duration::from_secs(20);
    let spec = |state| {
        AppSpec::new("demo")
            .settings(settings.clone())
            .dyno_in("web.1", dyno.addr, state)
    };
    let sy = Switchyard::new()
        .app(spec(DynoState::Starting))
        .start()
        .await;
    let addr = sy.addr;
    let pending = tokio::spawn(async move { get(addr, "demo.localhost", "/", &[]).await });
    let table = sy.routes.load();
    let app = table.app("demo").expect("app");
    crate::eventually("app.live.admitted() == 1", || app.live.admitted() == 1).await;
    assert!(!pending.is_finished(), "waits while the dyno boots");
    assert!(dyno.requests().is_empty());
    sy.publish(vec![spec(DynoState::Up)]);
    let r = pending.await.expect("join");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "booted");
}

#[tokio::test]
async fn h21_backend_connection_refused_after_trying_every_dyno() {
    let refused1 = Dyno::refusing();
    let refused2 = Dyno::refusing();
    let sy = Switchyard::new()
        .app(
            demo()
                .dyno("web.1", refused1.addr)
                .dyno("web.2", refused2.addr),
        )
        .start()
        .await;
    let r = get(sy.addr, "demo.localhost", "/", &[]).await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains(APP_ERROR));
    let line = one_line(&sy).await;
    assert!(
        line.starts_with(r#"at=error code=H21 desc="Backend connection refused" method=GET path="/" host=demo.localhost request_id=ID fwd="127.0.0.1" dyno=web."#),
        "{line}"
    );
    assert!(
        line.ends_with(r#" connect=Nms service= status=503 bytes= protocol=http queue=0 wait=Nms"#),
        "{line}"
    );
    let app = sy.routes.load();
    let app = app.app("demo").expect("app");
    assert!(
        app.web.iter().all(|d| d.live.is_quarantined()),
        "both dynos tried and quarantined"
    );
}

#[tokio::test]
async fn refused_dyno_is_quarantined_and_another_serves() {
    let refused = Dyno::refusing();
    let good = Dyno::start(Behaviour::Respond("good")).await;
    let sy = Switchyard::new()
        .app(demo().dyno("web.1", refused.addr).dyno("web.2", good.addr))
        .start()
        .await;
    for _ in 0..4 {
        let r = get(sy.addr, "demo.localhost", "/", &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "good");
    }
    let lines = sy.wait_lines(4).await;
    assert!(lines.iter().all(|l| l.contains("dyno=web.2 ")), "{lines:?}");
}

#[tokio::test]
async fn h99_every_dyno_quarantined() {
    let refused = Dyno::refusing();
    let sy = Switchyard::new()
        .app(demo().dyno("web.1", refused.addr))
        .start()
        .await;
    assert_eq!(get(sy.addr, "demo.localhost", "/", &[]).await.status, 503);
    let r = get(sy.addr, "demo.localhost", "/", &[]).await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains(APP_ERROR));
    let lines = sy.wait_lines(2).await;
    assert!(lines[0].contains("code=H21"), "{}", lines[0]);
    assert_eq!(
        normalize(&lines[1]),
        r#"at=error code=H99 desc="Platform error" method=GET path="/" host=demo.localhost request_id=ID fwd="127.0.0.1" dyno= connect= service= status=503 bytes= protocol=http queue=0 wait=Nms"#
    );
}

#[tokio::test]
async fn h25_http_restriction() {
    let dyno = Dyno::start(Behaviour::ConflictingLength).await;
    let sy = Switchyard::new()
        .app(demo().dyno("web.1", dyno.addr))
        .start()
        .await;
    let r = get(sy.addr, "demo.localhost", "/", &[]).await;
    assert_eq!(r.status, 502);
    assert!(r.body.contains(APP_ERROR));
    assert_eq!(
        one_line(&sy).await,
        r#"at=error code=H25 desc="HTTP restriction" method=GET path="/" host=demo.localhost request_id=ID fwd="127.0.0.1" dyno=web.1 connect=Nms service=Nms status=502 bytes= protocol=http queue=0 wait=Nms"#
    );
}

#[tokio::test]
async fn h26_unsupported_expect_is_417() {
    let dyno = Dyno::start(Behaviour::Respond("ok")).await;
    let sy = Switchyard::new()
        .app(demo().dyno("web.1", dyno.addr))
        .start()
        .await;
    let r = get(sy.addr, "demo.localhost", "/", &["Expect: something-else"]).await;
    assert_eq!(r.status, 417);
    assert!(dyno.requests().is_empty());
    assert_eq!(
        one_line(&sy).await,
        r#"at=error code=H26 desc="Request Error" cause="unsupported expect header value" method=GET path="/" host=demo.localhost request_id=ID fwd="127.0.0.1" dyno= connect= service= status=417 bytes= protocol=http queue=0 wait=Nms"#
    );
}

#[tokio::test]
async fn h26_several_host_headers_are_400() {
    let dyno = Dyno::start(Behaviour::Respond("ok")).await;
    let sy = Switchyard::new()
        .app(demo().dyno("web.1", dyno.addr))
        .start()
        .await;
    let r = raw(
        sy.addr,
        b"GET / HTTP/1.1\r\nHost: demo.localhost\r\nHost: other.localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(dyno.requests().is_empty());
    assert_eq!(
        one_line(&sy).await,
        r#"at=error code=H26 desc="Request Error" cause="bad header" method=GET path="/" host=demo.localhost request_id=ID fwd="127.0.0.1" dyno= connect= service= status=400 bytes= protocol=http queue=0 wait=Nms"#
    );
}

#[tokio::test]
async fn conflicting_content_length_is_400_and_never_reaches_a_dyno() {
    let dyno = Dyno::start(Behaviour::Respond("ok")).await;
    let sy = Switchyard::new()
        .app(demo().dyno("web.1", dyno.addr))
        .start()
        .await;
    let r = raw(
        sy.addr,
        b"POST / HTTP/1.1\r\nHost: demo.localhost\r\nContent-Length: 3\r\nContent-Length: 4\r\nConnection: close\r\n\r\nabcd",
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(dyno.requests().is_empty());
}

#[tokio::test]
async fn h27_client_interrupted_mid_request() {
    let dyno = Dyno::start(Behaviour::Respond("ok")).await;
    let sy = Switchyard::new()
        .app(demo().dyno("web.1", dyno.addr))
        .start()
        .await;
    let mut s = tokio::net::TcpStream::connect(sy.addr)
        .await
        .expect("connect");
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: demo.localhost\r\nContent-Length: 100\r\n\r\n0123456789",
    )
    .await
    .expect("write");
    crate::eventually("dyno.connections.load(SeqCst) == 1", || {
        dyno.connections.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    drop(s);
    assert_eq!(
        one_line(&sy).await,
        r#"sock=client at=warning code=H27 desc="Client Request Interrupted" method=POST path="/upload" host=demo.localhost request_id=ID fwd="127.0.0.1" dyno=web.1 connect=Nms service=Nms status=499 bytes= protocol=http queue=0 wait=Nms"#
    );
}

#[tokio::test]
async fn h28_client_idle_mid_request() {
    let dyno = Dyno::start(Behaviour::Respond("ok")).await;
    let sy = Switchyard::new()
        .app(demo().dyno("web.1", dyno.addr))
        .start()
        .await;
    let mut s = tokio::net::TcpStream::connect(sy.addr)
        .await
        .expect("connect");
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: demo.localhost\r\nContent-Length: 100\r\n\r\n0123456789",
    )
    .await
    .expect("write");
    assert_eq!(
        one_line(&sy).await,
        r#"at=warning code=H28 desc="Client Connection Idle" method=POST path="/upload" host=demo.localhost request_id=ID fwd="127.0.0.1" dyno=web.1 connect=Nms service=Nms status=499 bytes= protocol=http queue=0 wait=Nms"#
    );
    drop(s);
}

#[tokio::test]
async fn h80_maintenance_mode() {
    let dyno = Dyno::start(Behaviour::Respond("ok")).await;
    let settings = AppSettings {
        maintenance: true,
        ..fast()
    };
    let sy = Switchyard::new()
        .app(
            AppSpec::new("demo")
                .settings(settings)
                .dyno("web.1", dyno.addr),
        )
        .start()
        .await;
    let r = get(sy.addr, "demo.localhost", "/", &[]).await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains("Offline for Maintenance"));
    assert!(dyno.requests().is_empty());
    assert_eq!(
        one_line(&sy).await,
        r#"at=info code=H80 desc="Maintenance mode" method=GET path="/" host=demo.localhost request_id=ID fwd="127.0.0.1" dyno= connect= service= status=503 bytes= protocol=http queue=0 wait=Nms"#
    );
}

#[tokio::test]
async fn custom_error_page_is_fetched_once_and_served() {
    let page = Dyno::start(Behaviour::Respond("<h1>our own error page</h1>")).await;
    let settings = AppSettings {
        error_page_url: Some(format!("http://{}/error.html", page.addr)),
        ..fast()
    };
    let sy = Switchyard::new()
        .app(AppSpec::new("demo").settings(settings))
        .start()
        .await;
    let _ = get(sy.addr, "demo.localhost", "/", &[]).await;
    crate::eventually("page.requests().len() == 1", || page.requests().len() == 1).await;
    // Until the fetch lands the default page is served.
    let served = crate::eventually_some("the fetched custom page", || async {
        let r = get(sy.addr, "demo.localhost", "/", &[]).await;
        assert_eq!(r.status, 503);
        (!r.body.contains("Application Error")).then_some(r.body)
    })
    .await;
    assert_eq!(served, "<h1>our own error page</h1>");
    assert_eq!(page.requests().len(), 1, "fetched once, then cached");
}

#[tokio::test]
async fn unknown_host_is_404_no_such_app() {
    let sy = Switchyard::new().app(demo()).start().await;
    let r = get(sy.addr, "nope.localhost", "/", &[]).await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("No such app"));
    assert!(sy.lines().is_empty());
}

#[tokio::test]
async fn h28_client_stops_reading_after_the_first_byte() {
    let dyno = Dyno::start(Behaviour::Stream {
        chunks: 4096,
        size: 16 * 1024,
        gap: Duration::ZERO,
    })
    .await;
    let sy = Switchyard::new()
        .app(demo().dyno("web.1", dyno.addr))
        .start()
        .await;
    let mut s = tokio::net::TcpStream::connect(sy.addr)
        .await
        .expect("connect");
    s.write_all(b"GET /big HTTP/1.1\r\nHost: demo.localhost\r\n\r\n")
        .await
        .expect("write");
    // Read a little, then stop reading: the router's writes block.
    let mut first = [0u8; 1024];
    let n = tokio::io::AsyncReadExt::read(&mut s, &mut first)
        .await
        .expect("read");
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    let line = one_line(&sy).await;
    assert!(
        line.starts_with(r#"at=warning code=H28 desc="Client Connection Idle" method=GET path="/big" host=demo.localhost request_id=ID fwd="127.0.0.1" dyno=web.1 connect=Nms service=Nms status=499 bytes="#),
        "{line}"
    );
    drop(s);
}
