//! Routing and streaming: hosts, bodies both ways, keep-alive to dynos.

use std::time::Duration;

use router::AppSpec;

use crate::support::{get, h2_get, raw, Behaviour, Dyno, Switchyard};

#[tokio::test]
async fn routes_by_host_exact_wildcard_and_base_domain() {
    let a = Dyno::start(Behaviour::Respond("a")).await;
    let b = Dyno::start(Behaviour::Respond("b")).await;
    let sy = Switchyard::new()
        .app(
            AppSpec::new("alpha")
                .domain("*.example.com")
                .dyno("web.1", a.addr),
        )
        .app(
            AppSpec::new("beta")
                .domain("api.example.com")
                .dyno("web.1", b.addr),
        )
        .start()
        .await;
    for (host, body) in [
        ("alpha.localhost", "a"),
        ("BETA.localhost:8080", "b"),
        ("www.example.com", "a"),
        ("api.example.com", "b"),
        ("API.Example.com.", "b"),
    ] {
        let r = get(sy.addr, host, "/", &[]).await;
        assert_eq!((r.status, r.body.as_str()), (200, body), "{host}");
    }
    let line = &sy.wait_lines(1).await[0];
    assert!(
        line.starts_with("at=info method=GET path=\"/\" host=alpha.localhost request_id="),
        "{line}"
    );
    assert!(line.contains(" dyno=web.1 connect="), "{line}");
    assert!(line.contains(" status=200 bytes="), "{line}");
    assert!(line.ends_with(" protocol=http queue=0 wait=0ms"), "{line}");
}

#[tokio::test]
async fn an_absolute_form_target_is_routed_by_its_authority_not_host() {
    let a = Dyno::start(Behaviour::EchoHead).await;
    let b = Dyno::start(Behaviour::Respond("b")).await;
    let sy = Switchyard::new()
        .app(
            AppSpec::new("alpha")
                .domain("a.example")
                .dyno("web.1", a.addr),
        )
        .app(
            AppSpec::new("beta")
                .domain("b.example")
                .dyno("web.1", b.addr),
        )
        .start()
        .await;
    let r = raw(
        sy.addr,
        b"GET http://a.example/path?q=1 HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(b.requests().is_empty(), "Host named beta, the target alpha");
    let seen = &a.requests()[0];
    assert_eq!(seen.request_line(), "GET /path?q=1 HTTP/1.1", "origin-form");
    assert_eq!(seen.header("host").as_deref(), Some("a.example"));
    let line = &sy.wait_lines(1).await[0];
    assert!(line.contains(" host=a.example "), "{line}");
}

#[tokio::test]
async fn max_attempts_zero_still_makes_one_attempt() {
    let dyno = Dyno::start(Behaviour::Respond("ok")).await;
    let refused = Dyno::refusing();
    let sy = Switchyard::new()
        .max_attempts(0)
        .app(AppSpec::new("ok").dyno("web.1", dyno.addr))
        .app(AppSpec::new("refused").dyno("web.1", refused.addr))
        .start()
        .await;
    let r = get(sy.addr, "ok.localhost", "/", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    let r = get(sy.addr, "refused.localhost", "/", &[]).await;
    assert_eq!(r.status, 503);
    let lines = sy.wait_lines(2).await;
    assert!(lines[1].starts_with("at=error code=H21 "), "{lines:?}");
}

#[tokio::test]
async fn request_and_response_bodies_stream_through() {
    let dyno = Dyno::start(Behaviour::EchoHead).await;
    let sy = Switchyard::new()
        .app(AppSpec::new("demo").dyno("web.1", dyno.addr))
        .start()
        .await;
    let body = "x".repeat(300_000);
    let req = format!(
        "POST /up HTTP/1.1\r\nHost: demo.localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let r = raw(sy.addr, req.as_bytes()).await;
    assert_eq!(r.status, 200);
    assert!(r.body.ends_with(&body));
    assert_eq!(dyno.requests()[0].body.len(), 300_000);

    let chunked = b"POST /c HTTP/1.1\r\nHost: demo.localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let r = raw(sy.addr, chunked).await;
    assert_eq!(r.status, 200);
    assert!(r.body.ends_with("hello world"), "{}", r.body);
}

#[tokio::test]
async fn slow_streaming_response_arrives_whole_with_timers_reset_by_each_byte() {
    let dyno = Dyno::start(Behaviour::Stream {
        chunks: 5,
        size: 1000,
        gap: Duration::from_millis(150),
    })
    .await;
    let sy = Switchyard::new()
        .app(
            AppSpec::new("demo")
                .settings(crate::hcodes::fast())
                .dyno("web.1", dyno.addr),
        )
        .start()
        .await;
    // 5 × 150 ms > the 400 ms idle window, but no single gap exceeds it.
    let r = get(sy.addr, "demo.localhost", "/", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 5000);
    let line = &sy.wait_lines(1).await[0];
    assert!(line.starts_with("at=info "), "{line}");
}

#[tokio::test]
async fn connections_to_dynos_are_kept_alive() {
    let dyno = Dyno::start(Behaviour::Respond("ok")).await;
    let sy = Switchyard::new()
        .app(AppSpec::new("demo").dyno("web.1", dyno.addr))
        .start()
        .await;
    for _ in 0..10 {
        assert_eq!(get(sy.addr, "demo.localhost", "/", &[]).await.status, 200);
    }
    assert_eq!(
        dyno.connections.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[tokio::test]
async fn curl_gets_through() {
    let dyno = Dyno::start(Behaviour::Respond("hello from web.1")).await;
    let sy = Switchyard::new()
        .app(AppSpec::new("demo").dyno("web.1", dyno.addr))
        .start()
        .await;
    let url = format!("http://demo.localhost:{}/", sy.addr.port());
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "-i",
            "--resolve",
            &format!("demo.localhost:{}:127.0.0.1", sy.addr.port()),
            &url,
        ])
        .output()
        .await
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("hello from web.1"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("via: 1.1 switchyard"),
        "{text}"
    );
}

#[tokio::test]
async fn session_affinity_sticks_to_the_dyno_in_the_cookie() {
    let a = Dyno::start(Behaviour::Respond("a")).await;
    let b = Dyno::start(Behaviour::Respond("b")).await;
    let settings = router::AppSettings {
        session_affinity: true,
        ..router::AppSettings::default()
    };
    let sy = crate::queueing::two_dynos(settings, &a, &b).await;
    let first = get(sy.addr, "demo.localhost", "/", &[]).await;
    let cookie = first.header("set-cookie").expect("affinity cookie set");
    assert!(
        cookie.starts_with("heroku-session-affinity=web."),
        "{cookie}"
    );
    assert!(
        cookie.contains("Max-Age=86400") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().expect("pair").to_string();
    for _ in 0..6 {
        let r = get(
            sy.addr,
            "demo.localhost",
            "/",
            &[&format!("Cookie: theme=dark; {pair}")],
        )
        .await;
        assert_eq!(r.body, first.body, "same dyno every time");
        assert_eq!(r.header("set-cookie"), None, "cookie unchanged");
    }
    let stale = get(
        sy.addr,
        "demo.localhost",
        "/",
        &["Cookie: heroku-session-affinity=web.9"],
    )
    .await;
    assert_eq!(stale.status, 200);
    assert!(
        stale.header("set-cookie").is_some(),
        "a stale cookie is replaced"
    );
}

#[tokio::test]
async fn worker_threads_share_one_port_and_drain_on_shutdown() {
    let dyno = Dyno::start(Behaviour::Respond("ok")).await;
    let mut sy = Switchyard::new()
        .app(AppSpec::new("demo").dyno("web.1", dyno.addr))
        .workers(3)
        .start()
        .await;
    // Each request on its own connection, so the kernel spreads them over
    // the three listeners.
    let requests = (0..30).map(|i| {
        let addr = sy.addr;
        tokio::spawn(async move { get(addr, "demo.localhost", &format!("/{i}"), &[]).await })
    });
    for r in futures_util::future::join_all(requests).await {
        let r = r.expect("request task");
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    }
    let lines = sy.wait_lines(30).await;
    assert!(
        lines.iter().all(|l| l.contains(" status=200 ")),
        "{lines:?}"
    );
    let served = tokio::time::timeout(Duration::from_secs(10), sy.shutdown())
        .await
        .expect("every worker thread stops")
        .expect("serve task");
    assert!(served.is_ok(), "{served:?}");
    assert!(
        tokio::net::TcpStream::connect(sy.addr).await.is_err(),
        "no listener is left on the port"
    );
}

/// An HTTP/2 connection with prior knowledge over plain TCP; the returned
/// handle resolves when the router closes the connection.
async fn h2c(
    addr: std::net::SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    tokio::task::JoinHandle<()>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake");
    let closed = tokio::spawn(async move {
        let _ = conn.await;
    });
    (sender, closed)
}

#[tokio::test]
async fn idle_http2_connections_are_closed_but_slow_requests_are_not() {
    let dyno = Dyno::start(Behaviour::Delay(Duration::from_millis(900), "slow")).await;
    let drip = Dyno::start(Behaviour::Stream {
        chunks: 3,
        size: 4,
        gap: Duration::from_millis(600),
    })
    .await;
    let sy = Switchyard::new()
        .app(AppSpec::new("demo").dyno("web.1", dyno.addr))
        .app(AppSpec::new("drip").dyno("web.1", drip.addr))
        .client_idle(Duration::from_millis(200))
        .start()
        .await;
    // A request that makes no byte move for far longer than the idle
    // window is in flight, so the connection stays; so does one whose body
    // trickles in with long gaps.
    let (mut sender, closed) = h2c(sy.addr).await;
    assert_eq!(
        h2_get(&mut sender, "http://demo.localhost/slow").await,
        (200, bytes::Bytes::from_static(b"slow"))
    );
    let (status, body) = h2_get(&mut sender, "http://drip.localhost/").await;
    assert_eq!((status, body.len()), (200, 12));
    assert!(
        !closed.is_finished(),
        "a connection with a request in flight is kept"
    );
    // Then nothing: the router closes it.
    tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .expect("the idle connection is closed")
        .expect("join");
    assert!(sender.ready().await.is_err(), "the connection is gone");
    assert_eq!(
        sy.lines().len(),
        2,
        "two requests, and no line for the quiet close"
    );
}
