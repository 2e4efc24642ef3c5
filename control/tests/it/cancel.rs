//! Cancellation and conflicts: a client that goes away, a change future
//! dropped mid-flight, or another writer on the same store must leave the
//! mirror, the published table and the store in step, and later writes must
//! go through.

use std::pin::Pin;
use std::sync::{mpsc, Arc, Mutex};
use std::task::Poll;

use control::model::{key, AppRecord, RouterSettings};
use control::state::Txn;
use control::store::{Batch, Change, Snapshot, StoreError};
use control::{ApiError, MemoryStore, RedbStore, Store};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::{assert_error, eventually, patience, Harness, TempDir, KEY};

/// Mirror, route table and logplex config all at the store's revision, with
/// the store's keys and one route per stored app.
fn assert_in_step(h: &Harness, store: &dyn Store) {
    let snap = store.load().expect("load");
    let state = h.control.read();
    assert_eq!(state.revision, snap.revision, "mirror revision");
    assert_eq!(state.kv, snap.kv, "mirror keys");
    let apps = snap.kv.keys().filter(|k| k.starts_with("apps/")).count();
    let table = h.routes.load();
    assert_eq!(table.revision(), snap.revision, "table revision");
    assert_eq!(table.apps().len(), apps, "apps in the table");
    let config = h.logs.config();
    assert_eq!(config.channels.len(), apps, "logplex channels");
    assert_eq!(
        config.channels,
        control::publish::logplex_config(&state).channels,
        "logplex channels"
    );
}

async fn in_step(h: &Harness, store: &dyn Store) -> bool {
    let Ok(snap) = store.load() else { return false };
    let state = h.control.read();
    state.revision == snap.revision
        && state.kv == snap.kv
        && h.routes.load().revision() == snap.revision
}

/// Sends a complete `POST /apps` and resets the connection (SO_LINGER 0)
/// without reading the answer.
async fn post_and_reset(addr: std::net::SocketAddr, name: String) {
    let body = json!({ "name": name }).to_string();
    let req = format!(
        "POST /apps HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return;
    };
    let _ = s.write_all(req.as_bytes()).await;
    let _ = s.set_zero_linger();
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_reset_mid_request_do_not_wedge_writes() {
    let dir = TempDir::new("cancel");
    // redb fsyncs each commit: a wide window for a reset to land mid-commit.
    let store: Arc<dyn Store> =
        Arc::new(RedbStore::open(&dir.0.join("store.redb")).expect("store"));
    let h = Harness::with_store(store.clone(), None).await;
    for round in 0..6 {
        let resets: Vec<_> = (0..50)
            .map(|i| tokio::spawn(post_and_reset(h.addr, format!("reset-{round}-{i}"))))
            .collect();
        for r in resets {
            r.await.expect("client task");
        }
    }
    let (status, body) = h
        .call("POST", "/apps", Some(json!({ "name": "after-resets" })))
        .await;
    assert_eq!(status, 201, "{body}");
    eventually("the mirror catches up with the store", || {
        in_step(&h, store.as_ref())
    })
    .await;
    assert_in_step(&h, store.as_ref());
    // Every app a committed write created is listed.
    let (status, apps) = h.get("/apps").await;
    assert_eq!(status, 200);
    let stored = store
        .load()
        .expect("load")
        .kv
        .keys()
        .filter(|k| k.starts_with("apps/"))
        .count();
    assert_eq!(apps.as_array().map(Vec::len), Some(stored), "{apps}");
}

/// A store whose commits wait for the test's go-ahead, and say when they
/// have started.
struct GatedStore {
    inner: MemoryStore,
    entered: Mutex<mpsc::Sender<()>>,
    release: Mutex<mpsc::Receiver<()>>,
}

struct Gate {
    entered: mpsc::Receiver<()>,
    release: mpsc::Sender<()>,
}

fn gated() -> (Arc<GatedStore>, Gate) {
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let store = Arc::new(GatedStore {
        inner: MemoryStore::new(),
        entered: Mutex::new(entered_tx),
        release: Mutex::new(release_rx),
    });
    (store, Gate { entered, release })
}

impl Store for GatedStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        self.inner.load()
    }
    fn commit(&self, expected: u64, changes: &[Change]) -> Result<u64, StoreError> {
        let _ = self.entered.lock().expect("lock").send(());
        let _ = self.release.lock().expect("lock").recv();
        self.inner.commit(expected, changes)
    }
    fn changes_since(&self, since: u64, limit: usize) -> Result<Vec<Batch>, StoreError> {
        self.inner.changes_since(since, limit)
    }
    fn revision(&self) -> Result<u64, StoreError> {
        self.inner.revision()
    }
}

/// Creates app `name` (its id is its name, which the mirror's lookup by
/// name or id accepts).
fn put_app(txn: &mut Txn<'_>, name: &str) -> Result<(), ApiError> {
    let app = AppRecord {
        id: name.into(),
        name: name.into(),
        created_at: "2026-01-01T00:00:00Z".into(),
        updated_at: "2026-01-01T00:00:00Z".into(),
        released_at: None,
        maintenance: false,
        session_affinity: false,
        preboot: false,
        acm: false,
        router: RouterSettings::default(),
    };
    txn.put(key::app(name), &app);
    txn.put(key::name(name), &name);
    Ok(())
}

/// Polls `fut` once; panics if it completed.
async fn poll_once<F: std::future::Future + Unpin>(fut: &mut F) {
    std::future::poll_fn(|cx| {
        assert!(
            Pin::new(&mut *fut).poll(cx).is_pending(),
            "the change finished early"
        );
        Poll::Ready(())
    })
    .await;
}

async fn wait_entered(gate: &Gate) {
    let deadline = std::time::Instant::now() + patience();
    loop {
        match gate.entered.try_recv() {
            Ok(()) => return,
            Err(mpsc::TryRecvError::Empty) if std::time::Instant::now() < deadline => {
                tokio::task::yield_now().await;
            }
            Err(e) => panic!("the commit never started: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_dropped_during_its_commit_is_applied_and_published() {
    let (store, gate) = gated();
    let h = Harness::with_store(store.clone(), None).await;
    let mut revisions = h.control.subscribe();

    let control = h.control.clone();
    let mut change = Box::pin(control.change(|txn| put_app(txn, "dropped")));
    poll_once(&mut change).await;
    wait_entered(&gate).await;
    // The client goes away while the store is committing.
    drop(change);
    gate.release.send(()).expect("release");

    tokio::time::timeout(patience(), revisions.wait_for(|r| *r == 1))
        .await
        .expect("the change is published")
        .expect("revision channel");
    assert_in_step(&h, store.as_ref());
    assert!(h.routes.load().lookup("dropped.localhost").is_some());
    assert!(h.control.read().app("dropped").is_some());

    // And the next write is based on revision 1 and goes through.
    let next = tokio::spawn({
        let control = h.control.clone();
        async move { control.change(|txn| put_app(txn, "next")).await }
    });
    tokio::task::spawn_blocking(move || {
        gate.entered.recv().expect("second commit");
        gate.release.send(()).expect("release");
        gate
    })
    .await
    .expect("gate");
    next.await.expect("task").expect("second change");
    assert_in_step(&h, store.as_ref());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_dropped_while_waiting_for_the_writer_leaves_nothing_behind() {
    let (store, gate) = gated();
    let h = Harness::with_store(store.clone(), None).await;

    // The first change holds the writer, parked in its commit.
    let first = tokio::spawn({
        let control = h.control.clone();
        async move { control.change(|txn| put_app(txn, "first")).await }
    });
    wait_entered(&gate).await;
    // The second waits for the writer and is dropped there.
    let control = h.control.clone();
    let mut second = Box::pin(control.change(|txn| put_app(txn, "second")));
    poll_once(&mut second).await;
    drop(second);
    gate.release.send(()).expect("release");
    first.await.expect("task").expect("first change");

    assert_eq!(store.revision().expect("revision"), 1);
    assert_in_step(&h, store.as_ref());
    assert!(h.control.read().app("second").is_none());
    assert!(h.routes.load().lookup("second.localhost").is_none());
    assert!(gate.entered.try_recv().is_err(), "a second commit started");
}

#[tokio::test]
async fn a_commit_by_another_writer_is_reloaded_and_the_change_runs_again() {
    let store = Arc::new(MemoryStore::new());
    let a = Harness::with_store(store.clone(), None).await;
    let b = Harness::with_store(store.clone(), None).await;
    a.app("first").await;
    // `b` opened at revision 0; `a` has moved the store to 1 behind its back.
    // `b`'s commit meets the conflict, reloads and runs the change again on
    // revision 1: the client never sees the conflict.
    b.app("from-b").await;
    assert_in_step(&b, store.as_ref());
    assert_eq!(store.revision().expect("revision"), 2);
    assert!(b.routes.load().lookup("first.localhost").is_some());
    assert!(b.routes.load().lookup("from-b.localhost").is_some());
    let (status, body) = b.get("/apps/first").await;
    assert_eq!(status, 200, "{body}");

    // A raw commit behind both (an operator's tool) is picked up the same way.
    let first = a.control.read().app("first").expect("first").id;
    let rev = store.revision().expect("revision");
    let config = Change {
        key: key::config(&first),
        value: Some(json!({ "SET_BEHIND": "yes" })),
    };
    store.commit(rev, &[config]).expect("raw commit");
    a.app("from-a").await;
    assert_in_step(&a, store.as_ref());
    let (status, vars) = a.get("/apps/first/config-vars").await;
    assert_eq!(status, 200);
    assert_eq!(vars["SET_BEHIND"], "yes", "{vars}");
    let (_, apps) = a.get("/apps").await;
    let names: Vec<&str> = apps
        .as_array()
        .expect("apps")
        .iter()
        .filter_map(|app| app["name"].as_str())
        .collect();
    for name in ["first", "from-b", "from-a"] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
}

/// A store whose next commit lands and then reports a failure (an fsync
/// error after the write, a lost reply from a remote store).
struct LandsThenFails {
    inner: MemoryStore,
    fail_next: std::sync::atomic::AtomicBool,
}

impl Store for LandsThenFails {
    fn load(&self) -> Result<Snapshot, StoreError> {
        self.inner.load()
    }
    fn commit(&self, expected: u64, changes: &[Change]) -> Result<u64, StoreError> {
        let revision = self.inner.commit(expected, changes)?;
        if self
            .fail_next
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(StoreError::Backend("reply lost after the write".into()));
        }
        Ok(revision)
    }
    fn changes_since(&self, since: u64, limit: usize) -> Result<Vec<Batch>, StoreError> {
        self.inner.changes_since(since, limit)
    }
    fn revision(&self) -> Result<u64, StoreError> {
        self.inner.revision()
    }
}

#[tokio::test]
async fn a_commit_that_landed_but_reported_failure_is_reloaded() {
    let store = Arc::new(LandsThenFails {
        inner: MemoryStore::new(),
        fail_next: std::sync::atomic::AtomicBool::new(false),
    });
    let h = Harness::with_store(store.clone(), None).await;
    h.app("before").await;
    store
        .fail_next
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (status, body) = h
        .call("POST", "/apps", Some(json!({ "name": "landed" })))
        .await;
    assert_error(status, &body, 503, "unavailable", "could not be stored");
    // The mirror picked up what the store holds, and the next write works.
    assert_in_step(&h, store.as_ref());
    assert!(h.control.read().app("landed").is_some());
    h.app("after").await;
    assert_in_step(&h, store.as_ref());
}
