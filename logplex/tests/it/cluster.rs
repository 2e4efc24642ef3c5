//! Two log routers as one cluster: each channel has one owner, which keeps
//! its history and runs its drains; a line ingested on the other node is
//! forwarded to it once; a channel taken over says where its history went.
//!
//! Placement here is a shared table the test changes (in the binary it is
//! rendezvous over the live members in etcd, `control::members`); the
//! nodes, their listeners, the forwarding and the drains are real.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use logplex::{Directory, Logplex, Owner, Placement, Sender, ShipSettings, Shipper};
use tokio::io::AsyncWriteExt;

use crate::support::{
    drain, eventually, frames, http_request, post_logs, quick_settings, App, Plex, SyslogReceiver,
};

/// Who owns what, and who is live: one view both nodes read.
#[derive(Default)]
struct View {
    owners: HashMap<String, String>,
    live: HashSet<String>,
}

/// One node's reading of the shared view.
struct TablePlacement {
    me: String,
    view: Arc<Mutex<View>>,
}

impl Placement for TablePlacement {
    fn node(&self) -> &str {
        &self.me
    }
    fn owner(&self, app_id: &str) -> Owner {
        match self.view.lock().unwrap().owners.get(app_id) {
            Some(o) if *o == self.me => Owner::Here,
            Some(o) => Owner::Peer(o.clone()),
            None => Owner::Nobody,
        }
    }
    fn is_live(&self, id: &str) -> bool {
        self.view.lock().unwrap().live.contains(id)
    }
}

/// Where a node forwards: the owner's syslog TCP address is its id.
struct ToOwner {
    me: String,
    view: Arc<Mutex<View>>,
    logplex: Weak<Logplex>,
}

impl Directory for ToOwner {
    fn token(&self, app_id: &str) -> Option<Arc<str>> {
        self.logplex.upgrade()?.platform_token(app_id)
    }
    fn destination(&self, app_id: &str) -> Option<Arc<str>> {
        let view = self.view.lock().unwrap();
        let owner = view.owners.get(app_id)?;
        (*owner != self.me).then(|| owner.as_str().into())
    }
    fn take_back(&self, _app_id: &str, frame: &str) -> bool {
        self.logplex.upgrade().is_some_and(|l| l.take_back(frame))
    }
}

/// A node: a log router whose id is its syslog TCP address.
struct Node {
    plex: Plex,
    id: String,
    forward: Arc<Shipper>,
}

async fn node(view: &Arc<Mutex<View>>, apps: &[&App]) -> Node {
    node_forwarding_after(view, apps, Duration::from_millis(2)).await
}

/// [`node`], whose forwarder holds a line up to `linger` before it goes.
async fn node_forwarding_after(view: &Arc<Mutex<View>>, apps: &[&App], linger: Duration) -> Node {
    let plex = Plex::start(quick_settings(), apps).await;
    let id = plex.tcp.to_string();
    view.lock().unwrap().live.insert(id.clone());
    let forward = Shipper::start(
        ShipSettings {
            host: id.clone(),
            linger,
            max_backoff: Duration::from_millis(100),
            sender: Sender::LogRouter,
            ..ShipSettings::default()
        },
        Arc::new(ToOwner {
            me: id.clone(),
            view: view.clone(),
            logplex: Arc::downgrade(&plex.logplex),
        }),
    );
    Node { plex, id, forward }
}

impl Node {
    fn join(&self, view: &Arc<Mutex<View>>) {
        let placement = TablePlacement {
            me: self.id.clone(),
            view: view.clone(),
        };
        self.plex
            .logplex
            .join_cluster(Arc::new(placement), self.forward.clone());
    }

    /// Sends `msgs` as the app's `app` lines over syslog TCP.
    async fn send(&self, app: &App, msgs: &[String]) {
        let lines: Vec<String> = msgs
            .iter()
            .map(|m| {
                format!(
                    "<190>1 2026-11-29T10:00:00.000000+00:00 host {} web.1 - - {m}",
                    app.app_token
                )
            })
            .collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let mut conn = tokio::net::TcpStream::connect(self.plex.tcp).await.unwrap();
        conn.write_all(&frames(&refs)).await.unwrap();
        conn.shutdown().await.unwrap();
    }

    fn has(&self, app: &App, msg: &str) -> usize {
        self.plex.messages(app).iter().filter(|m| *m == msg).count()
    }
}

/// An app with a syslog drain, and two nodes that agree the first owns it.
async fn two_nodes(name: &str) -> (SyslogReceiver, App, Arc<Mutex<View>>, Node, Node) {
    let receiver = SyslogReceiver::start().await;
    let app = App::new(name).drain(drain(&format!("syslog://{}", receiver.addr)));
    let view = Arc::new(Mutex::new(View::default()));
    let a = node(&view, &[&app]).await;
    let b = node(&view, &[&app]).await;
    owns(&view, &app, &a);
    a.join(&view);
    b.join(&view);
    (receiver, app, view, a, b)
}

fn owns(view: &Arc<Mutex<View>>, app: &App, node: &Node) {
    view.lock()
        .unwrap()
        .owners
        .insert(app.id.clone(), node.id.clone());
}

/// Lines of `msgs` the drain received, each counted.
fn received(drain: &SyslogReceiver, msgs: &[String]) -> Vec<usize> {
    let frames = drain.frames();
    msgs.iter()
        .map(|m| {
            frames
                .iter()
                .filter(|f| f.trim_end().ends_with(&format!(" {m}")))
                .count()
        })
        .collect()
}

#[tokio::test]
async fn a_line_ingested_on_either_node_reaches_the_owner_and_its_one_drain_once() {
    let (receiver, app, _view, a, b) = two_nodes("shared").await;
    assert_eq!(
        a.plex.logplex.channel(&app.id).unwrap().owner(),
        Owner::Here
    );
    assert_eq!(
        b.plex.logplex.channel(&app.id).unwrap().owner(),
        Owner::Peer(a.id.clone())
    );
    // Only the owner runs the drain.
    assert_eq!(a.plex.logplex.drain_stats().len(), 1);
    assert!(b.plex.logplex.drain_stats().is_empty());

    let on_a: Vec<String> = (0..20).map(|i| format!("via-a-{i}")).collect();
    let on_b: Vec<String> = (0..20).map(|i| format!("via-b-{i}")).collect();
    a.send(&app, &on_a).await;
    b.send(&app, &on_b).await;
    let all: Vec<String> = on_a.iter().chain(&on_b).cloned().collect();
    eventually("every line reached the drain", || {
        received(&receiver, &all).iter().all(|&n| n >= 1)
    })
    .await;
    assert!(a.forward.flush(Duration::from_secs(5)).await);
    assert!(b.forward.flush(Duration::from_secs(5)).await);
    // A last line through the non-owner: once it is in, anything forwarded
    // before it is too.
    let last = vec!["the-last".to_string()];
    b.send(&app, &last).await;
    eventually("the last line reached the drain", || {
        received(&receiver, &last) == [1]
    })
    .await;
    assert!(
        received(&receiver, &all).iter().all(|&n| n == 1),
        "each line once"
    );
    for m in &all {
        assert_eq!(a.has(&app, m), 1, "{m} in the owner's history once");
        assert_eq!(b.has(&app, m), 0, "{m} not kept by the non-owner");
    }
    assert_eq!(
        *receiver.connections.lock().unwrap(),
        1,
        "one drain connection"
    );
    let forwarded = b.forward.stats();
    assert_eq!(
        forwarded.shipped.load(std::sync::atomic::Ordering::Relaxed),
        21
    );
    assert_eq!(
        forwarded.dropped.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(
        a.forward
            .stats()
            .shipped
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "the owner forwards nothing"
    );
    // The forwarded lines keep their token's name and process.
    assert!(a
        .plex
        .logplex
        .recent(&app.id, 100)
        .iter()
        .any(|l| l.ends_with("app[web.1]: via-b-0")));
}

#[tokio::test]
async fn two_nodes_that_each_think_the_other_owns_a_channel_do_not_bounce_a_line() {
    let app = App::new("torn");
    let view_a = Arc::new(Mutex::new(View::default()));
    let view_b = Arc::new(Mutex::new(View::default()));
    let a = node(&view_a, &[&app]).await;
    let b = node(&view_b, &[&app]).await;
    // Views that disagree (as during a membership change): each sees the
    // other as the owner.
    owns(&view_a, &app, &b);
    owns(&view_b, &app, &a);
    a.join(&view_a);
    b.join(&view_b);
    a.send(&app, &["ping".to_string()]).await;
    eventually("the forwarded line is published where it landed", || {
        b.has(&app, "ping") == 1
    })
    .await;
    assert!(a.forward.flush(Duration::from_secs(5)).await);
    assert!(b.forward.flush(Duration::from_secs(5)).await);
    assert_eq!(a.has(&app, "ping"), 0);
    assert_eq!(
        b.forward
            .stats()
            .shipped
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "a forwarded line is never forwarded again"
    );
}

#[tokio::test]
async fn a_channel_taken_over_from_a_dead_owner_restarts_its_drain_and_says_history_was_lost() {
    let (receiver, app, view, a, b) = two_nodes("moving").await;
    let before = vec!["before".to_string()];
    b.send(&app, &before).await;
    eventually("the first line reached the drain", || {
        received(&receiver, &before) == [1]
    })
    .await;

    // A dies: it leaves the live set and B is the owner now.
    {
        let mut v = view.lock().unwrap();
        v.live.remove(&a.id);
        v.owners.insert(app.id.clone(), b.id.clone());
    }
    b.plex.logplex.rebalance();
    let channel = b.plex.logplex.channel(&app.id).unwrap();
    assert_eq!(channel.owner(), Owner::Here);
    let moved = b
        .plex
        .messages(&app)
        .into_iter()
        .filter(|m| m.starts_with("Channel moved"))
        .collect::<Vec<_>>();
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert!(
        moved[0].contains(&format!("'{}' is gone", a.id)),
        "{}",
        moved[0]
    );
    assert!(moved[0].contains("was lost"), "{}", moved[0]);

    let after = vec!["after".to_string()];
    b.send(&app, &after).await;
    eventually("the new owner's drain delivers", || {
        received(&receiver, &after) == [1]
    })
    .await;
    assert!(receiver
        .frames()
        .iter()
        .any(|f| f.contains("logplex - - Channel moved")));
    assert_eq!(b.has(&app, "after"), 1);
    assert_eq!(
        b.has(&app, "before"),
        0,
        "history stayed with the old owner"
    );
    // A rebalance with nothing moved changes nothing.
    b.plex.logplex.rebalance();
    assert_eq!(
        b.plex
            .messages(&app)
            .iter()
            .filter(|m| m.starts_with("Channel moved"))
            .count(),
        1
    );
}

#[tokio::test]
async fn a_node_that_loses_a_channel_stops_its_drain_and_the_books_balance_across_nodes() {
    let (receiver, app, view, a, b) = two_nodes("handover").await;
    let first: Vec<String> = (0..50).map(|i| format!("first-{i}")).collect();
    a.send(&app, &first).await;
    eventually("the first lines were delivered", || {
        received(&receiver, &first).iter().all(|&n| n == 1)
    })
    .await;

    // B joins as the owner while A is live: A stops its drain, B starts it.
    owns(&view, &app, &b);
    a.plex.logplex.rebalance();
    b.plex.logplex.rebalance();
    assert!(a.plex.logplex.drain_stats().is_empty(), "A's drain stopped");
    let moved: Vec<String> = b
        .plex
        .messages(&app)
        .into_iter()
        .filter(|m| m.starts_with("Channel moved"))
        .collect();
    assert_eq!(moved.len(), 1);
    assert!(
        moved[0].contains(&format!("stays on '{}'", a.id)),
        "{}",
        moved[0]
    );
    let second: Vec<String> = (0..50).map(|i| format!("second-{i}")).collect();
    a.send(&app, &second).await;
    eventually("the second lines were delivered by the new owner", || {
        received(&receiver, &second).iter().all(|&n| n == 1)
    })
    .await;
    let stats = b.plex.logplex.drain_stats();
    assert_eq!(stats.len(), 1);
    let s = &stats[0];
    // B's drain accounts for what it took: the moved line and the second lines.
    assert_eq!(
        s.accepted,
        s.delivered + s.dropped + s.buffered + s.in_flight
    );
    assert_eq!(s.accepted, 51);
    assert_eq!(
        *receiver.connections.lock().unwrap(),
        2,
        "one connection per owner in turn"
    );
}

#[tokio::test]
async fn lines_posted_to_the_non_owner_over_http_reach_the_owner_with_their_stamps() {
    let (_receiver, app, _view, a, b) = two_nodes("posted").await;
    let body = frames(&[
        &format!(
            "<190>1 2026-11-22T10:00:00.000001+00:00 host {} web.1 - - posted one",
            app.app_token
        ),
        // Routed by the token the request authenticated with.
        "<190>1 2026-11-22T10:00:00.000002+00:00 host anything worker.2 - - posted two\n",
    ]);
    let (status, _, _) = http_request(
        b.plex.http,
        &post_logs(Some(&app.app_token), &body, &[("Logplex-Msg-Count", "2")]),
    )
    .await;
    assert_eq!(status, 204);
    eventually("both lines are in the owner's history", || {
        a.plex.logplex.recent(&app.id, 10).len() == 2
    })
    .await;
    assert_eq!(
        a.plex.logplex.recent(&app.id, 10),
        [
            "2026-11-22T10:00:00.000001+00:00 app[web.1]: posted one",
            "2026-11-22T10:00:00.000002+00:00 app[worker.2]: posted two",
        ]
    );
    assert!(b.plex.logplex.recent(&app.id, 10).is_empty());
}

#[tokio::test]
async fn a_live_tail_on_a_node_that_loses_the_channel_ends_with_a_line_saying_where_it_went() {
    let (_receiver, app, view, a, b) = two_nodes("tailed").await;
    let channel = a.plex.logplex.channel(&app.id).unwrap();
    let (_, live) = channel.subscribe(0, None, None, true);
    let live = live.expect("a live tail");
    owns(&view, &app, &b);
    a.plex.logplex.rebalance();
    let mut got = Vec::new();
    let mut ended = false;
    std::future::poll_fn(|cx| loop {
        match live.poll_take(cx, &mut got, 100) {
            std::task::Poll::Ready(Some(_)) => continue,
            std::task::Poll::Ready(None) => {
                ended = true;
                return std::task::Poll::Ready(());
            }
            std::task::Poll::Pending => return std::task::Poll::Pending,
        }
    })
    .await;
    assert!(ended);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0].msg(),
        format!(
            "Channel moved from log router '{}' to '{}'; this session ends here: start it again to follow the app.",
            a.id, b.id
        )
    );
    assert_eq!(a.plex.logplex.channel(&app.id).unwrap().tail_count(), 0);
    assert!(a.plex.messages(&app).is_empty(), "the line is not history");
}

/// An app with a syslog drain, and one node of a cluster in which nobody
/// owns it yet (the node has not seen its own registration).
async fn unowned_node(name: &str) -> (SyslogReceiver, App, Arc<Mutex<View>>, Node) {
    let receiver = SyslogReceiver::start().await;
    let app = App::new(name).drain(drain(&format!("syslog://{}", receiver.addr)));
    let view = Arc::new(Mutex::new(View::default()));
    let b = node(&view, &[&app]).await;
    b.join(&view);
    assert_eq!(
        b.plex.logplex.channel(&app.id).unwrap().owner(),
        Owner::Nobody
    );
    (receiver, app, view, b)
}

/// Sends `n` lines `prefix-0`.. to `node` and waits until it has taken
/// them (they are in its history); the lines.
async fn send_taken(node: &Node, app: &App, prefix: &str, n: usize) -> Vec<String> {
    let msgs: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    node.send(app, &msgs).await;
    eventually("the node took the lines", || {
        msgs.iter().all(|m| node.has(app, m) == 1)
    })
    .await;
    msgs
}

/// The one drain of `node`: accepted, buffered and delivered.
fn drain_counts(node: &Node) -> (u64, u64, u64) {
    let stats = node.plex.logplex.drain_stats();
    assert_eq!(stats.len(), 1, "{stats:?}");
    let s = &stats[0];
    (s.accepted, s.buffered, s.delivered)
}

#[tokio::test]
async fn lines_taken_while_nobody_owns_a_channel_wait_in_its_drain_and_go_once_this_node_owns_it() {
    let (receiver, app, view, b) = unowned_node("unowned").await;
    let early = send_taken(&b, &app, "early", 30).await;
    // Held: the drain keeps every line and sends none.
    assert_eq!(drain_counts(&b), (30, 30, 0));
    assert_eq!(*receiver.connections.lock().unwrap(), 0, "nothing sent");
    // A new configuration while nobody owns the channel keeps the held
    // drain and what it holds.
    b.plex.logplex.configure(logplex::LogplexConfig {
        revision: 2,
        channels: vec![app.spec()],
    });
    assert_eq!(drain_counts(&b), (30, 30, 0));

    // The node sees its own registration: it owns the channel now.
    owns(&view, &app, &b);
    b.plex.logplex.rebalance();
    let late = vec!["late".to_string()];
    b.send(&app, &late).await;
    let all: Vec<String> = early.iter().chain(&late).cloned().collect();
    eventually("every line reached the drain", || {
        received(&receiver, &all).iter().all(|&n| n >= 1)
    })
    .await;
    assert!(
        received(&receiver, &all).iter().all(|&n| n == 1),
        "each line once"
    );
    // The same drain, its books whole: 31 taken, 31 delivered.
    eventually("the drain is idle", || drain_counts(&b) == (31, 0, 31)).await;
    assert_eq!(*receiver.connections.lock().unwrap(), 1);
}

#[tokio::test]
async fn lines_a_node_held_for_an_unowned_channel_are_delivered_as_its_drain_retires_when_a_peer_owns_it(
) {
    let (receiver, app, view, b) = unowned_node("unowned-then-peer").await;
    let held = send_taken(&b, &app, "held", 10).await;
    assert_eq!(drain_counts(&b), (10, 10, 0));

    // A peer joins and owns the channel: B's held drain delivers what it
    // held and stops; the peer's drain takes the new lines.
    let a = node(&view, &[&app]).await;
    owns(&view, &app, &a);
    a.join(&view);
    b.plex.logplex.rebalance();
    assert!(b.plex.logplex.drain_stats().is_empty(), "B runs no drain");
    let after: Vec<String> = (0..10).map(|i| format!("after-{i}")).collect();
    b.send(&app, &after).await;
    let all: Vec<String> = held.iter().chain(&after).cloned().collect();
    eventually("every line reached the drain", || {
        received(&receiver, &all).iter().all(|&n| n >= 1)
    })
    .await;
    assert!(b.forward.flush(Duration::from_secs(5)).await);
    assert!(
        received(&receiver, &all).iter().all(|&n| n == 1),
        "each line once"
    );
    for m in &held {
        assert_eq!(a.has(&app, m), 0, "{m} stays in B's history");
    }
    for m in &after {
        assert_eq!(a.has(&app, m), 1, "{m} forwarded to the owner");
    }
}

#[tokio::test]
async fn a_line_forwarded_for_a_channel_this_node_then_owns_is_delivered_here_not_dropped() {
    let receiver = SyslogReceiver::start().await;
    let app = App::new("taken-back").drain(drain(&format!("syslog://{}", receiver.addr)));
    let view = Arc::new(Mutex::new(View::default()));
    let a = node(&view, &[&app]).await;
    // B's forwarder holds lines long enough for the placement to move.
    let b = node_forwarding_after(&view, &[&app], Duration::from_secs(3)).await;
    owns(&view, &app, &a);
    a.join(&view);
    b.join(&view);
    let lines: Vec<String> = (0..5).map(|i| format!("in-flight-{i}")).collect();
    b.send(&app, &lines).await;
    eventually("B took the lines (to forward them to A)", || {
        b.plex.logplex.ingest_stats().received == 5
    })
    .await;
    assert!(
        lines.iter().all(|m| b.has(&app, m) == 0),
        "forwarded, not kept"
    );

    // A goes before B's forwarder sends them: B owns the channel now, and
    // the forwarder sees it before B's channel is placed again (no
    // rebalance here).
    {
        let mut v = view.lock().unwrap();
        v.live.remove(&a.id);
        v.owners.insert(app.id.clone(), b.id.clone());
    }
    assert!(b.forward.flush(Duration::from_secs(5)).await);
    assert_eq!(
        b.plex.logplex.channel(&app.id).unwrap().owner(),
        Owner::Here
    );
    eventually("B's drain delivered them", || {
        received(&receiver, &lines).iter().all(|&n| n == 1)
    })
    .await;
    for m in &lines {
        assert_eq!(b.has(&app, m), 1, "{m} in B's history");
    }
    let stats = b.forward.stats();
    assert_eq!(stats.dropped.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert_eq!(stats.shipped.load(std::sync::atomic::Ordering::Relaxed), 0);
}
