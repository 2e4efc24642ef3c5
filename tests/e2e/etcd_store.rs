//! `--store etcd://…` with a real etcd: the state lives in etcd, not in the
//! process. `switchyard serve` killed with `kill -9` and started again with
//! an empty data directory still has the app, and what a `switchyard
//! control` node writes is routed by a `serve` already running on the same
//! etcd; a `switchyard control` node on etcd keeps every acknowledged write
//! across `kill -9` and serves the heroku CLI.

use crate::support::{
    api, create_app, eventually, serve_args, via_router, Dyno, Proc, TempDir, KEY, SERVE_ROLES,
};

pub(crate) use crate::etcd_server::Etcd;

/// `switchyard serve` on port 0 everywhere, its state in etcd.
fn serve_on(etcd: &Etcd, data_dir: &std::path::Path) -> Proc {
    let mut args = serve_args(data_dir, None);
    args.extend(["--store".into(), etcd.url("/e2e")]);
    Proc::start(&args, &[("SWITCHYARD_API_KEY", KEY)], SERVE_ROLES)
}

/// The `--router-port` [`control_on`] gives: the port in each app's
/// `web_url` (no router listens on it in these tests).
pub(crate) const CONTROL_ROUTER_PORT: u16 = 18080;

/// `switchyard control` on port 0, its state in etcd under `prefix`.
pub(crate) fn control_on(etcd: &Etcd, prefix: &str, data_dir: &std::path::Path) -> Proc {
    let mut args: Vec<String> = ["control", "--api", "127.0.0.1:0", "--admin", "127.0.0.1:0"]
        .into_iter()
        .map(String::from)
        .collect();
    args.extend([
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--router-port".into(),
        CONTROL_ROUTER_PORT.to_string(),
        "--store".into(),
        etcd.url(prefix),
    ]);
    Proc::start(&args, &[("SWITCHYARD_API_KEY", KEY)], &["api", "admin"])
}

#[test]
fn serve_on_etcd_keeps_its_apps_across_kill_9() {
    let etcd_dir = TempDir::new("etcd");
    let etcd = Etcd::start(&etcd_dir.0);
    let dyno = Dyno::start("on etcd");
    let first_dir = TempDir::new("etcd-serve");
    let mut sy = serve_on(&etcd, &first_dir.0);
    create_app(sy.addr("api"), KEY, "demo", Some(dyno.addr));
    let resp = via_router(sy.addr("router-http"), "demo.localhost").expect("routed");
    assert_eq!((resp.status, resp.text()), (200, "on etcd".to_string()));
    sy.kill9();

    // Nothing of the first process's data directory is reused.
    let second_dir = TempDir::new("etcd-serve");
    let sy = serve_on(&etcd, &second_dir.0);
    let (status, body) = api(sy.addr("api"), KEY, "GET", "/apps/demo", None).expect("get app");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "demo");
    let resp = via_router(sy.addr("router-http"), "demo.localhost").expect("routed");
    assert_eq!((resp.status, resp.text()), (200, "on etcd".to_string()));
    let (status, body) = api(
        sy.addr("api"),
        KEY,
        "POST",
        "/apps",
        Some(serde_json::json!({ "name": "demo" })),
    )
    .expect("create again");
    assert_eq!(status, 422, "the name is still taken: {body}");
}

#[test]
fn acknowledged_writes_are_in_etcd_after_kill_9_mid_write() {
    let etcd_dir = TempDir::new("etcd");
    let etcd = Etcd::start(&etcd_dir.0);
    let dir = TempDir::new("etcd-serve");
    crate::durability::writes_survive_kill_9(|| serve_on(&etcd, &dir.0));
}

#[test]
fn acknowledged_writes_are_in_etcd_after_kill_9_of_a_control_node() {
    let etcd_dir = TempDir::new("etcd");
    let etcd = Etcd::start(&etcd_dir.0);
    let dir = TempDir::new("etcd-control");
    crate::durability::writes_survive_kill_9(|| control_on(&etcd, "/e2e", &dir.0));
}

#[test]
fn the_heroku_cli_drives_a_control_node_on_etcd() {
    let etcd_dir = TempDir::new("etcd");
    let etcd = Etcd::start(&etcd_dir.0);
    let dir = TempDir::new("etcd-cli-control");
    let control = control_on(&etcd, "/e2e", &dir.0);
    crate::heroku_cli::heroku_cli_control_session(&control, CONTROL_ROUTER_PORT);
}

#[test]
fn the_heroku_cli_drives_serve_on_etcd() {
    let etcd_dir = TempDir::new("etcd");
    let etcd = Etcd::start(&etcd_dir.0);
    let dir = TempDir::new("etcd-cli");
    crate::heroku_cli::heroku_cli_session(&serve_on(&etcd, &dir.0));
}

#[test]
fn a_control_node_on_etcd_writes_what_serve_routes() {
    let etcd_dir = TempDir::new("etcd");
    let etcd = Etcd::start(&etcd_dir.0);
    let dyno = Dyno::start("from the control node");
    let serve_dir = TempDir::new("etcd-serve");
    let sy = serve_on(&etcd, &serve_dir.0);
    let control_dir = TempDir::new("etcd-control");
    let control = control_on(&etcd, "/e2e", &control_dir.0);
    create_app(control.addr("api"), KEY, "demo", Some(dyno.addr));

    // serve was running all along: it follows the store and routes the app.
    eventually("serve routes the app the control node created", || {
        via_router(sy.addr("router-http"), "demo.localhost")
            .is_some_and(|r| r.status == 200 && r.text() == "from the control node")
    });
    let (status, body) = api(sy.addr("api"), KEY, "GET", "/apps/demo", None).expect("get app");
    assert_eq!(status, 200, "{body}");
}
