//! The README's first five minutes: serve, create an app, register a dyno
//! with one request, and reach it through the router on `<app>.localhost`.
//! Also: the API key's first start, and a clean SIGTERM.

use serde_json::json;

use crate::support::{api, eventually, serve, via_router, Dyno, TempDir};

#[test]
fn a_registered_dyno_is_reachable_on_app_localhost() {
    let dir = TempDir::new("newcomer");
    let mut sy = serve(&dir.0, None, None);
    // First start: a key is generated, kept, and printed once with its export line.
    let key = std::fs::read_to_string(dir.0.join("api-key"))
        .expect("key file")
        .trim()
        .to_string();
    eventually("the export line", || {
        sy.drain_stdout()
            .iter()
            .any(|l| l.contains(&format!("HEROKU_API_KEY={key}")))
    });
    let api_addr = sy.addr("api");
    let router = sy.addr("router-http");

    let (status, body) = api(
        api_addr,
        &key,
        "POST",
        "/apps",
        Some(json!({ "name": "demo" })),
    )
    .expect("create");
    assert_eq!(status, 201, "{body}");
    let dyno = Dyno::start("hello from web.1");
    let (status, body) = api(
        api_addr,
        &key,
        "PUT",
        "/apps/demo/dynos/web.1",
        Some(json!({ "address": dyno.addr.to_string(), "state": "up" })),
    )
    .expect("register");
    assert_eq!(status, 201, "{body}");

    eventually("demo.localhost reaches web.1", || {
        via_router(router, "demo.localhost")
            .is_some_and(|r| r.status == 200 && r.text() == "hello from web.1")
    });
    let unknown = via_router(router, "nope.localhost").expect("router answers");
    assert_eq!(unknown.status, 404, "an unknown host is a 404");

    assert!(sy.terminate(), "SIGTERM exits cleanly");

    // Second start: the same key, not printed again; the app is still there.
    let mut sy = serve(&dir.0, None, None);
    let (status, _) = api(sy.addr("api"), &key, "GET", "/apps/demo", None).expect("info");
    assert_eq!(status, 200);
    assert!(
        !sy.drain_stdout()
            .iter()
            .any(|l| l.contains("HEROKU_API_KEY")),
        "printed once only"
    );
    assert!(sy.terminate());
}
