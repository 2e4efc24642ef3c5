//! A router following a control plane: converges, keeps serving the last
//! table while the control plane is away, and catches up after it returns.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use control::{FollowSettings, FollowStatus, MemoryStore, Store};
use serde_json::json;

use crate::support::{eventually, Harness, KEY};

fn dyno_count(routes: &router::Routes, app: &str) -> usize {
    routes.load().app(app).map_or(0, |a| a.web.len())
}

#[tokio::test]
async fn a_follower_survives_a_control_plane_restart() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut h = Harness::with_store(store.clone(), None).await;
    h.app("demo").await;
    h.call(
        "PUT",
        "/apps/demo/dynos/web.1",
        Some(json!({ "address": "127.0.0.1:5001" })),
    )
    .await;

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

    eventually("the follower has web.1", || async {
        dyno_count(&routes, "demo") == 1
    })
    .await;
    h.call(
        "PUT",
        "/apps/demo/dynos/web.2",
        Some(json!({ "address": "127.0.0.1:5002" })),
    )
    .await;
    eventually("the follower has web.2", || async {
        dyno_count(&routes, "demo") == 2
    })
    .await;
    assert_eq!(routes.load().revision(), h.control.read().revision);

    // The control plane goes away: the table stays.
    let addr = h.addr;
    h.stop().await;
    drop(h);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        dyno_count(&routes, "demo"),
        2,
        "a silent control plane never removes dynos"
    );
    assert!(routes.load().lookup("demo.localhost").is_some());

    // It comes back on the same address with the same store and moves on.
    let h = Harness::with_store(store, Some(addr)).await;
    h.call(
        "PUT",
        "/apps/demo/dynos/web.3",
        Some(json!({ "address": "127.0.0.1:5003" })),
    )
    .await;
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
