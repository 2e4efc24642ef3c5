//! `switchyard router --control URL`: follows the control plane, keeps
//! serving its last table while the control plane is down, and picks up
//! changes after the control plane restarts.

use serde_json::json;

use crate::support::{api, eventually, serve_on, via_router, Dyno, Proc, TempDir, KEY};

#[test]
fn a_remote_router_follows_and_survives_a_control_restart() {
    let dir = TempDir::new("remote");
    // The control API's socket is the test's: the control plane is started
    // on it (socket activation) and restarted on it, so the address the
    // router follows never changes hands.
    let api_socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the API socket");
    let api_addr = api_socket.local_addr().expect("addr");
    let mut control = serve_on(&dir.0, &api_socket, KEY);
    assert_eq!(
        control.addr("api"),
        api_addr,
        "the handed-over socket is served"
    );
    let (status, _) = api(
        api_addr,
        KEY,
        "POST",
        "/apps",
        Some(json!({ "name": "demo" })),
    )
    .expect("create");
    assert_eq!(status, 201);
    let one = Dyno::start("one");
    let put = |addr: std::net::SocketAddr, name: &str, dyno: &Dyno| {
        api(
            addr,
            KEY,
            "PUT",
            &format!("/apps/demo/dynos/{name}"),
            Some(json!({ "address": dyno.addr.to_string() })),
        )
        .expect("register")
        .0
    };
    assert_eq!(put(api_addr, "web.1", &one), 201);

    let router_dir = TempDir::new("remote-router");
    let dir_arg = router_dir.0.display().to_string();
    let args: Vec<String> = [
        "router",
        "--data-dir",
        &dir_arg,
        "--control",
        &format!("http://{api_addr}"),
        "--api-key",
        KEY,
        "--http",
        "127.0.0.1:0",
        "--https",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut router = Proc::start(&args, &[], &["router-http"]);
    let edge = router.addr("router-http");
    eventually("the remote router reaches web.1", || {
        via_router(edge, "demo.localhost").is_some_and(|r| r.status == 200 && r.text() == "one")
    });

    // The control plane dies hard; the router keeps serving its table.
    control.kill9();
    for _ in 0..5 {
        let r = via_router(edge, "demo.localhost").expect("router up");
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "one"),
            "stale table still served"
        );
    }

    // It comes back on the same socket; a change made now reaches the router.
    let control = serve_on(&dir.0, &api_socket, KEY);
    let two = Dyno::start("two");
    assert_eq!(put(api_addr, "web.2", &two), 201);
    let (status, _) = api(api_addr, KEY, "DELETE", "/apps/demo/dynos/web.1", None).expect("remove");
    assert_eq!(status, 200);
    eventually("the remote router moved to web.2", || {
        via_router(edge, "demo.localhost").is_some_and(|r| r.status == 200 && r.text() == "two")
    });

    assert!(router.terminate(), "the router exits cleanly on SIGTERM");

    // Cold start without a control plane: the router serves its cached table.
    drop(control);
    let router = Proc::start(&args, &[], &["router-http"]);
    let edge = router.addr("router-http");
    eventually("a restarted router serves the cached table", || {
        via_router(edge, "demo.localhost").is_some_and(|r| r.status == 200 && r.text() == "two")
    });
}
