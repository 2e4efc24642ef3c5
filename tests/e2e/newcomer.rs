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

/// Runs the real `curl` with `args`; returns its stdout.
pub(crate) fn curl(args: &[&str]) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The README's quick start without the heroku CLI: curl creates the app,
/// registers the dyno, reaches it, and reads the app's log stream through a
/// log session. Each listener is announced once.
#[test]
fn the_quick_start_works_with_curl_alone() {
    let dir = TempDir::new("quickstart");
    let mut sy = serve(&dir.0, None, None);
    let key = std::fs::read_to_string(dir.0.join("api-key")).expect("key file");
    let auth = format!("Authorization: Bearer {}", key.trim());
    let api_url = format!("http://{}", sy.addr("api"));
    let router = sy.addr("router-http");

    let created = curl(&[
        "-H",
        &auth,
        "-d",
        r#"{"name":"demo"}"#,
        &format!("{api_url}/apps"),
    ]);
    let created: serde_json::Value = serde_json::from_str(&created).expect("app JSON");
    assert_eq!(created["name"], "demo", "{created}");
    let dyno = Dyno::start("hello from curl");
    let body = format!(r#"{{"address":"{}"}}"#, dyno.addr);
    let registered = curl(&[
        "-X",
        "PUT",
        "-H",
        &auth,
        "-d",
        &body,
        &format!("{api_url}/apps/demo/dynos/web.1"),
    ]);
    assert!(registered.contains(r#""state":"up""#), "{registered}");
    let page = curl(&[&format!("http://demo.localhost:{}/", router.port())]);
    assert_eq!(page, "hello from curl");

    let session = curl(&[
        "-H",
        &auth,
        "-d",
        r#"{"lines":100}"#,
        &format!("{api_url}/apps/demo/log-sessions"),
    ]);
    let session: serde_json::Value = serde_json::from_str(&session).expect("session JSON");
    let url = session["logplex_url"].as_str().expect("logplex_url");
    eventually("the router line in the app's log", || {
        curl(&[url]).lines().any(|l| {
            l.contains("heroku[router]: at=info method=GET path=\"/\"")
                && l.contains("dyno=web.1")
                && l.contains("status=200")
        })
    });

    let out = sy.drain_stdout().to_vec();
    for role in [
        "router-http",
        "router-https",
        "api",
        "logplex-http",
        "admin",
    ] {
        let prefix = format!("listening role={role} ");
        let n = out.iter().filter(|l| l.starts_with(&prefix)).count();
        assert_eq!(n, 1, "{role} announced once: {out:?}");
    }
    assert!(sy.terminate());
}
