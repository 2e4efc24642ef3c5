//! Drains: exact bytes on the wire for syslog, syslog+tls and HTTPS;
//! retries and refusals; overflow accounting; isolation of a stalled drain.

use std::time::Duration;

use base64::Engine as _;
use logplex::{LogplexSettings, SessionParams, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

const TS: &str = "2026-11-22T10:00:00.123456+00:00";

fn ingest(plex: &Plex, token: &str, process: &str, msg: &str) {
    let frame = format!("<190>1 {TS} somehost {token} {process} - - {msg}");
    plex.logplex
        .ingest(frame.as_bytes(), Transport::Tcp)
        .unwrap();
}

fn stats_of(plex: &Plex, drain_id: &str) -> logplex::DrainStats {
    plex.logplex
        .drain_stats()
        .into_iter()
        .find(|s| s.drain_id == drain_id)
        .expect("drain running")
}

fn l10_count(text: &str) -> u64 {
    let rest = text
        .split("Error L10 (output buffer overflow): ")
        .nth(1)
        .unwrap();
    let rest = rest
        .strip_prefix("drain '")
        .map(|r| r.split_once("' dropped ").unwrap().1)
        .unwrap_or(rest);
    rest.split(' ').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn syslog_drain_writes_octet_counted_rfc5424() {
    let counters = crate::support::metrics::counters();
    let receiver = SyslogReceiver::start().await;
    let d = drain(&format!("syslog://{}", receiver.addr));
    let app = App::new("demo").drain(d.clone());
    let plex = Plex::start(quick_settings(), &[&app]).await;

    ingest(&plex, &app.app_token, "web.1", "hello drain");
    plex.logplex.emit(
        &app.id,
        "heroku",
        "router",
        "at=info method=GET path=\"/\" status=200",
    );
    eventually("two frames", || receiver.frames().len() == 2).await;
    let frames = receiver.frames();
    assert_eq!(
        frames[0],
        format!("<190>1 {TS} {} app web.1 - - hello drain\n", d.token)
    );
    let router = &frames[1];
    assert!(router.starts_with("<158>1 20"), "{router}");
    assert!(
        router.ends_with(&format!(
            " {} heroku router - - at=info method=GET path=\"/\" status=200\n",
            d.token
        )),
        "{router}"
    );
    eventually("delivered counted", || {
        stats_of(&plex, &d.id).delivered == 2
    })
    .await;
    let s = stats_of(&plex, &d.id);
    assert_eq!(
        (s.accepted, s.dropped, s.buffered, s.in_flight),
        (2, 0, 0, 0)
    );
    assert_eq!(s.transport, "syslog");
    let drain_labels = [("drain", d.id.as_str()), ("transport", "syslog")];
    assert_eq!(
        counters.get("logplex_drain_accepted_lines_total", &drain_labels),
        2
    );
    assert_eq!(
        counters.get("logplex_drain_delivered_lines_total", &drain_labels),
        2
    );
    assert!(counters.get("logplex_frames_received_total", &[("transport", "tcp")]) >= 1);
    assert_eq!(
        receiver.connections.lock().unwrap().clone(),
        1,
        "one connection reused"
    );
}

#[tokio::test]
async fn syslog_tls_drain_verifies_certificates() {
    let cert = Cert::new();
    let trusted = SyslogReceiver::start_tls(&cert).await;
    let untrusted = SyslogReceiver::start_tls(&Cert::new()).await;
    let insecure = SyslogReceiver::start_tls(&Cert::new()).await;
    let d_trusted = drain(&format!("syslog+tls://{}", trusted.addr));
    let d_untrusted = drain(&format!("syslog+tls://{}", untrusted.addr));
    let d_insecure = drain(&format!("syslog+tls://{}#insecure", insecure.addr));
    let app = App::new("demo")
        .drain(d_trusted.clone())
        .drain(d_untrusted.clone())
        .drain(d_insecure.clone());
    let settings = LogplexSettings {
        drain_tls: Some(client_trusting(&cert.der)),
        ..quick_settings()
    };
    let plex = Plex::start(settings, &[&app]).await;
    ingest(&plex, &app.app_token, "web.1", "secret");

    eventually("trusted delivery", || trusted.frames().len() == 1).await;
    assert_eq!(
        trusted.frames()[0],
        format!("<190>1 {TS} {} app web.1 - - secret\n", d_trusted.token)
    );
    eventually("insecure delivery", || insecure.frames().len() == 1).await;
    eventually("untrusted retried", || {
        *untrusted.connections.lock().unwrap() >= 2
    })
    .await;
    assert!(untrusted.frames().is_empty());
    let s = stats_of(&plex, &d_untrusted.id);
    assert_eq!((s.delivered, s.accepted), (0, 1));
    eventually("L14 in the app's stream", || {
        plex.logplex.recent(&app.id, 10).iter().any(|l| {
            l.contains(" heroku[logplex]: Error L14 (certificate validation): error=\"")
                && l.ends_with(&format!(" uri=\"syslog+tls://{}\"", untrusted.addr))
        })
    })
    .await;
}

#[tokio::test]
async fn https_drain_posts_logplex_frames_with_headers() {
    let cert = Cert::new();
    let receiver = HttpsReceiver::start(Some(&cert), &[]).await;
    let d = drain(&format!(
        "https://user:p%40ss@127.0.0.1:{}/logs?x=1",
        receiver.addr.port()
    ));
    let app = App::new("demo").drain(d.clone());
    let settings = LogplexSettings {
        drain_tls: Some(client_trusting(&cert.der)),
        ..quick_settings()
    };
    let plex = Plex::start(settings, &[&app]).await;
    ingest(&plex, &app.app_token, "web.1", "over https");
    eventually("one request", || receiver.requests().len() == 1).await;
    let req = &receiver.requests()[0];
    let h = &req.head.headers;
    assert_eq!(req.head.method, http::Method::POST);
    assert_eq!(req.head.uri.to_string(), "/logs?x=1");
    assert_eq!(h["content-type"], "application/logplex-1");
    assert_eq!(h["logplex-msg-count"], "1");
    assert_eq!(h["logplex-drain-token"], d.token.as_str());
    let frame_id = h["logplex-frame-id"].to_str().unwrap();
    assert_eq!(frame_id.len(), 32);
    assert!(frame_id
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()));
    assert!(h["user-agent"].to_str().unwrap().starts_with("Logplex/"));
    let creds = base64::engine::general_purpose::STANDARD.encode("user:p@ss");
    assert_eq!(h["authorization"], format!("Basic {creds}").as_str());
    let body = format!("<190>1 {TS} host app web.1 - over https\n");
    assert_eq!(&req.body[..], format!("{} {body}", body.len()).as_bytes());
    eventually("delivered", || stats_of(&plex, &d.id).delivered == 1).await;
}

#[tokio::test]
async fn https_drain_retries_then_drops_on_4xx_and_reports_it() {
    let receiver = HttpsReceiver::start(None, &[429, 500, 400]).await;
    let d = drain(&format!("http://127.0.0.1:{}/", receiver.addr.port()));
    let app = App::new("demo").drain(d.clone());
    let plex = Plex::start(quick_settings(), &[&app]).await;

    ingest(&plex, &app.app_token, "web.1", "refused");
    // The loss is reported at once, in a request of its own.
    eventually("loss reported", || stats_of(&plex, &d.id).reported == 1).await;
    let reqs = receiver.requests();
    assert_eq!(
        reqs.len(),
        4,
        "429 and 500 retried, 400 final, then the L10 line"
    );
    let ids: Vec<_> = reqs
        .iter()
        .map(|r| r.head.headers["logplex-frame-id"].clone())
        .collect();
    assert!(
        ids[..3].iter().all(|i| *i == ids[0]),
        "same Frame-Id on retries"
    );
    assert_ne!(ids[3], ids[0], "a new batch, a new Frame-Id");
    let l10 = &reqs[3];
    assert_eq!(l10.head.headers["logplex-msg-count"], "1");
    let (frames, _) = octet_frames(&l10.body);
    assert!(frames[0].starts_with("<172>1 "), "{}", frames[0]);
    assert!(frames[0].contains(
        " host heroku logplex - Error L10 (output buffer overflow): 1 messages dropped since "
    ));
    assert!(frames[0].ends_with(".\n"));

    ingest(&plex, &app.app_token, "web.1", "accepted");
    eventually("fifth request", || receiver.requests().len() == 5).await;
    let last = &receiver.requests()[4];
    assert_eq!(last.head.headers["logplex-msg-count"], "1");
    assert!(String::from_utf8_lossy(&last.body).ends_with(" host app web.1 - accepted\n"));
    eventually("settled", || stats_of(&plex, &d.id).delivered == 1).await;
    let s = stats_of(&plex, &d.id);
    assert_eq!(
        (s.accepted, s.delivered, s.dropped, s.reported),
        (2, 1, 1, 1)
    );
}

#[tokio::test]
async fn overflow_reports_exactly_the_lines_lost() {
    // A drain whose endpoint is down while 500 lines arrive into a buffer of 50.
    // Bound but not listening: connects are refused, and the port stays
    // this test's until it listens on it.
    let parked = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    parked.bind(&any.into()).unwrap();
    let addr = parked.local_addr().unwrap().as_socket().unwrap();
    let d = drain(&format!("syslog://{addr}"));
    let app = App::new("demo").drain(d.clone());
    let settings = LogplexSettings {
        drain_buffer_lines: 50,
        ..quick_settings()
    };
    let plex = Plex::start(settings, &[&app]).await;
    for i in 0..500 {
        plex.logplex
            .emit(&app.id, "app", "web.1", &format!("line {i}"));
    }
    // The emits ran without a pause, so the drain task had no turn: all
    // but the last 50 lines overflowed.
    let s = stats_of(&plex, &d.id);
    assert_eq!((s.accepted, s.dropped), (500, 450), "{s:?}");

    assert!(
        !plex.logplex.flush(Duration::from_millis(100)).await,
        "a drain that cannot deliver is not flushed"
    );

    // The endpoint comes back.
    parked.listen(128).unwrap();
    parked.set_nonblocking(true).unwrap();
    let listener = TcpListener::from_std(parked.into()).unwrap();
    let receiver = SyslogReceiver::serve(listener, None);
    eventually("drain idle", || {
        let s = stats_of(&plex, &d.id);
        s.buffered == 0 && s.in_flight == 0 && s.reported == s.dropped
    })
    .await;
    let s = stats_of(&plex, &d.id);
    assert_eq!(s.accepted, s.delivered + s.dropped, "{s:?}");
    let frames = receiver.frames();
    let (l10, lines): (Vec<_>, Vec<_>) = frames.iter().partition(|f| f.contains(" Error L10 "));
    let reported: u64 = l10.iter().map(|f| l10_count(f)).sum();
    assert_eq!(
        reported, s.dropped,
        "L10 lines in the drain add up to the loss"
    );
    assert_eq!(lines.len() as u64, s.delivered);
    assert_eq!(
        500 - lines.len() as u64,
        reported,
        "lines missing at the receiver = reported"
    );
    assert!(
        l10[0].starts_with("<172>1 ")
            && l10[0].contains(&format!(" {} heroku logplex - - ", d.token))
    );
    assert!(lines.last().unwrap().ends_with(" app web.1 - - line 499\n"));

    // And the app's own stream says so, naming the drain, with the same total.
    eventually("app stream reports all the loss", || {
        let total: u64 = plex
            .logplex
            .recent(&app.id, 1500)
            .iter()
            .filter(|l| l.contains(" heroku[logplex]: Error L10 "))
            .map(|l| l10_count(l))
            .sum();
        total == s.dropped
    })
    .await;
    let line = plex
        .logplex
        .recent(&app.id, 1500)
        .into_iter()
        .find(|l| l.contains("Error L10"))
        .unwrap();
    assert!(
        line.contains(&format!("drain '{}' dropped ", d.token)),
        "{line}"
    );
}

#[tokio::test]
async fn stalled_drain_delays_neither_another_drain_nor_a_tail() {
    let (stalled_addr, _held) = stalled_receiver().await;
    let healthy = SyslogReceiver::start().await;
    let d_stalled = drain(&format!("syslog://{stalled_addr}"));
    let d_healthy = drain(&format!("syslog://{}", healthy.addr));
    let app = App::new("demo")
        .drain(d_stalled.clone())
        .drain(d_healthy.clone());
    let settings = LogplexSettings {
        drain_buffer_lines: 200,
        ..quick_settings()
    };
    let plex = Plex::start(settings, &[&app]).await;

    // A tail over HTTP, counting lines as they arrive.
    let params = SessionParams {
        tail: true,
        lines: Some(0),
        ..Default::default()
    };
    let id = plex.logplex.create_session(&app.id, params).unwrap();
    let mut tail = TcpStream::connect(plex.http).await.unwrap();
    tail.write_all(format!("GET /sessions/{id} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let tail_lines = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = tail_lines.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        // Keep the last bytes of each read so a marker split across reads
        // is still seen (once: a 5-byte carry cannot hold a whole marker).
        let mut carry: Vec<u8> = Vec::new();
        while let Ok(n) = tail.read(&mut buf).await {
            if n == 0 {
                break;
            }
            carry.extend_from_slice(&buf[..n]);
            let seen = carry.windows(6).filter(|w| *w == b"]: pad").count();
            counter.fetch_add(seen, std::sync::atomic::Ordering::SeqCst);
            carry.drain(..carry.len().saturating_sub(5));
        }
    });
    eventually("tail registered", || {
        plex.logplex.channel(&app.id).unwrap().tail_count() == 1
    })
    .await;

    // 20 MB through both drains, in steps the healthy side must keep up with
    // while the stalled side's socket buffers fill and its buffer overflows.
    let pad = "p".repeat(4000);
    let total = 5000;
    let step_lines = 100; // at most the healthy drain's buffer
    for step in 0..total / step_lines {
        for i in 0..step_lines {
            plex.logplex.emit(
                &app.id,
                "app",
                "web.1",
                &format!("pad {} {pad}", step * step_lines + i),
            );
        }
        let sent = (step + 1) * step_lines;
        eventually("healthy drain keeps up", || healthy.count() == sent).await;
        eventually("tail keeps up", || {
            tail_lines.load(std::sync::atomic::Ordering::SeqCst) == sent
        })
        .await;
    }
    let stalled = stats_of(&plex, &d_stalled.id);
    assert!(
        stalled.dropped > 0,
        "the stalled drain overflowed: {stalled:?}"
    );
    let h = stats_of(&plex, &d_healthy.id);
    assert_eq!((h.delivered, h.dropped), (total as u64, 0));
    assert!(healthy.frames()[total - 1].ends_with(&format!("pad {} {pad}\n", total - 1)));
}

#[tokio::test]
async fn reconfiguring_keeps_unchanged_drains_and_stops_removed_ones() {
    let receiver = SyslogReceiver::start().await;
    let kept = drain(&format!("syslog://{}", receiver.addr));
    let removed = drain(&format!("syslog://{}", receiver.addr));
    let app = App::new("demo").drain(kept.clone()).drain(removed.clone());
    let plex = Plex::start(quick_settings(), &[&app]).await;
    plex.logplex.emit(&app.id, "app", "web.1", "before");
    eventually("both delivered", || receiver.frames().len() == 2).await;

    let mut app2 = app.clone();
    app2.drains = vec![kept.clone()];
    plex.configure(&[&app2]);
    plex.logplex.emit(&app.id, "app", "web.1", "after");
    eventually("kept drain delivers", || {
        stats_of(&plex, &kept.id).delivered == 2
    })
    .await;
    let stats = plex.logplex.drain_stats();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].accepted, 2, "counters survive the reconfiguration");
    assert!(plex.logplex.flush(Duration::from_secs(5)).await);
    assert_eq!(receiver.frames().len(), 3);
}

#[tokio::test]
async fn drains_configured_from_a_plain_thread_run_on_the_runtime() {
    let receiver = SyslogReceiver::start().await;
    let d = drain(&format!("syslog://{}", receiver.addr));
    let app = App::new("demo");
    let plex = Plex::start(quick_settings(), &[&app]).await;
    let with_drain = app.clone().drain(d.clone());
    let logplex = plex.logplex.clone();
    std::thread::spawn(move || {
        logplex.configure(logplex::LogplexConfig {
            revision: 2,
            channels: vec![with_drain.spec()],
        })
    })
    .join()
    .unwrap();
    plex.logplex.emit(
        &app.id,
        "heroku",
        "api",
        "Scaled to web@2:Standard-1X by user x@example.com",
    );
    eventually("delivered", || receiver.count() == 1).await;
    assert!(receiver.frames()[0]
        .contains(" heroku api - - Scaled to web@2:Standard-1X by user x@example.com\n"));
}
