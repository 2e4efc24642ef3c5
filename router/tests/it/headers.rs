//! Heroku's header rules, as the dyno and the client see them.

use router::AppSpec;

use crate::support::{get, raw, Behaviour, Dyno, Switchyard};

async fn echo() -> (Dyno, crate::support::switchyard::Running) {
    let dyno = Dyno::start(Behaviour::EchoHead).await;
    let sy = Switchyard::new()
        .app(AppSpec::new("demo").dyno("web.1", dyno.addr))
        .start()
        .await;
    (dyno, sy)
}

#[tokio::test]
async fn forwarding_headers_reach_the_dyno() {
    let (dyno, sy) = echo().await;
    let before = router::clock::epoch_ms();
    let r = get(
        sy.addr,
        "demo.localhost",
        "/p?q=1",
        &[
            "X-Forwarded-For: 10.1.2.3",
            "X-Forwarded-Proto: https",
            "X-Forwarded-Port: 443",
            "X-Request-Start: 1",
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    let req = &dyno.requests()[0];
    assert_eq!(req.request_line(), "GET /p?q=1 HTTP/1.1");
    assert_eq!(
        req.header("x-forwarded-for").as_deref(),
        Some("10.1.2.3, 127.0.0.1")
    );
    assert_eq!(req.header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        req.header("x-forwarded-port"),
        Some(sy.addr.port().to_string())
    );
    let start: u64 = req
        .header("x-request-start")
        .and_then(|v| v.parse().ok())
        .expect("ms");
    assert!(
        start >= before && start <= router::clock::epoch_ms(),
        "epoch milliseconds"
    );
    assert_eq!(req.header("via").as_deref(), Some("1.1 switchyard"));
    assert_eq!(req.header("host").as_deref(), Some("demo.localhost"));
    for name in [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-request-start",
        "x-request-id",
        "via",
    ] {
        let times = req
            .head
            .lines()
            .filter(|l| {
                l.split_once(':')
                    .is_some_and(|(n, _)| n.eq_ignore_ascii_case(name))
            })
            .count();
        assert_eq!(times, 1, "{name} is sent once, the client's replaced");
    }
    assert_eq!(r.header("via").as_deref(), Some("1.1 switchyard"));
    let line = &sy.wait_lines(1).await[0];
    assert!(line.contains(r#"fwd="10.1.2.3, 127.0.0.1""#), "{line}");
}

#[tokio::test]
async fn request_id_kept_when_valid_replaced_otherwise() {
    let (dyno, sy) = echo().await;
    let good = "abcdefghij0123456789+/=-";
    let r = get(
        sy.addr,
        "demo.localhost",
        "/",
        &[&format!("X-Request-Id: {good}")],
    )
    .await;
    assert_eq!(r.header("x-request-id").as_deref(), Some(good));
    for bad in [
        "short",
        "has spaces in it but long enough",
        &"x".repeat(201),
    ] {
        let r = get(
            sy.addr,
            "demo.localhost",
            "/",
            &[&format!("X-Request-Id: {bad}")],
        )
        .await;
        let id = r.header("x-request-id").expect("returned to the client");
        assert_ne!(id, bad);
        assert!(
            uuid::Uuid::parse_str(&id).is_ok_and(|u| u.get_version_num() == 4),
            "{id}"
        );
    }
    let r = get(sy.addr, "demo.localhost", "/", &[]).await;
    let id = r.header("x-request-id").expect("generated");
    let reqs = dyno.requests();
    assert_eq!(reqs[0].header("x-request-id").as_deref(), Some(good));
    assert_eq!(reqs[4].header("x-request-id"), Some(id.clone()));
    let lines = sy.wait_lines(5).await;
    assert!(lines[0].contains(&format!("request_id={good} ")));
    assert!(lines[4].contains(&format!("request_id={id} ")));
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_both_ways() {
    let (dyno, sy) = echo().await;
    let r = raw(
        sy.addr,
        b"GET / HTTP/1.1\r\nHost: demo.localhost\r\nConnection: close, X-Private\r\nX-Private: secret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic Zm9v\r\nX-Kept: yes\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    let req = &dyno.requests()[0];
    for gone in ["x-private", "keep-alive", "te", "proxy-authorization"] {
        assert_eq!(req.header(gone), None, "{gone} must not reach the dyno");
    }
    assert_eq!(req.header("x-kept").as_deref(), Some("yes"));
    // The dyno said `Keep-Alive: timeout=120`; the client never sees it.
    assert_eq!(r.header("keep-alive"), None);
    assert!(r.header("x-dyno-port").is_some());
}

#[tokio::test]
async fn expect_100_continue_is_answered_by_the_router() {
    let (dyno, sy) = echo().await;
    let r = raw(
        sy.addr,
        b"POST /up HTTP/1.1\r\nHost: demo.localhost\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await;
    assert!(
        r.head.starts_with("HTTP/1.1 100 Continue") || r.status == 200,
        "{}",
        r.head
    );
    let req = &dyno.requests()[0];
    assert_eq!(
        req.header("expect"),
        None,
        "the dyno never sees the negotiation"
    );
    assert_eq!(req.body, b"hello");
}
