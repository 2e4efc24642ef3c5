//! `kill -9` durability: every change acknowledged with a 2xx before the
//! kill is there after a restart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::support::{api, eventually, serve, Proc, TempDir, KEY};

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = TempDir::new("durability");
    writes_survive_kill_9(|| serve(&dir.0, None, Some(KEY)));
}

/// Two writers register dynos through `start()`'s API until it is killed
/// with -9; a second `start()` lists every acknowledged one. The store
/// backend is whatever `start` gives the process.
pub(crate) fn writes_survive_kill_9(start: impl Fn() -> Proc) {
    let mut sy = start();
    let addr = sy.addr("api");
    let (status, _) = api(
        addr,
        KEY,
        "POST",
        "/apps",
        Some(json!({ "name": "durable" })),
    )
    .expect("create");
    assert_eq!(status, 201);

    let acked: Arc<Mutex<Vec<u32>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2u32)
        .map(|w| {
            let acked = acked.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let n = w * 100_000 + i;
                    let body = json!({ "address": format!("127.0.0.1:{}", 1000 + n % 60_000) });
                    match api(
                        addr,
                        KEY,
                        "PUT",
                        &format!("/apps/durable/dynos/web.{n}"),
                        Some(body),
                    ) {
                        Ok((201, _)) => acked.lock().expect("lock").push(n),
                        Ok((status, body)) => panic!("unexpected {status} {body}"),
                        Err(_) => return, // the process is gone
                    }
                    i += 1;
                }
            })
        })
        .collect();
    eventually("some writes acknowledged", || {
        acked.lock().expect("lock").len() >= 40
    });
    sy.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer");
    }
    let acked = acked.lock().expect("lock").clone();

    let sy = start();
    let (status, dynos) =
        api(sy.addr("api"), KEY, "GET", "/apps/durable/dynos", None).expect("list");
    assert_eq!(status, 200);
    let names: std::collections::HashSet<String> = dynos
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|d| d["name"].as_str().map(str::to_string))
        .collect();
    let missing: Vec<&u32> = acked
        .iter()
        .filter(|n| !names.contains(&format!("web.{n}")))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but lost after kill -9: {missing:?}"
    );
    // The route table was rebuilt from the store at start.
    let (_, routes) = api(sy.addr("api"), KEY, "GET", "/routes", None).expect("routes");
    let published = routes["apps"][0]["dynos"].as_array().map_or(0, Vec::len);
    assert!(published >= acked.len(), "{published} < {}", acked.len());
}
