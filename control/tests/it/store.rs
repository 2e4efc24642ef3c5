//! The store contract, on every backend (memory, redb, a real etcd):
//! revisions, durability across a reopen, conflicts and compaction.

use std::sync::Arc;

use control::store::Change;
use control::{EtcdStore, MemoryStore, RedbStore, Store, StoreError};
use serde_json::json;

use crate::etcd_server::Etcd;
use crate::support::{Harness, TempDir};

pub(crate) fn put(key: &str, v: serde_json::Value) -> Change {
    Change {
        key: key.into(),
        value: Some(v),
    }
}

fn contract(store: &dyn Store) {
    assert_eq!(store.revision().expect("rev"), 0);
    assert_eq!(
        store
            .commit(0, &[put("a", json!(1)), put("b", json!(2))])
            .expect("commit"),
        1
    );
    assert!(matches!(
        store.commit(0, &[put("a", json!(3))]),
        Err(StoreError::Conflict {
            expected: 0,
            actual: 1
        })
    ));
    assert_eq!(
        store
            .commit(
                1,
                &[Change {
                    key: "a".into(),
                    value: None
                }]
            )
            .expect("commit"),
        2
    );
    let snap = store.load().expect("load");
    assert_eq!(snap.revision, 2);
    assert_eq!(snap.kv.get("a"), None);
    assert_eq!(snap.kv.get("b"), Some(&json!(2)));
    let batches = store.changes_since(0, 10).expect("changes");
    assert_eq!(
        batches.iter().map(|b| b.revision).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(store.changes_since(1, 10).expect("changes").len(), 1);
    assert!(store.changes_since(2, 10).expect("changes").is_empty());
    assert!(matches!(
        store.changes_since(3, 10),
        Err(StoreError::Future { .. })
    ));
}

/// What a durable backend still holds after [`contract`], seen through a
/// fresh handle.
fn reopened(store: &dyn Store) {
    assert_eq!(store.revision().expect("rev"), 2);
    assert_eq!(store.load().expect("load").kv.get("b"), Some(&json!(2)));
    assert_eq!(store.changes_since(0, 10).expect("log survives").len(), 2);
}

/// Ten commits into a store keeping three batches.
fn trims_its_log(store: &dyn Store) {
    for i in 0..10u64 {
        store.commit(i, &[put("k", json!(i))]).expect("commit");
    }
    assert!(matches!(
        store.changes_since(2, 10),
        Err(StoreError::Compacted { oldest: 8, .. })
    ));
    assert_eq!(store.changes_since(7, 10).expect("in window").len(), 3);
    assert_eq!(store.changes_since(8, 1).expect("limit").len(), 1);
    assert_eq!(store.load().expect("load").kv["k"], json!(9));
}

/// An etcd store under `prefix`, keeping `retention` batches.
pub(crate) fn etcd_store(etcd: &Etcd, prefix: &str, retention: u64) -> EtcdStore {
    EtcdStore::connect_with_retention(&etcd.config(prefix), retention).expect("connect to etcd")
}

#[test]
fn memory_store_contract() {
    contract(&MemoryStore::new());
}

#[test]
fn redb_store_contract_and_reopen() {
    let dir = TempDir::new("store");
    let path = dir.0.join("s.redb");
    contract(&RedbStore::open(&path).expect("open"));
    reopened(&RedbStore::open(&path).expect("reopen"));
}

#[test]
fn etcd_store_contract_and_reconnect() {
    let dir = TempDir::new("etcd");
    let etcd = Etcd::start(&dir.0);
    contract(&etcd_store(&etcd, "/sy", 100));
    reopened(&etcd_store(&etcd, "/sy", 100));
    // Another prefix on the same etcd is another, empty store.
    contract(&etcd_store(&etcd, "/other", 100));
}

#[test]
fn a_trimmed_log_reports_compaction() {
    trims_its_log(&MemoryStore::with_retention(3));
    let dir = TempDir::new("etcd");
    let etcd = Etcd::start(&dir.0);
    trims_its_log(&etcd_store(&etcd, "/sy", 3));
}

/// An app and a dyno through the API, then a second control plane on the
/// same store (a restart, or another node) serves and publishes them.
async fn state_survives_a_control_plane_restart(open: impl Fn() -> Arc<dyn Store>) {
    {
        let mut h = Harness::with_store(open(), None).await;
        h.app("demo").await;
        h.call(
            "PUT",
            "/apps/demo/dynos/web.1",
            Some(json!({ "address": "127.0.0.1:5001" })),
        )
        .await;
        h.stop().await;
    }
    let h = Harness::with_store(open(), None).await;
    assert_eq!(h.get("/apps/demo").await.0, 200);
    let table = h.routes.load();
    assert_eq!(table.app("demo").expect("published at start").web.len(), 1);
    assert_eq!(table.revision(), h.control.read().revision);
}

#[tokio::test]
async fn state_survives_a_control_plane_restart_on_redb() {
    let dir = TempDir::new("restart");
    let path = dir.0.join("s.redb");
    state_survives_a_control_plane_restart(|| Arc::new(RedbStore::open(&path).expect("open")))
        .await;
}

#[tokio::test]
async fn state_survives_a_control_plane_restart_on_etcd() {
    let dir = TempDir::new("etcd");
    let etcd = Etcd::start(&dir.0);
    state_survives_a_control_plane_restart(|| Arc::new(etcd_store(&etcd, "/sy", 100))).await;
}

#[tokio::test]
async fn export_then_import_reproduces_the_state() {
    let h = Harness::start().await;
    h.app("demo").await;
    h.call(
        "PUT",
        "/apps/demo/dynos/web.1",
        Some(json!({ "address": "127.0.0.1:5001" })),
    )
    .await;
    let doc = control::store::export(h.control.store().as_ref()).expect("export");
    let copy: Arc<dyn Store> = Arc::new(MemoryStore::new());
    control::store::import(copy.as_ref(), &doc).expect("import");
    assert!(
        control::store::import(copy.as_ref(), &doc).is_err(),
        "only into an empty store"
    );
    let h2 = Harness::with_store(copy, None).await;
    assert_eq!(h2.get("/apps/demo").await.1["name"], "demo");
    assert_eq!(
        h2.routes.load().app("demo").expect("published").web.len(),
        1
    );
    assert!(control::store::import(&MemoryStore::new(), &json!({ "kv": 3 })).is_err());
}
