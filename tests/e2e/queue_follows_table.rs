//! Requests queued behind a busy dyno follow a deploy: with
//! `max_dyno_concurrency=1`, web.1 hung on one request and two more queued,
//! web.1 is deleted and an idle web.2 added; the queued two are served by
//! web.2, not left to time out behind web.1 (H12).

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::json;

use crate::support::{api, eventually, http, serve, Dyno, TempDir, KEY};

/// A dyno that reads requests and never answers; counts request heads.
struct HungDyno {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
}

impl HungDyno {
    fn start() -> HungDyno {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind dyno");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let counted = counted.clone();
                std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            counted.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        HungDyno { addr, requests }
    }
}

/// The value of `router_app_queue_depth` for `app` on the admin listener.
fn queue_depth(admin: SocketAddr, app: &str) -> Option<f64> {
    let metrics = http(admin, "GET", "localhost", "/metrics", &[], b"").ok()?;
    let prefix = format!("router_app_queue_depth{{app=\"{app}\"}} ");
    metrics
        .text()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
}

#[test]
fn queued_requests_are_served_by_the_dyno_that_replaced_a_hung_one() {
    let dir = TempDir::new("queue-follows");
    let sy = serve(&dir.0, None, Some(KEY));
    let api_addr = sy.addr("api");
    let edge = sy.addr("router-http");
    let admin = sy.addr("admin");
    let call = |method: &str, path: &str, body: Option<serde_json::Value>| {
        let (status, body) = api(api_addr, KEY, method, path, body).expect("api");
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {body}"
        );
    };
    call("POST", "/apps", Some(json!({ "name": "deploy" })));
    // Long enough that H12 cannot pass for success: a queued request that
    // waited for web.1 would get it.
    call(
        "PATCH",
        "/apps/deploy/router-settings",
        Some(json!({ "max_dyno_concurrency": 1, "request_timeout_ms": 20_000 })),
    );
    let web1 = HungDyno::start();
    call(
        "PUT",
        "/apps/deploy/dynos/web.1",
        Some(json!({ "address": web1.addr.to_string(), "state": "up" })),
    );

    let send = |path: &'static str| {
        std::thread::spawn(move || http(edge, "GET", "deploy.localhost", path, &[], b""))
    };
    // web.1 takes /1 and never answers; /2 and /3 queue behind it.
    let _hung = send("/1");
    eventually("web.1 holds /1", || {
        web1.requests.load(Ordering::SeqCst) == 1
    });
    let queued = [send("/2"), send("/3")];
    eventually("two requests queued", || {
        queue_depth(admin, "deploy") == Some(2.0)
    });

    // A deploy: web.1 is deleted, an idle web.2 is added.
    call("DELETE", "/apps/deploy/dynos/web.1", None);
    let web2 = Dyno::start("web.2");
    call(
        "PUT",
        "/apps/deploy/dynos/web.2",
        Some(json!({ "address": web2.addr.to_string(), "state": "up" })),
    );

    for q in queued {
        let r = q.join().expect("join").expect("response");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "web.2");
    }
    assert_eq!(
        web1.requests.load(Ordering::SeqCst),
        1,
        "the queued requests never went to web.1"
    );
}
