//! A router following a control plane: converges, keeps serving the last
//! table while the control plane is away, and catches up after it returns.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use control::model::key;
use control::store::Change;
use control::{FollowSettings, FollowStatus, MemoryStore, Store};
use serde_json::json;

use crate::support::{eventually, Harness, KEY};

fn dyno_count(routes: &router::Routes, app: &str) -> usize {
    routes.load().app(app).map_or(0, |a| a.web.len())
}

/// Registers `web.N` of `demo` at `127.0.0.1:500N`; returns the status.
async fn put_dyno(h: &Harness, n: u16) -> u16 {
    let body = json!({ "address": format!("127.0.0.1:{}", 5000 + n) });
    h.call("PUT", &format!("/apps/demo/dynos/web.{n}"), Some(body))
        .await
        .0
}

/// A follower of `h` publishing into its own table.
fn start_follower(
    h: &Harness,
) -> (
    Arc<router::Routes>,
    Arc<FollowStatus>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let routes = Arc::new(router::Routes::new(
        router::RouteTable::builder().build().expect("table"),
    ));
    let status = Arc::new(FollowStatus::default());
    let mut settings = FollowSettings::new(h.url(), KEY, "localhost");
    settings.heartbeat = Duration::from_millis(200);
    settings.max_backoff = Duration::from_millis(300);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let follower = tokio::spawn(control::follow(
        settings,
        routes.clone(),
        status.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    (routes, status, stop, follower)
}

#[tokio::test]
async fn a_follower_survives_a_control_plane_restart() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    // The control plane's socket stays bound across its restart.
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut h = Harness::with_store(store.clone(), Some(&socket)).await;
    h.app("demo").await;
    put_dyno(&h, 1).await;

    let (routes, status, stop, follower) = start_follower(&h);

    eventually("the follower has web.1", || async {
        dyno_count(&routes, "demo") == 1
    })
    .await;
    put_dyno(&h, 2).await;
    eventually("the follower has web.2", || async {
        dyno_count(&routes, "demo") == 2
    })
    .await;
    assert_eq!(routes.load().revision(), h.control.read().revision);

    // The control plane goes away: the follower notices, and the table stays.
    let failures = status.failures.load(Ordering::Relaxed);
    h.stop().await;
    drop(h);
    eventually("the follower notices the control plane is gone", || async {
        status.failures.load(Ordering::Relaxed) > failures
    })
    .await;
    assert_eq!(
        dyno_count(&routes, "demo"),
        2,
        "a silent control plane never removes dynos"
    );
    assert!(routes.load().lookup("demo.localhost").is_some());

    // It comes back on the same socket with the same store and moves on.
    let h = Harness::with_store(store, Some(&socket)).await;
    put_dyno(&h, 3).await;
    eventually("the follower has web.3", || async {
        dyno_count(&routes, "demo") == 3
    })
    .await;
    assert_eq!(
        status.revision.load(Ordering::Relaxed),
        h.control.read().revision
    );
    assert_eq!(
        status.syncs.load(Ordering::Relaxed),
        1,
        "resumed from its revision, no re-read"
    );

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .expect("follower stops")
        .expect("join");
}

#[tokio::test]
async fn a_change_the_follower_cannot_decode_makes_it_re_read_the_table() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let h = Harness::with_store(store.clone(), None).await;
    let app = h.app("demo").await;
    let id = app["id"].as_str().expect("id").to_string();
    put_dyno(&h, 1).await;
    let (routes, status, stop, follower) = start_follower(&h);
    eventually("the follower has web.1", || async {
        dyno_count(&routes, "demo") == 1
    })
    .await;
    assert_eq!(status.syncs.load(Ordering::Relaxed), 1);

    // A route entry this router cannot decode (as a newer control plane
    // could write) lands in the store's change log and is streamed by the
    // real watch endpoint.
    let rev = store.revision().expect("revision");
    let unreadable = Change {
        key: key::route(&id),
        value: Some(json!({ "id": id, "name": "demo", "dynos": "a newer shape" })),
    };
    store.commit(rev, &[unreadable]).expect("commit");
    eventually("the follower re-reads the table", || async {
        status.syncs.load(Ordering::Relaxed) >= 2
    })
    .await;
    // It never moved past the change it could not apply, and kept serving.
    assert!(status.revision.load(Ordering::Relaxed) <= rev);
    assert_eq!(dyno_count(&routes, "demo"), 1);

    // The control plane picks the store up (the write that meets the
    // conflict reloads it and runs again), the change rewrites the route,
    // and the follower converges on it.
    assert_eq!(put_dyno(&h, 2).await, 201);
    eventually("the follower has web.2", || async {
        dyno_count(&routes, "demo") == 2
            && status.revision.load(Ordering::Relaxed) == h.control.read().revision
    })
    .await;
    assert_eq!(
        routes.load().revision(),
        store.revision().expect("revision")
    );

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .expect("follower stops")
        .expect("join");
}
