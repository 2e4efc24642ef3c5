//! The watch stream: every revision, in order, under concurrent writers;
//! resync when the log was trimmed; heartbeats when quiet.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use control::watch::WatchEvent;
use control::{AppRoute, MemoryStore};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

use crate::support::{patience, Harness, KEY};

/// A watch stream reader.
pub struct Watch {
    body: hyper::body::Incoming,
    buf: BytesMut,
}

impl Watch {
    pub async fn open(base: &str, query: &str) -> Watch {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let req = hyper::Request::get(format!("{base}/routes/watch?{query}"))
            .header("authorization", format!("Bearer {KEY}"))
            .body(Empty::new())
            .expect("request");
        let res = client.request(req).await.expect("watch response");
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "application/x-ndjson");
        Watch {
            body: res.into_body(),
            buf: BytesMut::new(),
        }
    }

    /// The next event, or `None` when the stream ended.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line = self.buf.split_to(pos + 1);
                return Some(serde_json::from_slice(&line[..pos]).expect("event JSON"));
            }
            let frame = tokio::time::timeout(patience(), self.body.frame())
                .await
                .expect("an event in time")?
                .expect("body frame");
            if let Ok(data) = frame.into_data() {
                self.buf.extend_from_slice(&data);
            }
        }
    }
}

#[tokio::test]
async fn concurrent_writers_are_seen_in_order_without_gaps() {
    let h = Arc::new(Harness::start().await);
    h.app("one").await;
    h.app("two").await;
    let start = h.control.read().revision;
    let mut watch = Watch::open(&h.url(), &format!("since={start}")).await;

    const WRITERS: u16 = 4;
    const EACH: u16 = 15;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            let app = if w % 2 == 0 { "one" } else { "two" };
            for i in 0..EACH {
                let body = json!({ "address": format!("127.0.0.1:{}", 10_000 + w * 100 + i) });
                let (status, b) = h
                    .call(
                        "PUT",
                        &format!("/apps/{app}/dynos/web.{}", w * 100 + i),
                        Some(body),
                    )
                    .await;
                assert_eq!(status, 201, "{b}");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let end = h.control.read().revision;
    assert_eq!(end - start, u64::from(WRITERS * EACH));

    // Rebuild the table from the stream alone; it must equal GET /routes.
    let (_, snapshot) = h.get("/routes").await;
    let mut mirror: BTreeMap<String, AppRoute> =
        serde_json::from_value::<Vec<AppRoute>>(snapshot["apps"].clone())
            .expect("apps")
            .into_iter()
            .map(|a| (a.id.clone(), a))
            .collect();
    // Start from the apps as they were at `start`: dynos empty.
    for a in mirror.values_mut() {
        a.dynos.clear();
    }
    let mut expected = start + 1;
    while expected <= end {
        match watch.next().await.expect("stream open") {
            WatchEvent::Change { revision, changes } => {
                assert_eq!(revision, expected, "no gap, no reordering");
                for c in changes {
                    let id = c.key.trim_start_matches("routes/").to_string();
                    let route: AppRoute =
                        serde_json::from_value(c.value.expect("upsert")).expect("route");
                    mirror.insert(id, route);
                }
                expected += 1;
            }
            WatchEvent::Heartbeat { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let dynos: usize = mirror.values().map(|a| a.dynos.len()).sum();
    assert_eq!(dynos, usize::from(WRITERS * EACH));
    let fresh: Vec<AppRoute> =
        serde_json::from_value(h.get("/routes").await.1["apps"].clone()).expect("apps");
    assert_eq!(fresh, mirror.into_values().collect::<Vec<_>>());
}

#[tokio::test]
async fn a_too_old_revision_gets_a_resync() {
    let h = Harness::with_store(Arc::new(MemoryStore::with_retention(3)), None).await;
    h.app("demo").await;
    for i in 1..=5 {
        h.call(
            "PUT",
            &format!("/apps/demo/dynos/web.{i}"),
            Some(json!({ "address": format!("127.0.0.1:{}", 6000 + i) })),
        )
        .await;
    }
    let current = h.control.read().revision;
    let mut watch = Watch::open(&h.url(), "since=0").await;
    match watch.next().await {
        Some(WatchEvent::Resync { revision, oldest }) => {
            assert_eq!(revision, current);
            assert!(oldest > 1);
        }
        other => panic!("expected resync, got {other:?}"),
    }
    assert!(
        watch.next().await.is_none(),
        "the stream ends after a resync"
    );
    // A revision ahead of the store is also a resync.
    let mut watch = Watch::open(&h.url(), &format!("since={}", current + 100)).await;
    assert!(matches!(
        watch.next().await,
        Some(WatchEvent::Resync { .. })
    ));
}

#[tokio::test]
async fn a_quiet_stream_sends_heartbeats_and_deletions_arrive_as_null() {
    let h = Harness::start().await;
    h.app("demo").await;
    let rev = h.control.read().revision;
    let mut watch = Watch::open(&h.url(), &format!("since={rev}&heartbeat_ms=100")).await;
    assert_eq!(
        watch.next().await,
        Some(WatchEvent::Heartbeat { revision: rev })
    );
    h.call("DELETE", "/apps/demo", None).await;
    loop {
        match watch.next().await.expect("open") {
            WatchEvent::Heartbeat { .. } => continue,
            WatchEvent::Change { revision, changes } => {
                assert_eq!(revision, rev + 1);
                assert_eq!(changes.len(), 1);
                assert!(changes[0].key.starts_with("routes/"));
                assert_eq!(changes[0].value, None);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let (status, err) = crate::support::request(
        &h.url(),
        "GET",
        "/routes/watch",
        None,
        Some(&format!("Bearer {KEY}")),
    )
    .await;
    assert_eq!(status, 422, "{err}");
    assert!(err["message"]
        .as_str()
        .unwrap_or_default()
        .contains("since"));
}
