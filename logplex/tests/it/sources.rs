//! Sources: real `logger` over TCP (octet-counted and newline) and UDP, TLS,
//! `POST /logs`, and what happens to bad input.

use std::io::Write as _;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::*;

#[tokio::test]
async fn logger_tcp_octet_counted() {
    let app = App::new("demo");
    let plex = Plex::start(quick_settings(), &[&app]).await;
    let port = plex.tcp.port().to_string();
    let tag = app.app_token.clone();
    logger(
        &[
            "--tcp",
            "--octet-count",
            "--server",
            "127.0.0.1",
            "--port",
            &port,
            "--tag",
            &tag,
            "--id=4242",
        ],
        &["first octet line", "second octet line"],
    )
    .await;
    eventually("two lines in history", || plex.messages(&app).len() == 2).await;
    let lines = plex.logplex.recent(&app.id, 10);
    assert!(
        lines[0].ends_with(" app[4242]: first octet line"),
        "{lines:?}"
    );
    assert!(
        lines[1].ends_with(" app[4242]: second octet line"),
        "{lines:?}"
    );
    assert!(
        !lines[0].contains(&app.app_token),
        "token replaced by its name"
    );
}

#[tokio::test]
async fn logger_tcp_newline_framed() {
    let app = App::new("demo");
    let plex = Plex::start(quick_settings(), &[&app]).await;
    let port = plex.tcp.port().to_string();
    let tag = app.heroku_token.clone();
    logger(
        &[
            "--tcp",
            "--server",
            "127.0.0.1",
            "--port",
            &port,
            "--tag",
            &tag,
        ],
        &["newline one", "newline two", "newline three"],
    )
    .await;
    eventually("three lines", || plex.messages(&app).len() == 3).await;
    assert_eq!(
        plex.messages(&app),
        ["newline one", "newline two", "newline three"]
    );
    assert!(plex.logplex.recent(&app.id, 1)[0].contains(" heroku"));
}

#[tokio::test]
async fn logger_udp() {
    let app = App::new("demo");
    let plex = Plex::start(quick_settings(), &[&app]).await;
    let port = plex.udp.port().to_string();
    let tag = app.app_token.clone();
    // UDP may lose a datagram on a loaded machine: send until one arrives.
    let deadline = tokio::time::Instant::now() + patience();
    while plex.messages(&app).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no UDP line arrived"
        );
        logger(
            &[
                "--udp",
                "--server",
                "127.0.0.1",
                "--port",
                &port,
                "--tag",
                &tag,
            ],
            &["over udp"],
        )
        .await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(plex.messages(&app)[0], "over udp");
}

#[tokio::test]
async fn tls_source_takes_octet_counted_frames() {
    let app = App::new("demo");
    let plex = Plex::start(quick_settings(), &[&app]).await;
    let connector = tokio_rustls::TlsConnector::from(client_trusting(&plex.tls_cert));
    let tcp = TcpStream::connect(plex.tls).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let msg = format!(
        "<190>1 2026-11-22T10:00:00.123456+00:00 host {} web.1 - - over tls",
        app.app_token
    );
    tls.write_all(&frames(&[&msg, &msg.replace("over", "again over")]))
        .await
        .unwrap();
    tls.flush().await.unwrap();
    eventually("two TLS lines", || plex.messages(&app).len() == 2).await;
    assert_eq!(
        plex.logplex.recent(&app.id, 1),
        ["2026-11-22T10:00:00.123456+00:00 app[web.1]: again over tls"]
    );
}

#[tokio::test]
async fn http_post_logs_accepts_logplex_frames() {
    let app = App::new("demo");
    let plex = Plex::start(quick_settings(), &[&app]).await;
    let body = frames(&[
        &format!(
            "<190>1 2026-11-22T10:00:00.000001+00:00 host {} web.1 - - posted one",
            app.app_token
        ),
        "<190>1 2026-11-22T10:00:00.000002+00:00 host anything worker.2 - - posted two\n",
    ]);
    let (status, _, _) = http_request(
        plex.http,
        &post_logs(Some(&app.app_token), &body, &[("Logplex-Msg-Count", "2")]),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(
        plex.logplex.recent(&app.id, 10),
        [
            "2026-11-22T10:00:00.000001+00:00 app[web.1]: posted one",
            "2026-11-22T10:00:00.000002+00:00 app[worker.2]: posted two",
        ]
    );

    // gzip
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&frames(&[
        "<190>1 2026-11-22T10:00:01+00:00 host x web.3 - - zipped",
    ]))
    .unwrap();
    let gz = gz.finish().unwrap();
    let (status, _, _) = http_request(
        plex.http,
        &post_logs(Some(&app.app_token), &gz, &[("Content-Encoding", "gzip")]),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(plex.messages(&app).last().unwrap(), "zipped");
}

#[tokio::test]
async fn http_post_logs_rejects_bad_requests() {
    let app = App::new("demo");
    let settings = logplex::LogplexSettings {
        max_body_bytes: 50_000,
        ..quick_settings()
    };
    let plex = Plex::start(settings, &[&app]).await;
    let good = "<190>1 2026-11-22T10:00:00+00:00 host x web.1 - - fine";
    let body = frames(&[good]);

    let (status, headers, _) = http_request(plex.http, &post_logs(None, &body, &[])).await;
    assert_eq!(status, 401);
    assert_eq!(
        header(&headers, "www-authenticate"),
        Some("Basic realm=Logplex")
    );
    let (status, _, _) = http_request(plex.http, &post_logs(Some(&token()), &body, &[])).await;
    assert_eq!(status, 401, "unknown token");

    let (status, _, text) = http_request(
        plex.http,
        &post_logs(Some(&app.app_token), &body, &[("Logplex-Msg-Count", "3")]),
    )
    .await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&text).contains("Message count mismatch"));

    let mut bad = frames(&[good]);
    bad.extend_from_slice(b"<190>1 newline framed\n");
    let (status, _, text) =
        http_request(plex.http, &post_logs(Some(&app.app_token), &bad, &[])).await;
    assert_eq!(status, 400);
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("frame 2"), "{text}");

    let bad = frames(&[good, "not syslog at all"]);
    let (status, _, text) =
        http_request(plex.http, &post_logs(Some(&app.app_token), &bad, &[])).await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&text).contains("frame 2"));

    let (status, _, _) = http_request(
        plex.http,
        &post_logs(
            Some(&app.app_token),
            &body,
            &[("Content-Type", "text/plain")],
        ),
    )
    .await;
    assert_eq!(status, 415);

    assert!(
        plex.messages(&app).is_empty(),
        "no line of a rejected request is taken"
    );
    assert_eq!(
        plex.logplex.ingest_stats().malformed,
        2,
        "one per rejected body"
    );
}

#[tokio::test]
async fn bad_syslog_input_is_counted_and_the_stream_goes_on() {
    let app = App::new("demo");
    let mut settings = quick_settings();
    settings.max_frame_bytes = 30_000;
    let plex = Plex::start(settings, &[&app]).await;
    let mut s = TcpStream::connect(plex.tcp).await.unwrap();
    let unknown = format!(
        "<190>1 2026-11-22T10:00:00+00:00 h {} web.1 - - who",
        token()
    );
    let long = "x".repeat(25_000);
    let split = format!(
        "<190>1 2026-11-22T10:00:00+00:00 h {} web.1 - - {long}",
        app.app_token
    );
    let last = format!(
        "<190>1 2026-11-22T10:00:00+00:00 h {} web.1 - - still here",
        app.app_token
    );
    let mut input = b"garbage without priority\n".to_vec();
    input.extend_from_slice(&frames(&[&unknown]));
    input.extend_from_slice(format!("40000 {}", "y".repeat(40_000)).as_bytes()); // oversized
    input.extend_from_slice(&frames(&[&split]));
    input.extend_from_slice(&[0xff, 0xfe, b'\n']); // not UTF-8
    input.extend_from_slice(&frames(&[&last]));
    s.write_all(&input).await.unwrap();
    eventually("the last line", || {
        plex.messages(&app).last().map(String::as_str) == Some("still here")
    })
    .await;
    let msgs = plex.messages(&app);
    assert_eq!(
        msgs.len(),
        4,
        "25 000 bytes split into 10 000 + 10 000 + 5 000, then the last line"
    );
    assert_eq!(
        (msgs[0].len(), msgs[1].len(), msgs[2].len()),
        (10_000, 10_000, 5_000)
    );
    let stats = plex.logplex.ingest_stats();
    assert_eq!(stats.malformed, 3, "{stats:?}");
    assert_eq!(stats.unknown_token, 1, "{stats:?}");
}

#[tokio::test]
async fn emit_is_in_process_and_unknown_apps_are_counted() {
    let app = App::new("demo");
    let plex = Plex::start(quick_settings(), &[&app]).await;
    plex.logplex.emit(
        &app.id,
        "heroku",
        "router",
        "at=info method=GET path=\"/\" status=200",
    );
    plex.logplex.emit("no-such-app", "heroku", "router", "lost");
    let lines = plex.logplex.recent(&app.id, 10);
    assert_eq!(lines.len(), 1);
    assert!(lines[0].ends_with(" heroku[router]: at=info method=GET path=\"/\" status=200"));
    assert_eq!(plex.logplex.ingest_stats().unknown_token, 1);
}
