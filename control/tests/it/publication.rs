//! Publication per change: a commit re-derives only the apps it touches, and
//! what it publishes equals a rebuild from every stored record.

use serde_json::json;

use control::publish::{logplex_config, routes_of};

use crate::support::Harness;

/// (name, id, web dynos, domains resolved, maintenance) of every app.
fn table_view(table: &router::RouteTable, domains: &[&str]) -> Vec<String> {
    let mut apps: Vec<String> = table
        .apps()
        .iter()
        .map(|a| {
            let dynos: Vec<String> = a
                .web
                .iter()
                .map(|d| format!("{}@{}:{:?}", d.name, d.address, d.state))
                .collect();
            format!(
                "{} {} {dynos:?} maintenance={}",
                a.name, a.id, a.settings.maintenance
            )
        })
        .collect();
    apps.sort();
    for d in domains {
        apps.push(format!(
            "{d} -> {:?}",
            table.lookup(d).map(|a| a.name.clone())
        ));
    }
    apps
}

#[tokio::test]
async fn incremental_publication_equals_a_full_rebuild() {
    let h = Harness::start().await;
    for name in ["alpha", "bravo", "charlie", "delta"] {
        h.app(name).await;
    }
    let writes = [
        (
            "PUT",
            "/apps/alpha/dynos/web.1",
            json!({ "address": "127.0.0.1:5001" }),
        ),
        (
            "PUT",
            "/apps/alpha/dynos/web.2",
            json!({ "address": "127.0.0.1:5002", "state": "starting" }),
        ),
        (
            "PUT",
            "/apps/bravo/dynos/web.1",
            json!({ "address": "127.0.0.1:5003" }),
        ),
        (
            "POST",
            "/apps/bravo/domains",
            json!({ "hostname": "www.bravo.example" }),
        ),
        (
            "POST",
            "/apps/charlie/domains",
            json!({ "hostname": "*.charlie.example" }),
        ),
        (
            "POST",
            "/apps/alpha/log-drains",
            json!({ "url": "syslog://logs.example.com:514" }),
        ),
        ("POST", "/apps/bravo/log-tokens", json!({ "name": "edge" })),
        ("PATCH", "/apps/charlie", json!({ "maintenance": true })),
        ("PATCH", "/apps/delta", json!({ "name": "echo" })),
        ("DELETE", "/apps/alpha/dynos/web.2", json!({})),
        ("PATCH", "/apps/bravo/config-vars", json!({ "FOO": "bar" })),
        ("DELETE", "/apps/charlie", json!({})),
        (
            "PUT",
            "/apps/echo/dynos/web.1",
            json!({ "address": "127.0.0.1:5004" }),
        ),
    ];
    for (method, path, body) in writes {
        let (status, answer) = h.call(method, path, Some(body)).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path} → {status} {answer}"
        );
    }
    let state = h.control.read();
    let domains = [
        "www.bravo.example",
        "x.charlie.example",
        "echo.localhost",
        "delta.localhost",
    ];
    let rebuilt = control::publish::table_builder(state.revision, "localhost", &routes_of(&state))
        .build()
        .expect("table");
    let live = h.routes.load();
    assert_eq!(live.revision(), state.revision);
    assert_eq!(table_view(&live, &domains), table_view(&rebuilt, &domains));
    assert_eq!(live.apps().len(), 3);
    let mut published = h.logs.config();
    let mut full = logplex_config(&state);
    published.revision = 0;
    full.revision = 0;
    assert_eq!(published, full);
}

#[tokio::test]
async fn a_commit_that_changes_no_channel_does_not_reconfigure_logplex() {
    let h = Harness::start().await;
    h.app("demo").await;
    let configured = h.logs.config();
    assert_eq!(configured.revision, h.control.read().revision);
    // Dynos, settings, domains and config vars change routes, not channels.
    for (method, path, body) in [
        (
            "PUT",
            "/apps/demo/dynos/web.1",
            json!({ "address": "127.0.0.1:5001" }),
        ),
        (
            "PATCH",
            "/apps/demo/router-settings",
            json!({ "connect_timeout_ms": 1000 }),
        ),
        (
            "POST",
            "/apps/demo/domains",
            json!({ "hostname": "www.demo.example" }),
        ),
        ("PATCH", "/apps/demo/config-vars", json!({ "FOO": "bar" })),
    ] {
        let (status, answer) = h.call(method, path, Some(body)).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path} → {status} {answer}"
        );
    }
    assert_eq!(h.logs.config(), configured, "logplex was reconfigured");
    assert_eq!(h.routes.load().revision(), h.control.read().revision);
    assert_eq!(h.routes.load().app("demo").expect("demo").web.len(), 1);
    // A drain does change the channel.
    let (status, _) = h
        .call(
            "POST",
            "/apps/demo/log-drains",
            Some(json!({ "url": "syslog://logs.example.com:514" })),
        )
        .await;
    assert_eq!(status, 201);
    let config = h.logs.config();
    assert_eq!(config.revision, h.control.read().revision);
    assert_eq!(config.channels[0].drains.len(), 1);
}
