//! In-process lines queued per thread (`Logplex::enqueue`, the router's
//! path) and published in batches: every line arrives, each thread's in
//! order, a lone line within the linger, everything at shutdown, and a full
//! queue's overflow counted and reported.

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use logplex::session::{Format, SessionBody};
use logplex::{LogplexSettings, SessionParams};

use crate::support::*;

/// A live text tail of `app`, as `GET /sessions/{id}` serves it.
fn tail(plex: &Plex, app: &App) -> SessionBody {
    let params = SessionParams {
        tail: true,
        ..SessionParams::default()
    };
    let id = plex.logplex.create_session(&app.id, params).unwrap();
    plex.logplex.open_session(&id, Format::Text).unwrap()
}

/// Reads the tail until it has shown `n` lines (at most [`patience`]).
async fn read_lines(body: &mut SessionBody, n: usize) -> Vec<String> {
    let mut text = String::new();
    while text.lines().count() < n {
        let frame = tokio::time::timeout(patience(), body.frame())
            .await
            .expect("lines in time")
            .expect("the tail goes on")
            .expect("infallible");
        let data = frame.into_data().expect("a data frame");
        text.push_str(std::str::from_utf8(&data).unwrap());
    }
    text.lines()
        .map(|l| l.split_once(": ").map(|(_, m)| m.to_string()).unwrap())
        .collect()
}

/// `settings` with a linger no test waits out: only a full queue or an
/// explicit publish or flush moves lines.
fn lingering(settings: LogplexSettings) -> LogplexSettings {
    LogplexSettings {
        inbox_linger: Duration::from_secs(3600),
        ..settings
    }
}

/// Queues `line 0` … `line {n-1}` as router lines of `app`.
fn enqueue_lines(plex: &Plex, app: &App, n: usize) {
    for i in 0..n {
        let line = format!("line {i}");
        plex.logplex
            .enqueue(&app.id, "heroku", "router", &line, Instant::now());
    }
}

#[tokio::test(start_paused = true)]
async fn lines_from_several_threads_all_arrive_in_each_threads_order() {
    const THREADS: usize = 4;
    // More than a batch per thread, so full queues cut the linger short too.
    const LINES: usize = 700;
    let app = App::new("demo");
    let settings = LogplexSettings {
        // Room for every line: this tail is read only after all are queued.
        tail_buffer_lines: THREADS * LINES,
        ..quick_settings()
    };
    let plex = Plex::start(settings, &[&app]).await;
    let mut body = tail(&plex, &app);
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (logplex, id) = (plex.logplex.clone(), app.id.clone());
            std::thread::spawn(move || {
                for i in 0..LINES {
                    let line = format!("t{t} line {i}");
                    logplex.enqueue(&id, "heroku", "router", &line, Instant::now());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // The threads are gone; their queued lines are not.
    let lines = read_lines(&mut body, THREADS * LINES).await;
    assert_eq!(lines.len(), THREADS * LINES);
    for t in 0..THREADS {
        let prefix = format!("t{t} line ");
        let order: Vec<usize> = lines
            .iter()
            .filter_map(|l| l.strip_prefix(&prefix))
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(order, (0..LINES).collect::<Vec<_>>(), "thread {t}");
    }
    let stats = plex.logplex.ingest_stats();
    assert_eq!(
        (stats.received, stats.published, stats.inbox_dropped),
        ((THREADS * LINES) as u64, (THREADS * LINES) as u64, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_lone_line_is_published_within_the_linger_without_more_traffic() {
    let app = App::new("demo");
    let linger = Duration::from_millis(40);
    let settings = LogplexSettings {
        inbox_linger: linger,
        ..quick_settings()
    };
    let plex = Plex::start(settings, &[&app]).await;
    let mut body = tail(&plex, &app);
    let start = tokio::time::Instant::now();
    plex.logplex
        .enqueue(&app.id, "heroku", "router", "alone", Instant::now());
    assert!(
        plex.messages(&app).is_empty(),
        "queued, not published on the caller's path"
    );
    assert_eq!(read_lines(&mut body, 1).await, ["alone"]);
    assert!(
        tokio::time::Instant::now() - start <= linger,
        "published after {:?}, linger {linger:?}",
        tokio::time::Instant::now() - start
    );
    assert_eq!(plex.messages(&app), ["alone"]);
}

#[tokio::test]
async fn flush_at_shutdown_publishes_what_is_queued_and_drains_deliver_it() {
    let receiver = SyslogReceiver::start().await;
    let app = App::new("demo").drain(drain(&format!("syslog://{}", receiver.addr)));
    // Only the flush publishes here.
    let plex = Plex::start(lingering(quick_settings()), &[&app]).await;
    enqueue_lines(&plex, &app, 10);
    assert!(plex.messages(&app).is_empty());
    assert!(plex.logplex.flush(patience()).await, "drains went idle");
    let expected: Vec<String> = (0..10).map(|i| format!("line {i}")).collect();
    assert_eq!(plex.messages(&app), expected);
    let stats = plex.logplex.drain_stats();
    assert_eq!((stats[0].accepted, stats[0].delivered), (10, 10));
    eventually("the drain's receiver has every line", || {
        receiver.count() == 10
    })
    .await;
    let frames = receiver.frames();
    assert!(
        frames[9].ends_with(" heroku router - - line 9\n"),
        "{frames:?}"
    );
}

#[tokio::test]
async fn lines_past_a_full_queue_are_counted_and_reported_in_the_app_stream() {
    // Installed before the log router registers its counters.
    let counters = crate::support::metrics::counters();
    let app = App::new("demo");
    let settings = LogplexSettings {
        inbox_batch_lines: 4,
        inbox_lane_lines: 4,
        ..quick_settings()
    };
    let plex = Plex::start(lingering(settings), &[&app]).await;
    // The ingest task cannot run between these (one runtime thread, no
    // await): the queue fills at 4.
    enqueue_lines(&plex, &app, 10);
    plex.logplex.publish_queued();
    let messages = plex.messages(&app);
    assert_eq!(messages[..4], ["line 0", "line 1", "line 2", "line 3"]);
    assert_eq!(messages.len(), 5, "{messages:?}");
    assert!(
        messages[4].starts_with("Error L10 (output buffer overflow): 6 messages dropped since "),
        "{messages:?}"
    );
    let stats = plex.logplex.ingest_stats();
    assert_eq!((stats.published, stats.inbox_dropped), (4 + 1, 6));
    assert_eq!(counters.get("logplex_inbox_dropped_lines_total", &[]), 6);
}

#[tokio::test]
async fn one_threads_lines_for_several_apps_reach_each_app_in_order_and_unknown_apps_are_counted() {
    let apps = [App::new("one"), App::new("two"), App::new("three")];
    let plex = Plex::start(lingering(quick_settings()), &[&apps[0], &apps[1], &apps[2]]).await;
    // Runs of one app and single lines, coming back to an app after others
    // (its batch is found again), and an app the log router does not know.
    let order = [0, 0, 1, 0, 2, 2, 1, 9, 0, 2, 1, 1, 9, 0];
    for (i, &a) in order.iter().enumerate() {
        let id = apps.get(a).map_or("no-such-app", |app| app.id.as_str());
        let line = format!("line {i}");
        plex.logplex
            .enqueue(id, "heroku", "router", &line, Instant::now());
    }
    plex.logplex.publish_queued();
    for (a, app) in apps.iter().enumerate() {
        let expected: Vec<String> = order
            .iter()
            .enumerate()
            .filter(|(_, &o)| o == a)
            .map(|(i, _)| format!("line {i}"))
            .collect();
        assert_eq!(plex.messages(app), expected, "app {a}");
    }
    let stats = plex.logplex.ingest_stats();
    assert_eq!(
        (stats.received, stats.published, stats.unknown_token),
        (order.len() as u64, order.len() as u64 - 2, 2)
    );
}
