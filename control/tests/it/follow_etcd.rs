//! Routers following etcd directly, with a real etcd: several routers
//! converge on changes made through two control nodes; a paused (SIGSTOP),
//! partitioned, killed and restarted etcd leaves every router serving; a
//! compaction while a router is away costs exactly one re-list; a router
//! cold-starts from its on-disk table with etcd down.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use control::{EtcdConfig, EtcdStore, FollowSettings, FollowStatus, Store};
use serde_json::json;

use crate::etcd_server::Etcd;
use crate::support::{eventually, Harness, TempDir};
use crate::tcp_proxy::Proxy;

/// A router's table fed by a follower of `config`.
struct Router {
    routes: Arc<router::Routes>,
    status: Arc<FollowStatus>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Router {
    fn follow(config: EtcdConfig, cache: Option<std::path::PathBuf>) -> Router {
        let routes = Arc::new(router::Routes::new(
            router::RouteTable::builder().build().expect("table"),
        ));
        let status = Arc::new(FollowStatus::default());
        let mut settings = FollowSettings::etcd(config, "localhost");
        settings.heartbeat = Duration::from_millis(200);
        settings.max_backoff = Duration::from_millis(300);
        settings.cache = cache;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(control::follow(
            settings,
            routes.clone(),
            status.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Router {
            routes,
            status,
            stop: Some(stop),
            task: Some(task),
        }
    }

    fn dynos(&self, app: &str) -> usize {
        self.routes.load().app(app).map_or(0, |a| a.web.len())
    }

    fn revision(&self) -> u64 {
        self.routes.load().revision()
    }

    fn syncs(&self) -> u64 {
        self.status.syncs.load(Ordering::Acquire)
    }

    fn connected(&self) -> bool {
        self.status.connected.load(Ordering::Acquire)
    }

    /// Stops the follower (its cache is written one last time).
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("follower task");
        }
    }
}

/// A control node on `config`'s etcd.
async fn control_node(config: &EtcdConfig) -> Harness {
    let config = config.clone();
    let store = tokio::task::spawn_blocking(move || EtcdStore::connect(&config))
        .await
        .expect("connect task")
        .expect("connect to etcd");
    Harness::with_store(Arc::new(store) as Arc<dyn Store>, None).await
}

async fn put_dyno(h: &Harness, app: &str, n: u16) {
    let body = json!({ "address": format!("127.0.0.1:{}", 5000 + n) });
    let (status, body) = h
        .call("PUT", &format!("/apps/{app}/dynos/web.{n}"), Some(body))
        .await;
    assert!(status == 200 || status == 201, "{status}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_routers_converge_on_changes_made_through_two_control_nodes() {
    let dir = TempDir::new("etcd");
    let etcd = Etcd::start(&dir.0);
    let config = etcd.config("/conv");
    let (a, b) = (control_node(&config).await, control_node(&config).await);
    let routers: Vec<Router> = (0..3)
        .map(|_| Router::follow(config.clone(), None))
        .collect();

    for i in 0..10u16 {
        let app = format!("app{i}");
        // Created through one node, its dyno registered through the other
        // at once: the second node reads the first one's commit first.
        a.app(&app).await;
        put_dyno(&b, &app, 1).await;
    }
    let store_revision = b.control.read().revision;
    assert_eq!(store_revision, 20, "one commit per change");
    for (n, r) in routers.iter().enumerate() {
        eventually(&format!("router {n} has every app's dyno"), || async {
            r.revision() == store_revision
        })
        .await;
        for i in 0..10 {
            assert_eq!(r.dynos(&format!("app{i}")), 1, "router {n}, app{i}");
        }
        // One read of the whole table at start; every change after it came
        // through the watch.
        assert_eq!(r.syncs(), 1, "router {n} re-listed");
    }
    // Removing a dyno through either node reaches every router.
    let (status, _) = a.call("DELETE", "/apps/app3/dynos/web.1", None).await;
    assert_eq!(status, 200);
    for r in &routers {
        eventually("the dyno is gone everywhere", || async {
            r.dynos("app3") == 0
        })
        .await;
    }
    for r in routers {
        r.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_etcd_is_noticed_and_the_router_keeps_its_table() {
    let dir = TempDir::new("etcd");
    let etcd = Etcd::start(&dir.0);
    let config = etcd.config("/pause");
    let node = control_node(&config).await;
    node.app("demo").await;
    put_dyno(&node, "demo", 1).await;
    let r = Router::follow(config.clone(), None);
    eventually("the router has web.1", || async { r.dynos("demo") == 1 }).await;
    eventually("the router is connected", || async { r.connected() }).await;
    let failures = r.status.failures.load(Ordering::Acquire);

    etcd.pause();
    eventually("the router notices etcd hung", || async { !r.connected() }).await;
    assert!(r.status.failures.load(Ordering::Acquire) > failures);
    // Silence removes nothing.
    assert_eq!(r.dynos("demo"), 1);
    assert!(
        r.status.describe().contains("unreachable"),
        "{}",
        r.status.describe()
    );

    etcd.resume();
    eventually("the router reconnects", || async { r.connected() }).await;
    put_dyno(&node, "demo", 2).await;
    eventually("a change after the pause arrives", || async {
        r.dynos("demo") == 2
    })
    .await;
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_killed_and_restarted_leaves_the_router_serving_then_following() {
    let dir = TempDir::new("etcd");
    let mut etcd = Etcd::start(&dir.0);
    // The control node and the router reach etcd through one stable
    // address; etcd comes back on other ports.
    let proxy = Proxy::start(&etcd.endpoint).await;
    let config = proxy.etcd_config("/kill");
    let node = control_node(&config).await;
    node.app("demo").await;
    put_dyno(&node, "demo", 1).await;
    let r = Router::follow(config.clone(), None);
    eventually("the router has web.1", || async { r.dynos("demo") == 1 }).await;

    etcd.kill9_and_restart();
    eventually("the router notices etcd died", || async { !r.connected() }).await;
    assert_eq!(r.dynos("demo"), 1, "the table outlives etcd");
    proxy.retarget(&etcd.endpoint);
    eventually("the router reconnects", || async { r.connected() }).await;
    put_dyno(&node, "demo", 2).await;
    eventually("a change after the restart arrives", || async {
        r.dynos("demo") == 2
    })
    .await;
    assert_eq!(r.revision(), node.control.read().revision);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_while_the_router_is_away_costs_one_relist_and_no_change() {
    let dir = TempDir::new("etcd");
    let etcd = Etcd::start(&dir.0);
    let proxy = Proxy::start(&etcd.endpoint).await;
    // The control node writes to etcd directly; only the router is cut off.
    let node = control_node(&etcd.config("/compact")).await;
    node.app("demo").await;
    let r = Router::follow(proxy.etcd_config("/compact"), None);
    eventually("the router has the app", || async {
        r.routes.load().app("demo").is_some()
    })
    .await;
    assert_eq!(r.syncs(), 1);

    proxy.cut();
    eventually("the router is cut off", || async { !r.connected() }).await;
    for n in 1..=20 {
        put_dyno(&node, "demo", n).await;
    }
    // etcd forgets the history the router would resume from.
    etcd.compact_all();
    proxy.heal();
    let revision = node.control.read().revision;
    eventually("the router has every change", || async {
        r.revision() == revision
    })
    .await;
    assert_eq!(r.dynos("demo"), 20);
    assert_eq!(r.syncs(), 2, "exactly one re-list after the compaction");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_cold_starts_from_its_table_on_disk_with_etcd_down() {
    let dir = TempDir::new("etcd");
    let etcd = Etcd::start(&dir.0);
    let proxy = Proxy::start(&etcd.endpoint).await;
    let config = proxy.etcd_config("/cold");
    let node = control_node(&config).await;
    node.app("demo").await;
    put_dyno(&node, "demo", 1).await;
    let data = TempDir::new("router-data");
    let cache = data.0.join("route-table.json");
    let revision = node.control.read().revision;

    let r = Router::follow(config.clone(), Some(cache.clone()));
    eventually("the router has web.1", || async { r.dynos("demo") == 1 }).await;
    r.stop().await;
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cache).expect("cache written")).expect("json");
    assert_eq!(on_disk["revision"], json!(revision));

    // etcd unreachable: a new router process serves the table on disk.
    proxy.cut();
    let r = Router::follow(config, Some(cache));
    eventually("the table on disk is served", || async {
        r.status.loaded.load(Ordering::Acquire)
    })
    .await;
    assert_eq!(r.dynos("demo"), 1);
    assert!(!r.connected());
    assert_eq!(r.syncs(), 0, "nothing was read from etcd");

    // etcd back: the router reads it and follows on.
    proxy.heal();
    put_dyno(&node, "demo", 2).await;
    eventually("the router follows etcd again", || async {
        r.dynos("demo") == 2
    })
    .await;
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_larger_than_one_read_is_listed_whole_at_one_revision() {
    let dir = TempDir::new("etcd");
    let etcd = Etcd::start(&dir.0);
    let config = etcd.config("/big");
    let store = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || EtcdStore::connect(&config))
            .await
            .expect("connect task")
            .expect("connect")
    };
    // 700 routes, far more than one page of the paginated read; committed
    // 100 to a batch (etcd's default limit is 128 operations a transaction).
    let route = |n: usize| {
        json!({
            "id": format!("id-{n}"), "name": format!("app-{n}"), "domains": [],
            "dynos": [], "certs": [],
            "settings": { "maintenance": false, "session_affinity": false,
                          "error_page_url": null, "maintenance_page_url": null },
        })
    };
    let store = Arc::new(store);
    let writer = store.clone();
    tokio::task::spawn_blocking(move || {
        for batch in 0..7 {
            let changes: Vec<control::store::Change> = (batch * 100..(batch + 1) * 100)
                .map(|n| control::store::Change {
                    key: format!("routes/id-{n}"),
                    value: Some(route(n)),
                })
                .collect();
            writer.commit(batch as u64, &changes).expect("commit");
        }
    })
    .await
    .expect("writer");

    let r = Router::follow(config, None);
    eventually("the router has listed", || async { r.syncs() == 1 }).await;
    assert_eq!(r.revision(), 7);
    assert_eq!(r.routes.load().apps().len(), 700);
    assert!(r.routes.load().app("app-699").is_some());
    let loaded = tokio::task::spawn_blocking(move || store.load())
        .await
        .expect("load task")
        .expect("load");
    assert_eq!((loaded.revision, loaded.kv.len()), (7, 700));
    r.stop().await;
}
