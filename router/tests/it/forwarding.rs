//! App-owner routing between routers: a router that does not own an app
//! forwards its requests to the owner, whose queue is then the app's one
//! queue; a loop between routers ends in H99; an unreachable owner means
//! routing here.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use router::forward::{Owners, Peer};
use router::{AppSettings, AppSpec};

use crate::support::switchyard::Running;
use crate::support::{get, Behaviour, Dyno, Switchyard};

/// Ownership as a test sets it: one owner for every app, or none (route
/// here); changed while the routers run.
#[derive(Debug)]
struct Fixed {
    id: &'static str,
    owner: Mutex<Option<Arc<Peer>>>,
    trust: bool,
}

impl Fixed {
    fn new(id: &'static str, trust: bool) -> Arc<Fixed> {
        Arc::new(Fixed {
            id,
            owner: Mutex::new(None),
            trust,
        })
    }

    fn owned_by(&self, other: &Running, id: &str) {
        *self.owner.lock().expect("lock") = Some(Arc::new(Peer::new(id, other.addr)));
    }
}

impl Owners for Fixed {
    fn owner(&self, _app_id: &str) -> Option<Arc<Peer>> {
        self.owner.lock().expect("lock").clone()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.trust && ip.is_loopback()
    }

    fn id(&self) -> &str {
        self.id
    }
}

fn single_concurrency(dyno: &Dyno) -> AppSpec {
    let settings = AppSettings {
        max_dyno_concurrency: 1,
        ..AppSettings::default()
    };
    AppSpec::new("demo")
        .settings(settings)
        .dyno("web.1", dyno.addr)
}

async fn router(app: AppSpec, owners: Arc<Fixed>, hop_limit: u8) -> Running {
    Switchyard::new()
        .app(app)
        .owners(owners, hop_limit)
        .start()
        .await
}

#[tokio::test]
async fn requests_to_any_router_wait_in_the_owners_queue_and_reach_the_dyno_once() {
    let dyno = Dyno::start(Behaviour::Delay(Duration::from_millis(20), "ok")).await;
    let (a_owners, b_owners) = (Fixed::new("a", true), Fixed::new("b", true));
    let a = router(single_concurrency(&dyno), a_owners.clone(), 2).await;
    let b = router(single_concurrency(&dyno), b_owners, 2).await;
    a_owners.owned_by(&b, "b");

    let mut pending = Vec::new();
    for i in 0..8 {
        let addr = if i % 2 == 0 { a.addr } else { b.addr };
        pending.push(tokio::spawn(async move {
            get(addr, "demo.localhost", &format!("/{i}"), &[]).await
        }));
    }
    for p in pending {
        assert_eq!(p.await.expect("join").status, 200);
    }
    assert_eq!(
        dyno.peak.load(Ordering::SeqCst),
        1,
        "one queue for the app: never two requests at once on a single-concurrency dyno"
    );
    let seen = dyno.requests();
    assert_eq!(seen.len(), 8, "each request reached the dyno once");
    for r in &seen {
        assert_eq!(
            r.header("x-switchyard-hop"),
            None,
            "the dyno never sees the hop"
        );
        assert_eq!(
            r.header("x-forwarded-for").as_deref(),
            Some("127.0.0.1"),
            "the owner keeps the first router's forwarding headers"
        );
        assert_eq!(r.header("via").as_deref(), Some("1.1 switchyard"));
    }
    // The owner writes every line; the forwarded ones say where from.
    let lines = b.wait_lines(8).await;
    let forwarded = lines
        .iter()
        .filter(|l| l.contains(" forwarded_by=a"))
        .count();
    assert_eq!(forwarded, 4, "{lines:#?}");
    assert!(lines.iter().all(|l| l.contains("status=200")), "{lines:#?}");
    assert!(a.lines().is_empty(), "{:#?}", a.lines());
}

#[tokio::test]
async fn a_request_forwarded_in_a_loop_ends_in_h99_at_the_hop_limit() {
    let dyno = Dyno::start(Behaviour::Respond("ok")).await;
    let (a_owners, b_owners) = (Fixed::new("a", true), Fixed::new("b", true));
    let a = router(single_concurrency(&dyno), a_owners.clone(), 2).await;
    let b = router(single_concurrency(&dyno), b_owners.clone(), 2).await;
    // Each thinks the other owns the app (views that disagree).
    a_owners.owned_by(&b, "b");
    b_owners.owned_by(&a, "a");

    let r = get(a.addr, "demo.localhost", "/", &[]).await;
    assert_eq!(r.status, 503);
    assert!(dyno.requests().is_empty());
    // a → b (hop 1) → a (hop 2): a would forward a third time, and answers.
    let lines = a.wait_lines(1).await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("code=H99"), "{}", lines[0]);
    assert!(
        lines[0].contains("cause=\"router hop limit\""),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("forwarded_by=b"), "{}", lines[0]);
    assert!(b.lines().is_empty(), "{:#?}", b.lines());

    // A hop header from a client counts too: it can only shorten a loop.
    let r = get(b.addr, "demo.localhost", "/", &["X-Switchyard-Hop: 9"]).await;
    assert_eq!(r.status, 503);
    assert!(dyno.requests().is_empty());
}

#[tokio::test]
async fn an_owner_that_routes_it_itself_strips_an_untrusted_hop() {
    let dyno = Dyno::start(Behaviour::Respond("ok")).await;
    let b = router(single_concurrency(&dyno), Fixed::new("b", false), 1).await;
    let r = get(
        b.addr,
        "demo.localhost",
        "/",
        &["X-Switchyard-Hop: 1; by=a", "X-Forwarded-For: 6.6.6.6"],
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = dyno.requests();
    assert_eq!(seen[0].header("x-switchyard-hop"), None);
    // Not from a router it trusts: its own forwarding headers, as for
    // any client.
    assert_eq!(
        seen[0].header("x-forwarded-for").as_deref(),
        Some("6.6.6.6, 127.0.0.1")
    );
    let lines = b.wait_lines(1).await;
    assert!(!lines[0].contains("forwarded_by"), "{}", lines[0]);
}

#[tokio::test]
async fn an_owner_that_refuses_connections_means_routing_here() {
    let dyno = Dyno::start(Behaviour::Respond("ok")).await;
    let gone = Dyno::refusing();
    let owners = Fixed::new("a", true);
    *owners.owner.lock().expect("lock") = Some(Arc::new(Peer::new("dead", gone.addr)));
    let a = router(single_concurrency(&dyno), owners, 2).await;
    let r = get(a.addr, "demo.localhost", "/", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(dyno.requests().len(), 1);
    let lines = a.wait_lines(1).await;
    assert!(lines[0].contains("status=200"), "{}", lines[0]);
    assert!(!lines[0].contains("forwarded"), "{}", lines[0]);
}

#[tokio::test]
async fn a_client_gone_while_queued_at_the_owner_leaves_the_owners_queue() {
    let dyno = Dyno::start(Behaviour::HangOn("/hang")).await;
    let a_owners = Fixed::new("a", true);
    let a = router(single_concurrency(&dyno), a_owners.clone(), 2).await;
    let b = router(single_concurrency(&dyno), Fixed::new("b", true), 2).await;
    a_owners.owned_by(&b, "b");
    let app = b.routes.load().app("demo").expect("app").clone();

    // The dyno's one slot is taken at the owner.
    let busy = tokio::spawn(get(b.addr, "demo.localhost", "/hang", &[]));
    crate::eventually("the dyno is busy", || dyno.requests().len() == 1).await;
    // A request through the other router queues at the owner...
    let queued = tokio::spawn(get(a.addr, "demo.localhost", "/next", &[]));
    crate::eventually("queued at the owner", || app.live.queued() == 1).await;
    // ...and its client goes away: the owner's queue is empty again.
    queued.abort();
    crate::eventually("the owner's queue empties", || app.live.queued() == 0).await;
    assert_eq!(app.live.admitted(), 1, "only the request on the dyno");
    let seen: Vec<String> = dyno
        .requests()
        .iter()
        .map(|r| r.request_line().trim().to_string())
        .collect();
    assert_eq!(seen, ["GET /hang HTTP/1.1"], "the abandoned one never left");
    busy.abort();
}

#[tokio::test]
async fn an_owner_that_fails_after_the_request_was_sent_is_not_retried() {
    let dyno = Dyno::start(Behaviour::Respond("ok")).await;
    // The "owner" takes the request and closes without a response.
    let owner = Dyno::start(Behaviour::CloseWithoutResponse).await;
    let owners = Fixed::new("a", true);
    *owners.owner.lock().expect("lock") = Some(Arc::new(Peer::new("b", owner.addr)));
    let a = router(single_concurrency(&dyno), owners, 2).await;

    let r = get(a.addr, "demo.localhost", "/once", &[]).await;
    assert_eq!(r.status, 503);
    let sent = owner.requests();
    assert_eq!(sent.len(), 1, "sent once, never again");
    assert_eq!(
        sent[0].header("x-switchyard-hop").as_deref(),
        Some("1; by=a")
    );
    assert!(
        dyno.requests().is_empty(),
        "not routed here after it was sent"
    );
    let lines = a.wait_lines(1).await;
    assert!(lines[0].contains("code=H13"), "{}", lines[0]);
    assert!(lines[0].contains("forwarded_to=b"), "{}", lines[0]);
}
