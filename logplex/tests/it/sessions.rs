//! Log sessions: text and SSE, recent then live, filters, expiry, and the
//! 1500-line history.

use std::time::Duration;

use logplex::{LogplexSettings, SessionParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

fn get(id: &str, accept: Option<&str>) -> Vec<u8> {
    let mut req = format!("GET /sessions/{id} HTTP/1.1\r\nHost: logplex\r\nConnection: close\r\n");
    if let Some(a) = accept {
        req.push_str(&format!("Accept: {a}\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

fn seed(plex: &Plex, app: &App) {
    let l = &plex.logplex;
    l.emit(&app.id, "app", "web.1", "web one");
    l.emit(&app.id, "heroku", "router", "router line");
    l.emit(&app.id, "app", "worker.1", "worker one");
    l.emit(&app.id, "app", "web.2", "web two");
    l.emit(
        &app.id,
        "heroku",
        "web.1",
        "State changed from starting to up",
    );
}

fn messages(body: &[u8], sse: bool) -> Vec<String> {
    let text = String::from_utf8(body.to_vec()).unwrap();
    let lines: Vec<&str> = if sse {
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| e.strip_prefix("data: ").expect("one data: per event"))
            .collect()
    } else {
        text.lines().collect()
    };
    lines
        .iter()
        .map(|l| l.split_once(' ').unwrap().1.to_string())
        .collect()
}

#[tokio::test]
async fn text_session_shows_recent_lines_with_filters() {
    let app = App::new("demo");
    let plex = Plex::start(quick_settings(), &[&app]).await;
    seed(&plex, &app);

    let id = plex
        .logplex
        .create_session(&app.id, SessionParams::default())
        .unwrap();
    let (status, headers, body) = http_request(plex.http, &get(&id, None)).await;
    assert_eq!(status, 200);
    assert!(header(&headers, "content-type")
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(
        messages(&body, false),
        [
            "app[web.1]: web one",
            "heroku[router]: router line",
            "app[worker.1]: worker one",
            "app[web.2]: web two",
            "heroku[web.1]: State changed from starting to up",
        ]
    );

    let params = SessionParams {
        source: Some("app".into()),
        dyno: Some("web".into()),
        ..Default::default()
    };
    let id = plex.logplex.create_session(&app.id, params).unwrap();
    let (_, _, body) = http_request(plex.http, &get(&id, None)).await;
    assert_eq!(
        messages(&body, false),
        ["app[web.1]: web one", "app[web.2]: web two"]
    );

    let params = SessionParams {
        dyno: Some("web.1".into()),
        lines: Some(1),
        ..Default::default()
    };
    let id = plex.logplex.create_session(&app.id, params).unwrap();
    let (_, _, body) = http_request(plex.http, &get(&id, None)).await;
    assert_eq!(
        messages(&body, false),
        ["heroku[web.1]: State changed from starting to up"]
    );

    assert!(plex
        .logplex
        .create_session("unknown-app", SessionParams::default())
        .is_none());
    let (status, _, _) = http_request(plex.http, &get("not-a-session", None)).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn sse_session_tails_live_lines() {
    let app = App::new("demo");
    let plex = Plex::start(quick_settings(), &[&app]).await;
    seed(&plex, &app);
    let params = SessionParams {
        tail: true,
        source: Some("heroku".into()),
        lines: Some(1),
        ..Default::default()
    };
    let id = plex.logplex.create_session(&app.id, params).unwrap();
    let mut s = TcpStream::connect(plex.http).await.unwrap();
    s.write_all(&get(&id, Some("text/event-stream")))
        .await
        .unwrap();

    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    let read_until = |data: &Vec<u8>, needle: &str| String::from_utf8_lossy(data).contains(needle);
    let deadline = tokio::time::Instant::now() + patience();
    while !read_until(&data, "starting to up\n\n") {
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "stream closed early");
        data.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&data).to_string();
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(!head.contains("web one"), "filtered out and beyond lines=1");

    // Live: the session registered its tail before answering.
    eventually("tail registered", || {
        plex.logplex.channel(&app.id).unwrap().tail_count() == 1
    })
    .await;
    plex.logplex
        .emit(&app.id, "app", "web.1", "not for this tail");
    plex.logplex
        .emit(&app.id, "heroku", "router", "live router line");
    while !read_until(&data, "live router line\n\n") {
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "stream closed early");
        data.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&data);
    assert!(!text.contains("not for this tail"));
    let body_start = text.find("\r\n\r\n").unwrap() + 4;
    let events = String::from_utf8(dechunk(&data[body_start..])).unwrap();
    let events: Vec<&str> = events.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        events[0].starts_with("data: ")
            && events[0].ends_with(" heroku[web.1]: State changed from starting to up")
    );
    assert!(
        events[1].starts_with("data: ") && events[1].ends_with(" heroku[router]: live router line")
    );

    // The tail goes away with the client.
    drop(s);
    eventually("tail removed", || {
        plex.logplex
            .emit(&app.id, "heroku", "router", "after close");
        plex.logplex.channel(&app.id).unwrap().tail_count() == 0
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn unused_sessions_expire() {
    let app = App::new("demo");
    let ttl = Duration::from_secs(300);
    let settings = LogplexSettings {
        session_ttl: ttl,
        ..quick_settings()
    };
    let plex = Plex::start(settings, &[&app]).await;
    let create = || {
        plex.logplex
            .create_session(&app.id, SessionParams::default())
            .unwrap()
    };
    let (fetched, forgotten) = (create(), create());
    tokio::time::advance(ttl - Duration::from_secs(1)).await;
    assert_eq!(http_request(plex.http, &get(&fetched, None)).await.0, 200);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(
        http_request(plex.http, &get(&forgotten, None)).await.0,
        404,
        "not fetched within the TTL"
    );
}

#[tokio::test]
async fn history_holds_exactly_the_last_1500_lines() {
    let app = App::new("demo");
    let plex = Plex::start(quick_settings(), &[&app]).await;
    for i in 0..2000 {
        plex.logplex
            .emit(&app.id, "app", "web.1", &format!("line {i}"));
    }
    let recent = plex.messages(&app);
    assert_eq!(recent.len(), 1500);
    assert_eq!(recent[0], "line 500");
    assert_eq!(recent[1499], "line 1999");

    let params = SessionParams {
        lines: Some(5000),
        ..Default::default()
    };
    let id = plex.logplex.create_session(&app.id, params).unwrap();
    let (_, _, body) = http_request(plex.http, &get(&id, None)).await;
    let lines = messages(&body, false);
    assert_eq!(lines.len(), 1500, "at most 1500");
    assert_eq!(lines[0], "app[web.1]: line 500");

    let id = plex
        .logplex
        .create_session(&app.id, SessionParams::default())
        .unwrap();
    let (_, _, body) = http_request(plex.http, &get(&id, None)).await;
    assert_eq!(messages(&body, false).len(), 100, "default 100");

    // Reconfiguring keeps the history of channels that remain.
    plex.configure(&[&app]);
    assert_eq!(plex.messages(&app).len(), 1500);
}

#[tokio::test]
async fn slow_tail_loses_oldest_lines_and_says_so_with_l11() {
    use http_body_util::BodyExt;
    let app = App::new("demo");
    let settings = LogplexSettings {
        tail_buffer_lines: 3,
        ..quick_settings()
    };
    let plex = Plex::start(settings, &[&app]).await;
    let params = SessionParams {
        tail: true,
        lines: Some(0),
        ..Default::default()
    };
    let id = plex.logplex.create_session(&app.id, params).unwrap();
    let mut body = plex
        .logplex
        .open_session(&id, logplex::session::Format::Text)
        .unwrap();
    // The client reads nothing while ten lines arrive.
    for i in 0..10 {
        plex.logplex
            .emit(&app.id, "app", "web.1", &format!("line {i}"));
    }
    let chunk = body.frame().await.unwrap().unwrap().into_data().unwrap();
    let text = String::from_utf8(chunk.to_vec()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].ends_with("app[web.1]: line 0"));
    assert!(lines[2].ends_with("app[web.1]: line 2"));
    assert!(
        lines[3].contains(" heroku[logplex]: Error L11 (Tail buffer overflow) -> This tail session dropped 7 messages since "),
        "{text}"
    );
    plex.logplex.emit(&app.id, "app", "web.1", "line 10");
    let chunk = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(String::from_utf8_lossy(&chunk).ends_with("app[web.1]: line 10\n"));
}
