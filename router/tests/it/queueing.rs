//! Queue-aware dyno choice: no request reaches a busy dyno, the queue is
//! FIFO, and a full queue answers H11.

use std::sync::atomic::Ordering;
use std::time::Duration;

use router::{AppSettings, AppSpec, Balance};

use crate::support::switchyard::Running;
use crate::support::{get, normalize, Behaviour, Dyno, Switchyard};

#[tokio::test]
async fn two_single_concurrency_dynos_and_four_slow_requests() {
    let fast = Dyno::start(Behaviour::Delay(Duration::from_millis(300), "fast")).await;
    let slow = Dyno::start(Behaviour::Delay(Duration::from_millis(1500), "slow")).await;
    let settings = AppSettings {
        max_dyno_concurrency: 1,
        max_in_flight: Some(4),
        ..AppSettings::default()
    };
    let sy = Switchyard::new()
        .app(
            AppSpec::new("demo")
                .settings(settings)
                .dyno("web.1", fast.addr)
                .dyno("web.2", slow.addr),
        )
        .start()
        .await;
    let table = sy.routes.load();
    let app = table.app("demo").expect("app").clone();
    let mut pending = Vec::new();
    for i in 1..=4 {
        let addr = sy.addr;
        pending.push(tokio::spawn(async move {
            get(addr, "demo.localhost", &format!("/{i}"), &[]).await
        }));
        // Let each request arrive before the next, so arrival order is known.
        crate::eventually("app.live.admitted() == i", || app.live.admitted() == i).await;
    }
    assert_eq!(app.live.queued(), 2, "two on dynos, two queued");
    // In flight plus queued is at the bound: the fifth gets H11 at once.
    let r = get(sy.addr, "demo.localhost", "/5", &[]).await;
    assert_eq!(r.status, 503);
    for p in pending {
        assert_eq!(p.await.expect("join").status, 200);
    }
    assert_eq!(
        fast.peak.load(Ordering::SeqCst),
        1,
        "never two at once on web.1"
    );
    assert_eq!(
        slow.peak.load(Ordering::SeqCst),
        1,
        "never two at once on web.2"
    );
    let mut arrivals: Vec<_> = fast.requests().into_iter().chain(slow.requests()).collect();
    arrivals.sort_by_key(|r| r.at);
    let order: Vec<_> = arrivals
        .iter()
        .map(|r| r.request_line().to_string())
        .collect();
    assert_eq!(
        order[2..],
        ["GET /3 HTTP/1.1", "GET /4 HTTP/1.1"],
        "queue served in arrival order"
    );
    let lines: Vec<String> = sy
        .wait_lines(5)
        .await
        .iter()
        .map(|l| normalize(l))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("at=error code=H11 ") && l.contains("path=\"/5\"")),
        "{lines:?}"
    );
    let third = lines
        .iter()
        .find(|l| l.contains("path=\"/3\""))
        .expect("line for /3");
    let fourth = lines
        .iter()
        .find(|l| l.contains("path=\"/4\""))
        .expect("line for /4");
    assert!(third.ends_with("queue=0 wait=Nms"), "{third}");
    assert!(fourth.ends_with("queue=1 wait=Nms"), "{fourth}");
    assert_eq!(app.live.admitted(), 0);
    assert_eq!(app.live.queued(), 0);
}

/// A router with app `demo` and one web dyno at `addr`.
async fn one_dyno(settings: AppSettings, addr: std::net::SocketAddr) -> Running {
    Switchyard::new()
        .app(AppSpec::new("demo").settings(settings).dyno("web.1", addr))
        .start()
        .await
}

#[tokio::test]
async fn queue_wait_counts_toward_the_request_timeout() {
    // The first request holds the only slot for ~1.2 s, streaming its body
    // slowly enough to stay inside the idle window.
    let dyno = Dyno::start(Behaviour::Stream {
        chunks: 8,
        size: 10,
        gap: Duration::from_millis(150),
    })
    .await;
    let mut settings = crate::hcodes::fast();
    settings.max_dyno_concurrency = 1;
    let sy = one_dyno(settings, dyno.addr).await;
    let addr = sy.addr;
    let first = tokio::spawn(async move { get(addr, "demo.localhost", "/1", &[]).await });
    crate::eventually("dyno.requests().len() == 1", || dyno.requests().len() == 1).await;
    let second = get(sy.addr, "demo.localhost", "/2", &[]).await;
    assert_eq!(second.status, 503);
    assert_eq!(first.await.expect("join").status, 200);
    assert_eq!(
        dyno.requests().len(),
        1,
        "the queued request never reached the busy dyno"
    );
    let lines: Vec<String> = sy
        .wait_lines(2)
        .await
        .iter()
        .map(|l| normalize(l))
        .collect();
    let queued = lines
        .iter()
        .find(|l| l.contains("path=\"/2\""))
        .expect("line");
    assert_eq!(
        queued,
        r#"at=error code=H12 desc="Request timeout" method=GET path="/2" host=demo.localhost request_id=ID fwd="127.0.0.1" dyno= connect= service= status=503 bytes= protocol=http queue=0 wait=Nms"#
    );
}

#[tokio::test]
async fn least_outstanding_and_round_robin_spread_concurrent_requests_evenly() {
    for balance in [Balance::LeastOutstanding, Balance::RoundRobin] {
        let a = Dyno::start(Behaviour::Delay(Duration::from_millis(200), "a")).await;
        let b = Dyno::start(Behaviour::Delay(Duration::from_millis(200), "b")).await;
        let settings = AppSettings {
            balance,
            ..AppSettings::default()
        };
        let sy = two_dynos(settings, &a, &b).await;
        let mut pending = Vec::new();
        for _ in 0..6 {
            let addr = sy.addr;
            pending.push(tokio::spawn(async move {
                get(addr, "demo.localhost", "/", &[]).await
            }));
        }
        for p in pending {
            assert_eq!(p.await.expect("join").status, 200);
        }
        assert_eq!(
            (a.requests().len(), b.requests().len()),
            (3, 3),
            "{balance:?}"
        );
    }
}

#[tokio::test]
async fn random_ignores_load_where_least_outstanding_avoids_a_busy_dyno() {
    // web.1 holds one request that never ends; 40 more are sent one at a
    // time. Least-outstanding sends all of them to the idle web.2; random
    // sends each to web.1 with probability 1/2 (all 40 avoiding it by
    // chance: 2^-40).
    for (balance, busy_gets_some) in [(Balance::Random, true), (Balance::LeastOutstanding, false)] {
        let a = Dyno::start(Behaviour::HangOn("/hang")).await;
        let b = Dyno::start(Behaviour::Respond("b")).await;
        let settings = AppSettings {
            balance,
            ..AppSettings::default()
        };
        let sy = two_dynos(settings, &a, &b).await;
        let addr = sy.addr;
        let hung = tokio::spawn(async move { get(addr, "demo.localhost", "/hang", &[]).await });
        crate::eventually("a.requests().len() + b.requests().len() == 1", || {
            a.requests().len() + b.requests().len() == 1
        })
        .await;
        let (busy, idle) = if a.requests().len() == 1 {
            (&a, &b)
        } else {
            (&b, &a)
        };
        for _ in 0..40 {
            assert_eq!(get(sy.addr, "demo.localhost", "/", &[]).await.status, 200);
        }
        let on_busy = busy.requests().len() - 1;
        assert_eq!(on_busy + idle.requests().len(), 40);
        assert_eq!(
            on_busy > 0,
            busy_gets_some,
            "{balance:?}: {on_busy} of 40 on the busy dyno"
        );
        hung.abort();
    }
}

/// A router with app `demo` (`settings`) on web.1 = `a` and web.2 = `b`.
pub async fn two_dynos(settings: AppSettings, a: &Dyno, b: &Dyno) -> Running {
    Switchyard::new()
        .app(
            AppSpec::new("demo")
                .settings(settings)
                .dyno("web.1", a.addr)
                .dyno("web.2", b.addr),
        )
        .start()
        .await
}

/// `max_dyno_concurrency=1`: web.1 (`busy`) holds one request and two more
/// wait in the queue; then the dyno set changes to an idle web.2 alone.
/// Returns the two queued responses, web.1 and web.2.
async fn queued_then_dynos_replaced(busy: Behaviour, first_byte: Duration) -> QueuedRun {
    let web1 = Dyno::start(busy).await;
    let web2 = Dyno::start(Behaviour::Respond("web.2")).await;
    let mut settings = AppSettings {
        max_dyno_concurrency: 1,
        ..AppSettings::default()
    };
    settings.timers.first_byte = first_byte;
    let spec = |dyno: (&str, std::net::SocketAddr)| {
        AppSpec::new("demo")
            .settings(settings.clone())
            .dyno(dyno.0, dyno.1)
    };
    let sy = Switchyard::new()
        .app(spec(("web.1", web1.addr)))
        .start()
        .await;
    let table = sy.routes.load();
    let app = table.app("demo").expect("app").clone();
    let addr = sy.addr;
    let first = tokio::spawn(async move { get(addr, "demo.localhost", "/1", &[]).await });
    crate::eventually("web1.requests().len() == 1", || web1.requests().len() == 1).await;
    let mut queued = Vec::new();
    for (i, path) in ["/2", "/3"].into_iter().enumerate() {
        queued.push(tokio::spawn(async move {
            get(addr, "demo.localhost", path, &[]).await
        }));
        crate::eventually("app.live.queued() == i + 1", || app.live.queued() == i + 1).await;
    }
    // A deploy: web.1 is gone, web.2 is up and idle.
    sy.publish(vec![spec(("web.2", web2.addr))]);
    let mut responses = Vec::new();
    for q in queued {
        responses.push(q.await.expect("join"));
    }
    QueuedRun {
        responses,
        first,
        web1,
        web2,
        sy,
    }
}

struct QueuedRun {
    responses: Vec<crate::support::client::Resp>,
    first: tokio::task::JoinHandle<crate::support::client::Resp>,
    web1: Dyno,
    web2: Dyno,
    sy: Running,
}

#[tokio::test]
async fn queued_requests_follow_a_new_table_to_an_idle_dyno() {
    // web.1 takes far longer than the whole test: before the queue followed
    // the table, /2 and /3 waited for it and came back from web.1.
    let run = queued_then_dynos_replaced(
        Behaviour::Delay(Duration::from_secs(3), "web.1"),
        Duration::from_secs(30),
    )
    .await;
    for r in &run.responses {
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body, "web.2", "served by the new dyno");
    }
    assert_eq!(run.web1.requests().len(), 1, "web.1 only ever had /1");
    let paths: Vec<_> = run
        .web2
        .requests()
        .iter()
        .map(|r| r.request_line().to_string())
        .collect();
    assert_eq!(
        paths,
        ["GET /2 HTTP/1.1", "GET /3 HTTP/1.1"],
        "in queue order"
    );
    let lines = run.sy.wait_lines(2).await;
    for path in ["/2", "/3"] {
        let line = lines
            .iter()
            .find(|l| l.contains(&format!("path=\"{path}\"")))
            .expect("line");
        assert!(line.contains(" dyno=web.2 "), "{line}");
    }
    assert_eq!(run.first.await.expect("join").body, "web.1");
}

#[tokio::test]
async fn queued_requests_behind_a_hung_dyno_are_not_h12_while_another_is_idle() {
    let run = queued_then_dynos_replaced(Behaviour::Hang, Duration::from_secs(5)).await;
    for r in &run.responses {
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body, "web.2");
    }
    // The request already on the hung dyno is still bound by its timer.
    assert_eq!(run.first.await.expect("join").status, 503);
    let lines = run.sy.wait_lines(3).await;
    let first = lines
        .iter()
        .find(|l| l.contains("path=\"/1\""))
        .expect("line");
    assert!(first.starts_with("at=error code=H12 "), "{first}");
    assert!(first.contains(" dyno=web.1 "), "{first}");
}

#[tokio::test]
async fn a_queued_client_that_goes_away_leaves_the_queue() {
    use tokio::io::AsyncWriteExt;
    let dyno = Dyno::start(Behaviour::HangOn("/hang")).await;
    let settings = AppSettings {
        max_dyno_concurrency: 1,
        ..AppSettings::default()
    };
    let sy = one_dyno(settings, dyno.addr).await;
    let table = sy.routes.load();
    let app = table.app("demo").expect("app").clone();
    let addr = sy.addr;
    let busy = tokio::spawn(async move { get(addr, "demo.localhost", "/hang", &[]).await });
    crate::eventually("dyno.requests().len() == 1", || dyno.requests().len() == 1).await;
    let mut impatient = tokio::net::TcpStream::connect(sy.addr)
        .await
        .expect("connect");
    impatient
        .write_all(b"GET /gone HTTP/1.1\r\nHost: demo.localhost\r\n\r\n")
        .await
        .expect("write");
    crate::eventually("app.live.queued() == 1", || app.live.queued() == 1).await;
    drop(impatient);
    crate::eventually("app.live.queued() == 0 && app.live.admitted() == 1", || {
        app.live.queued() == 0 && app.live.admitted() == 1
    })
    .await;
    assert_eq!(
        dyno.requests().len(),
        1,
        "the abandoned request never reached the dyno"
    );
    busy.abort();
}

#[tokio::test]
async fn time_spent_waiting_for_a_booting_or_quarantined_dyno_is_logged_as_wait() {
    let (booting, refusing) = (Dyno::refusing(), Dyno::refusing());
    let settings = crate::hcodes::fast();
    let boot = settings.timers.boot.as_millis() as u64;
    let sy = Switchyard::new()
        .app(AppSpec::new("booting").settings(settings.clone()).dyno_in(
            "web.1",
            booting.addr,
            router::DynoState::Starting,
        ))
        .app(
            AppSpec::new("refusing")
                .settings(settings)
                .dyno("web.1", refusing.addr),
        )
        .start()
        .await;
    assert_eq!(
        get(sy.addr, "booting.localhost", "/", &[]).await.status,
        503
    );
    // The first request is refused and quarantines web.1; the second waits
    // out the boot timer for the quarantine to end.
    assert_eq!(
        get(sy.addr, "refusing.localhost", "/", &[]).await.status,
        503
    );
    assert_eq!(
        get(sy.addr, "refusing.localhost", "/", &[]).await.status,
        503
    );
    let lines = sy.wait_lines(3).await;
    let wait_of = |code: &str| -> u64 {
        let line = lines
            .iter()
            .find(|l| l.contains(&format!("code={code} ")))
            .unwrap_or_else(|| panic!("no {code} line in {lines:?}"));
        let wait = line.rsplit_once(" wait=").expect("wait=").1;
        wait.trim_end_matches("ms").parse().expect("ms")
    };
    assert!(wait_of("H20") >= boot, "waited for the boot: {lines:?}");
    assert!(
        wait_of("H99") >= boot,
        "waited out the quarantine: {lines:?}"
    );
    assert_eq!(wait_of("H21"), 0, "{lines:?}");
}

#[tokio::test]
async fn a_quarantine_ending_dispatches_the_queue() {
    // web.1 hangs on /hang and holds the only slot it has; web.2 refuses
    // connections and is quarantined by the first request that tries it.
    // The queued /probe is dispatched to web.2 each time its quarantine ends
    // (and refused again, until its attempts run out: H21). Were the queue
    // woken only by a slot being freed, /probe would wait for web.1 until the
    // request timeout (H12).
    let web1 = Dyno::start(Behaviour::HangOn("/hang")).await;
    let web2 = Dyno::refusing();
    let settings = AppSettings {
        max_dyno_concurrency: 1,
        ..AppSettings::default()
    };
    let sy = Switchyard::new()
        .quarantine(Duration::from_millis(200))
        .app(
            AppSpec::new("demo")
                .settings(settings)
                .dyno("web.1", web1.addr)
                .dyno("web.2", web2.addr),
        )
        .start()
        .await;
    let addr = sy.addr;
    let hung = tokio::spawn(async move { get(addr, "demo.localhost", "/hang", &[]).await });
    crate::eventually("web1.requests().len() == 1", || web1.requests().len() == 1).await;
    let probe = get(sy.addr, "demo.localhost", "/probe", &[]).await;
    assert_eq!(probe.status, 503);
    let lines = sy.lines();
    let line = lines
        .iter()
        .find(|l| l.contains("path=\"/probe\""))
        .expect("line for /probe");
    assert!(line.starts_with("at=error code=H21 "), "{line}");
    assert!(line.contains(" dyno=web.2 "), "{line}");
    assert_eq!(web1.requests().len(), 1, "/probe never went to web.1");
    hung.abort();
}
