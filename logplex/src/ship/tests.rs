use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chrono::TimeZone;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::frame::Framer;

const TOKEN: &str = "t.0b8a3d4e-0000-4000-8000-000000000001";

/// The directory of a test: one token, a destination the test moves.
struct Fixed {
    dest: Mutex<Option<Arc<str>>>,
}

impl Fixed {
    fn new(dest: Option<String>) -> Arc<Fixed> {
        Arc::new(Fixed {
            dest: Mutex::new(dest.map(Into::into)),
        })
    }

    fn point_at(&self, dest: Option<String>) {
        *self.dest.lock().expect("lock") = dest.map(Into::into);
    }
}

impl Directory for Fixed {
    fn token(&self, app_id: &str) -> Option<Arc<str>> {
        (app_id != "tokenless").then(|| TOKEN.into())
    }
    fn destination(&self, _app_id: &str) -> Option<Arc<str>> {
        self.dest.lock().expect("lock").clone()
    }
}

fn settings() -> ShipSettings {
    ShipSettings {
        host: "router-7".into(),
        linger: Duration::from_millis(2),
        max_backoff: Duration::from_millis(200),
        ..ShipSettings::default()
    }
}

/// Polls `done` until it holds; panics after ten seconds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads frames from `conn` until `n` have come, as text.
async fn frames(conn: &mut TcpStream, buf: &mut BytesMut, n: usize) -> Vec<String> {
    let mut framer = Framer::new(10_240);
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        while let Some(frame) = framer.next_frame(buf) {
            let frame = frame.expect("a well-formed frame");
            out.push(String::from_utf8(frame.to_vec()).expect("UTF-8"));
        }
        if out.len() >= n {
            break;
        }
        let read = tokio::time::timeout_at(deadline, conn.read_buf(buf))
            .await
            .expect("frames in time")
            .expect("read");
        assert!(read > 0, "the shipper closed the connection: {out:?}");
    }
    out
}

#[test]
fn a_router_line_is_one_octet_counted_rfc5424_frame_carrying_the_token() {
    let time = Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 0).unwrap();
    let mut out = Vec::new();
    write_frame(
        &mut out,
        time,
        PRI_HEROKU,
        "router-7",
        TOKEN,
        "router",
        "at=info method=GET path=\"/a\" status=200",
    );
    let body = format!(
        "<158>1 2026-11-29T10:00:00.000000+00:00 router-7 {TOKEN} router - - \
         at=info method=GET path=\"/a\" status=200\n"
    );
    assert_eq!(
        String::from_utf8(out.clone()).unwrap(),
        format!("{} {body}", body.len())
    );
    // What logplex's ingest reads of it: the token where it looks for one.
    let mut buf = BytesMut::from(&out[..]);
    let frame = Framer::new(10_240).next_frame(&mut buf).unwrap().unwrap();
    let m = message::parse(&frame).expect("parses");
    assert_eq!(m.pri, PRI_HEROKU);
    assert_eq!(m.app_name, Some(TOKEN));
    assert_eq!(m.procid.as_deref(), Some("router"));
    assert_eq!(m.msg, "at=info method=GET path=\"/a\" status=200");
}

#[test]
fn the_book_keeps_the_first_loss_time_and_sums_counts() {
    let t0 = Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 0).unwrap();
    let t1 = t0 + chrono::TimeDelta::seconds(5);
    let mut book = Book::default();
    book.add("a", 2, t1);
    book.add("a", 3, t0);
    book.add("b", 0, t0);
    assert_eq!(
        book.get("a"),
        Some(Loss {
            count: 5,
            since: t0
        })
    );
    assert_eq!(book.get("b"), None, "nothing lost, nothing to report");
    assert_eq!(book.take("a").map(|l| l.count), Some(5));
    assert_eq!(book.get("a"), None, "a loss is reported once");
}

#[tokio::test]
async fn lines_go_in_order_over_one_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dir = Fixed::new(Some(listener.local_addr().unwrap().to_string()));
    let shipper = Shipper::start(settings(), dir);
    for i in 0..3 {
        shipper.enqueue("app-a", &format!("at=info path=\"/{i}\""), Instant::now());
    }
    let (mut conn, _) = listener.accept().await.unwrap();
    let mut buf = BytesMut::new();
    let got = frames(&mut conn, &mut buf, 3).await;
    for (i, frame) in got.iter().enumerate() {
        assert!(
            frame.starts_with("<158>1 ")
                && frame.contains(&format!(" router-7 {TOKEN} router - - ")),
            "{frame}"
        );
        assert!(
            frame.ends_with(&format!("at=info path=\"/{i}\"\n")),
            "{frame}"
        );
    }
    // More lines reuse the connection; a flush (shutdown) sends them at
    // once and returns when they are written.
    shipper.enqueue("app-a", "at=info path=\"/3\"", Instant::now());
    assert!(shipper.flush(Duration::from_secs(10)).await);
    assert_eq!(shipper.stats().shipped.load(Ordering::Relaxed), 4);
    let got = frames(&mut conn, &mut buf, 1).await;
    assert!(got[0].ends_with("path=\"/3\"\n"), "{got:?}");
    assert_eq!(shipper.stats().dropped.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn lines_with_no_log_router_are_counted_then_reported_before_new_lines() {
    let dir = Fixed::new(None);
    let shipper = Shipper::start(settings(), dir.clone());
    for i in 0..5 {
        shipper.enqueue("app-a", &format!("lost {i}"), Instant::now());
    }
    shipper.enqueue("tokenless", "no token, no report", Instant::now());
    until("six lines counted dropped", || {
        shipper.stats().dropped.load(Ordering::Relaxed) == 6
    })
    .await;
    assert_eq!(shipper.unreported("app-a").map(|l| l.count), Some(5));
    assert_eq!(shipper.unreported("tokenless"), None);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    dir.point_at(Some(listener.local_addr().unwrap().to_string()));
    shipper.enqueue("app-a", "back", Instant::now());
    let (mut conn, _) = listener.accept().await.unwrap();
    let got = frames(&mut conn, &mut BytesMut::new(), 2).await;
    assert!(
        got[0].starts_with("<172>1 ")
            && got[0].contains(&format!(" router-7 {TOKEN} router - - "))
            && got[0].contains(
                "Error L10 (output buffer overflow): router 'router-7' dropped 5 messages since "
            ),
        "the report comes first: {got:?}"
    );
    assert!(got[1].ends_with(" - - back\n"), "{got:?}");
    assert_eq!(shipper.unreported("app-a"), None, "reported once");
    assert_eq!(shipper.stats().reported.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_log_router_that_goes_away_costs_counted_lines_reported_on_its_return() {
    let first = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dir = Fixed::new(Some(first.local_addr().unwrap().to_string()));
    let shipper = Shipper::start(settings(), dir.clone());
    shipper.enqueue("app-a", "before", Instant::now());
    let (mut conn, _) = first.accept().await.unwrap();
    let got = frames(&mut conn, &mut BytesMut::new(), 1).await;
    assert!(got[0].ends_with(" - - before\n"));

    // The log router goes: its connection and its listener.
    drop(conn);
    drop(first);
    let stats = shipper.stats();
    let accounted =
        || stats.shipped.load(Ordering::Relaxed) + stats.dropped.load(Ordering::Relaxed);
    for i in 0..20 {
        shipper.enqueue("app-a", &format!("while away {i}"), Instant::now());
        until("the line is accounted for", || accounted() == 2 + i).await;
    }
    let dropped = stats.dropped.load(Ordering::Relaxed);
    assert!(
        dropped > 0,
        "lines written to a closed log router are counted"
    );

    // It comes back elsewhere.
    let second = TcpListener::bind("127.0.0.1:0").await.unwrap();
    dir.point_at(Some(second.local_addr().unwrap().to_string()));
    shipper.enqueue("app-a", "after", Instant::now());
    let (mut conn, _) = second.accept().await.unwrap();
    let got = frames(&mut conn, &mut BytesMut::new(), 2).await;
    assert!(
        got[0].contains(&format!(
            "router 'router-7' dropped {dropped} messages since "
        )),
        "the exact count: {got:?}"
    );
    assert!(got[1].ends_with(" - - after\n"), "{got:?}");
}

#[tokio::test]
async fn lines_past_a_full_lane_are_counted_and_reported_exactly() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dir = Fixed::new(Some(listener.local_addr().unwrap().to_string()));
    let shipper = Shipper::start(
        ShipSettings {
            lane_lines: 2,
            batch_lines: 2,
            ..settings()
        },
        dir,
    );
    // The task cannot run between these (no await): the lane takes two.
    for i in 0..5 {
        shipper.enqueue("app-a", &format!("burst {i}"), Instant::now());
    }
    assert_eq!(shipper.stats().dropped.load(Ordering::Relaxed), 0);
    let (mut conn, _) = listener.accept().await.unwrap();
    let mut buf = BytesMut::new();
    // The loss is known when the lane is taken: reported before the lines
    // that survived it, as Logplex reports a drain's loss.
    let got = frames(&mut conn, &mut buf, 3).await;
    assert!(
        got[0].contains("router 'router-7' dropped 3 messages since "),
        "{got:?}"
    );
    assert!(
        got[1].ends_with(" - - burst 0\n") && got[2].ends_with(" - - burst 1\n"),
        "{got:?}"
    );
    assert_eq!(shipper.stats().dropped.load(Ordering::Relaxed), 3);
    assert_eq!(shipper.unreported("app-a"), None, "reported once");
    shipper.enqueue("app-a", "later", Instant::now());
    let got = frames(&mut conn, &mut buf, 1).await;
    assert!(
        got[0].ends_with(" - - later\n"),
        "no second report: {got:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_link_no_line_was_routed_to_for_a_while_is_closed_and_opened_again_when_needed() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dir = Fixed::new(Some(listener.local_addr().unwrap().to_string()));
    let shipper = Shipper::start(settings(), dir);
    shipper.enqueue("app-a", "first", Instant::now());
    let (mut conn, _) = listener.accept().await.unwrap();
    let got = frames(&mut conn, &mut BytesMut::new(), 1).await;
    assert!(got[0].ends_with(" - - first\n"), "{got:?}");

    // Idle past the limit (paused time: the clock jumps): the shipper
    // closes the connection.
    tokio::time::sleep(LINK_IDLE + REPORT_TICK * 2).await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut rest))
        .await
        .expect("the idle link is closed")
        .unwrap();
    assert_eq!(read, 0, "closed, with nothing more sent");

    // The next line opens a new one.
    shipper.enqueue("app-a", "again", Instant::now());
    let (mut conn, _) = listener.accept().await.unwrap();
    let got = frames(&mut conn, &mut BytesMut::new(), 1).await;
    assert!(got[0].ends_with(" - - again\n"), "{got:?}");
    assert_eq!(shipper.stats().dropped.load(Ordering::Relaxed), 0);
}
