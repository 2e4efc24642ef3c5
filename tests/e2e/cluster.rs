//! The README's "Running several nodes" on one machine: etcd, two
//! `switchyard control` nodes and three `switchyard router` processes that
//! follow etcd directly. An app created with the real heroku CLI through
//! one control node, and a dyno registered through the other, answer on
//! every router; with etcd killed every router keeps serving, and a router
//! restarted while etcd is down serves its table from disk.

use std::net::SocketAddr;

use serde_json::json;

use crate::heroku_cli::heroku;
use crate::newcomer::curl;
use crate::support::{api, eventually, Dyno, Proc, TempDir, KEY};

use crate::etcd_server::Etcd;

/// A `switchyard control` node on `etcd` (prefix `/cluster`).
pub(crate) fn control_node(etcd: &Etcd, dir: &TempDir) -> Proc {
    let args: Vec<String> = [
        "control",
        "--store",
        &etcd.url("/cluster"),
        "--api",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--data-dir",
        &dir.0.display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    Proc::start(&args, &[("SWITCHYARD_API_KEY", KEY)], &["api", "admin"])
}

fn router(etcd: &Etcd, dir: &TempDir) -> Proc {
    Proc::start(
        &router_args(etcd, dir),
        &[],
        &["router-http", "router-https", "admin"],
    )
}

/// The flags of a `switchyard router` following `etcd` (prefix
/// `/cluster`), every listener on port 0.
pub(crate) fn router_args(etcd: &Etcd, dir: &TempDir) -> Vec<String> {
    [
        "router",
        "--store",
        &etcd.url("/cluster"),
        "--http",
        "127.0.0.1:0",
        "--https",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--data-dir",
        &dir.0.display().to_string(),
    ]
    .map(String::from)
    .to_vec()
}

/// `curl http://demo.localhost:PORT/` as a user types it (curl resolves
/// `*.localhost` to loopback itself).
fn demo(router: SocketAddr) -> String {
    curl(&[&format!("http://demo.localhost:{}/", router.port())])
}

fn readyz(admin: SocketAddr) -> String {
    curl(&[&format!("http://{admin}/readyz")])
}

#[test]
fn two_control_nodes_and_three_routers_on_etcd() {
    let etcd_dir = TempDir::new("etcd");
    let mut etcd = Etcd::start(&etcd_dir.0);
    let dirs: Vec<TempDir> = (0..5).map(|n| TempDir::new(&format!("node{n}"))).collect();
    let a = control_node(&etcd, &dirs[0]);
    let b = control_node(&etcd, &dirs[1]);
    let mut routers: Vec<Proc> = dirs[2..].iter().map(|d| router(&etcd, d)).collect();
    let dyno = Dyno::start("hello from web.1");

    let created = heroku(a.addr("api"), &["apps:create", "demo"]);
    assert!(created.contains("Creating demo... done"), "{created}");
    let (status, body) = api(
        b.addr("api"),
        KEY,
        "PUT",
        "/apps/demo/dynos/web.1",
        Some(json!({ "address": dyno.addr.to_string() })),
    )
    .expect("register the dyno through the other control node");
    assert_eq!(status, 201, "{body}");

    for r in &routers {
        let addr = r.addr("router-http");
        eventually("the router serves demo", || {
            demo(addr) == "hello from web.1"
        });
        assert!(readyz(r.addr("admin")).contains("source connected"));
    }

    // etcd dies: every router keeps serving and says where it stands.
    etcd.kill9();
    for r in &routers {
        let admin = r.addr("admin");
        eventually("the router notices etcd is gone", || {
            readyz(admin).contains("source unreachable")
        });
        assert_eq!(demo(r.addr("router-http")), "hello from web.1");
    }

    // A router restarted while etcd is down serves its table from disk.
    let mut restarted = routers.pop().expect("three routers");
    assert!(restarted.terminate());
    drop(restarted);
    let again = router(&etcd, &dirs[4]);
    let admin = again.addr("admin");
    eventually("the restarted router is ready", || {
        readyz(admin).starts_with("ready")
    });
    assert!(readyz(admin).contains("source unreachable"));
    assert_eq!(demo(again.addr("router-http")), "hello from web.1");
}
