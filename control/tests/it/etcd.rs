//! The etcd store beyond the shared contract, against a real etcd: two
//! control nodes racing on one base, etcd's own compaction, `kill -9` of
//! etcd, and the `--store etcd://…` form.

use std::sync::{Arc, Barrier};

use control::{EtcdConfig, Store, StoreError};
use serde_json::json;

use crate::etcd_server::Etcd;
use crate::store::{etcd_store, put};
use crate::support::TempDir;

#[test]
fn two_nodes_committing_on_the_same_base_exactly_one_wins() {
    let dir = TempDir::new("etcd");
    let etcd = Etcd::start(&dir.0);
    let nodes: [Arc<dyn Store>; 2] = [
        Arc::new(etcd_store(&etcd, "/sy", 100)),
        Arc::new(etcd_store(&etcd, "/sy", 100)),
    ];
    for round in 0..20u64 {
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = nodes
            .iter()
            .enumerate()
            .map(|(n, store)| {
                let (store, barrier) = (store.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    store.commit(round, &[put("apps/demo", json!({ "node": n }))])
                })
            })
            .collect();
        let results: Vec<_> = racers
            .into_iter()
            .map(|t| t.join().expect("racer"))
            .collect();
        let won: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
        assert_eq!(won.len(), 1, "round {round}: {results:?}");
        assert!(matches!(won[0], Ok(r) if *r == round + 1));
        assert!(
            results.iter().any(|r| matches!(
                r,
                Err(StoreError::Conflict { expected, actual })
                    if *expected == round && *actual == round + 1
            )),
            "round {round}: the loser sees the winner's revision: {results:?}"
        );
    }
    let log = nodes[1].changes_since(0, 100).expect("log");
    assert_eq!(log.len(), 20, "one batch per round, no lost or extra one");
    assert_eq!(
        nodes[0].load().expect("load"),
        nodes[1].load().expect("load")
    );
}

#[test]
fn etcd_compaction_does_not_shorten_the_switchyard_log() {
    let dir = TempDir::new("etcd");
    let etcd = Etcd::start(&dir.0);
    let store = etcd_store(&etcd, "/sy", 100);
    for i in 0..5u64 {
        store.commit(i, &[put("k", json!(i))]).expect("commit");
    }
    etcd.compact_all();
    assert_eq!(
        store
            .changes_since(0, 10)
            .expect("the log is live keys, not etcd history")
            .iter()
            .map(|b| b.revision)
            .collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(store.commit(5, &[put("k", json!(5))]).expect("commit"), 6);
    assert_eq!(store.load().expect("load").kv["k"], json!(5));
}

#[test]
fn committed_changes_survive_kill_9_of_etcd() {
    let dir = TempDir::new("etcd");
    let mut etcd = Etcd::start(&dir.0);
    let before = etcd_store(&etcd, "/sy", 100);
    for i in 0..3u64 {
        before
            .commit(i, &[put(&format!("k{i}"), json!(i))])
            .expect("commit");
    }
    etcd.kill9_and_restart();
    assert!(
        matches!(
            before.commit(3, &[put("lost", json!(0))]),
            Err(StoreError::Backend(_))
        ),
        "a store whose etcd is gone answers an error"
    );
    let after = etcd_store(&etcd, "/sy", 100);
    let snap = after.load().expect("load");
    assert_eq!(snap.revision, 3);
    assert_eq!(snap.kv.len(), 3);
    assert_eq!(snap.kv["k2"], json!(2));
    assert_eq!(after.changes_since(0, 10).expect("log").len(), 3);
    assert_eq!(after.commit(3, &[put("k3", json!(3))]).expect("commit"), 4);
}

#[test]
fn the_store_url_names_members_and_a_prefix() {
    let one = EtcdConfig::parse_url("etcd://127.0.0.1:2379").expect("one member");
    assert_eq!(one.endpoints, ["127.0.0.1:2379"]);
    assert_eq!(one.prefix, "/switchyard");
    let three = EtcdConfig::parse_url("etcd://a:1,b:2,c:3/edge/prod/").expect("three");
    assert_eq!(three.endpoints, ["a:1", "b:2", "c:3"]);
    assert_eq!(three.prefix, "/edge/prod");
    for bad in [
        "http://a:1",
        "etcd://",
        "etcd://a",
        "etcd://a:x",
        "etcd://a:0",
        "etcd://a:1,/p",
        "etcd://:1",
    ] {
        let err = EtcdConfig::parse_url(bad).expect_err(bad);
        assert!(err.contains("etcd://HOST:PORT"), "{bad}: {err}");
    }
}
