//! Two control nodes on one store: a conflict is invisible to clients while
//! the change is still valid, and answers what a single node answers when it
//! is not (on a real etcd, and on one shared in-memory store).

use std::sync::Arc;

use control::engine::CONFLICT_ATTEMPTS;
use control::model::key;
use control::store::{Batch, Change, Snapshot};
use control::{MemoryStore, Store, StoreError};
use serde_json::json;

use crate::etcd_server::Etcd;
use crate::store::etcd_store;
use crate::support::{assert_error, Harness, TempDir};

/// Ten rounds of both nodes creating the same app at once, then two
/// different apps at once.
async fn race(a: &Harness, b: &Harness, store: &dyn Store) {
    for round in 0..10 {
        let name = format!("same-{round}");
        let create = || Some(json!({ "name": name }));
        let (ra, rb) = tokio::join!(
            a.call("POST", "/apps", create()),
            b.call("POST", "/apps", create())
        );
        let (winner, loser) = match (ra.0, rb.0) {
            (201, 422) => (a, rb),
            (422, 201) => (b, ra),
            other => {
                panic!("round {round}: want one 201 and one 422, got {other:?}: {ra:?} {rb:?}")
            }
        };
        // The loser's answer is the one a single node gives.
        let single = winner.call("POST", "/apps", create()).await;
        assert_eq!(loser, single, "round {round}");
        assert_error(loser.0, &loser.1, 422, "invalid_params", "already taken");

        let (ra, rb) = tokio::join!(
            a.call(
                "POST",
                "/apps",
                Some(json!({ "name": format!("a-{round}") }))
            ),
            b.call(
                "POST",
                "/apps",
                Some(json!({ "name": format!("b-{round}") }))
            )
        );
        assert_eq!((ra.0, rb.0), (201, 201), "round {round}: {ra:?} {rb:?}");
    }
    // Every name is taken once in the store (a node's own mirror may not
    // have seen the other node's last writes yet).
    let kv = store.load().expect("load").kv;
    for round in 0..10 {
        for name in [
            format!("same-{round}"),
            format!("a-{round}"),
            format!("b-{round}"),
        ] {
            assert!(kv.contains_key(&key::name(&name)), "{name} is not stored");
        }
    }
    assert_eq!(
        store.revision().expect("revision"),
        30,
        "one commit per created app, none for the refused ones"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_etcd_creating_the_same_app_one_201_one_422() {
    let dir = TempDir::new("etcd");
    let etcd = Etcd::start(&dir.0);
    let a = Harness::with_store(Arc::new(etcd_store(&etcd, "/sy", 100)), None).await;
    let b = Harness::with_store(Arc::new(etcd_store(&etcd, "/sy", 100)), None).await;
    race(&a, &b, &etcd_store(&etcd, "/sy", 100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_store_creating_the_same_app_one_201_one_422() {
    let store = Arc::new(MemoryStore::new());
    let a = Harness::with_store(store.clone(), None).await;
    let b = Harness::with_store(store.clone(), None).await;
    race(&a, &b, store.as_ref()).await;
}

/// A store another writer always beats: before each of our commits it
/// commits a change of its own.
struct Outrun(MemoryStore);

impl Store for Outrun {
    fn load(&self) -> Result<Snapshot, StoreError> {
        self.0.load()
    }
    fn commit(&self, expected: u64, changes: &[Change]) -> Result<u64, StoreError> {
        let now = self.0.revision()?;
        let other = Change {
            key: format!("other/{now}"),
            value: Some(json!(now)),
        };
        self.0.commit(now, &[other])?;
        self.0.commit(expected, changes)
    }
    fn changes_since(&self, since: u64, limit: usize) -> Result<Vec<Batch>, StoreError> {
        self.0.changes_since(since, limit)
    }
    fn revision(&self) -> Result<u64, StoreError> {
        self.0.revision()
    }
}

#[tokio::test]
async fn a_node_outrun_every_time_answers_409_after_its_attempts() {
    let store = Arc::new(Outrun(MemoryStore::new()));
    let h = Harness::with_store(store.clone(), None).await;
    let (status, body) = h
        .call("POST", "/apps", Some(json!({ "name": "late" })))
        .await;
    assert_error(status, &body, 409, "conflict", "retry");
    let snap = store.load().expect("load");
    assert_eq!(
        snap.revision, CONFLICT_ATTEMPTS as u64,
        "one try per attempt"
    );
    assert!(
        snap.kv.keys().all(|k| k.starts_with("other/")),
        "{:?}",
        snap.kv.keys()
    );
    assert_eq!(h.control.read().revision, snap.revision, "reloaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_catches_up_with_the_other_nodes_writes() {
    let dir = TempDir::new("etcd");
    let etcd = Etcd::start(&dir.0);
    let a = Harness::with_store(Arc::new(etcd_store(&etcd, "/sy", 3)), None).await;
    let b = Harness::with_store(Arc::new(etcd_store(&etcd, "/sy", 3)), None).await;
    a.app("demo").await;
    let dyno = Some(json!({ "address": "127.0.0.1:5001" }));
    a.call("PUT", "/apps/demo/dynos/web.1", dyno).await;
    assert_eq!(b.control.read().revision, 0, "b has not read the store");
    // Within the log: the two batches are applied one by one.
    assert_eq!(b.control.catch_up().await.expect("catch up"), 2);
    assert_eq!(b.get("/apps/demo").await.0, 200);
    let table = b.routes.load();
    assert_eq!(table.app("demo").expect("published").web.len(), 1);
    assert_eq!(table.revision(), 2);
    assert_eq!(b.control.catch_up().await.expect("idle"), 2, "nothing new");

    // Past the log (it keeps 3 batches): a re-list.
    for n in 0..5 {
        a.app(&format!("more-{n}")).await;
    }
    assert_eq!(b.control.catch_up().await.expect("re-list"), 7);
    assert_eq!(b.get("/apps/more-0").await.0, 200);
    assert!(b.routes.load().lookup("more-4.localhost").is_some());
    // b's next write lands as revision 8, and a reads it after catching up.
    b.app("from-b").await;
    assert_eq!(a.control.catch_up().await.expect("catch up"), 8);
    assert_eq!(a.get("/apps/from-b").await.0, 200);

    // An API request reads the store first: a write through one node is
    // seen through the other at once, with no catch-up in between.
    b.app("read-your-write").await;
    assert_eq!(
        a.control.read().revision,
        8,
        "a has not caught up by itself"
    );
    assert_eq!(a.get("/apps/read-your-write").await.0, 200);
    assert_eq!(a.control.read().revision, 9);
}
