//! Publication per change: a commit re-derives only the apps it touches, and
//! what it publishes equals a rebuild from every stored record.

use serde_json::json;

use control::publish::{logplex_config, routes_of};

use crate::support::Harness;

fn self_signed(names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    router::tls::self_signed(&names).expect("certificate")
}

#[tokio::test]
async fn a_commit_republishes_only_the_apps_it_touches() {
    let h = Harness::start().await;
    h.app("alpha").await;
    h.app("bravo").await;
    let before = h.routes.load();
    let (status, answer) = h
        .call(
            "PUT",
            "/apps/alpha/dynos/web.1",
            Some(json!({ "address": "127.0.0.1:5001" })),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    let after = h.routes.load();
    assert_eq!(after.revision(), h.control.read().revision);
    assert_eq!(after.app("alpha").expect("alpha").web.len(), 1);
    // An update, not a rebuild: the untouched app is the same snapshot, and
    // the touched one kept its live state.
    let bravo = |t: &router::RouteTable| t.app("bravo").expect("bravo").clone();
    assert!(std::sync::Arc::ptr_eq(&bravo(&before), &bravo(&after)));
    let alpha = |t: &router::RouteTable| t.app("alpha").expect("alpha").clone();
    assert!(!std::sync::Arc::ptr_eq(&alpha(&before), &alpha(&after)));
    assert!(std::sync::Arc::ptr_eq(
        &alpha(&before).live,
        &alpha(&after).live
    ));
    // A commit that leaves every route as it was only stamps the revision.
    let (status, answer) = h
        .call(
            "POST",
            "/apps/alpha/log-drains",
            Some(json!({ "url": "syslog://logs.example.com:514" })),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    let drained = h.routes.load();
    assert_eq!(drained.revision(), h.control.read().revision);
    assert!(drained.revision() > after.revision());
    assert!(std::sync::Arc::ptr_eq(&alpha(&after), &alpha(&drained)));
}

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
    // Certificates: added, replaced, and gone with their app; a domain that
    // moves from one app to another.
    let (bravo_chain, bravo_key) = self_signed(&["cert.bravo.example", "*.bravo.example"]);
    let (echo_chain, echo_key) = self_signed(&["cert.echo.example"]);
    let (echo_chain2, echo_key2) = self_signed(&["cert2.echo.example"]);
    let (doomed_chain, doomed_key) = self_signed(&["cert.foxtrot.example"]);
    h.app("foxtrot").await;
    let cert = |chain: &str, key: &str| json!({ "certificate_chain": chain, "private_key": key });
    let more = [
        (
            "POST",
            "/apps/bravo/sni-endpoints",
            cert(&bravo_chain, &bravo_key),
        ),
        (
            "POST",
            "/apps/echo/sni-endpoints",
            cert(&echo_chain, &echo_key),
        ),
        (
            "POST",
            "/apps/foxtrot/sni-endpoints",
            cert(&doomed_chain, &doomed_key),
        ),
        ("DELETE", "/apps/bravo/domains/www.bravo.example", json!({})),
        (
            "POST",
            "/apps/echo/domains",
            json!({ "hostname": "www.bravo.example" }),
        ),
        ("DELETE", "/apps/foxtrot", json!({})),
    ];
    let mut echo_cert = String::new();
    for (method, path, body) in more {
        let (status, answer) = h.call(method, path, Some(body)).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path} → {status} {answer}"
        );
        if path == "/apps/echo/sni-endpoints" {
            echo_cert = answer["id"].as_str().unwrap_or_default().to_string();
        }
    }
    let (status, answer) = h
        .call(
            "PATCH",
            &format!("/apps/echo/sni-endpoints/{echo_cert}"),
            Some(cert(&echo_chain2, &echo_key2)),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let state = h.control.read();
    let domains = [
        "www.bravo.example",
        "x.charlie.example",
        "echo.localhost",
        "delta.localhost",
        "foxtrot.localhost",
    ];
    let rebuilt = control::publish::table_builder(state.revision, "localhost", &routes_of(&state))
        .build()
        .expect("table");
    let live = h.routes.load();
    assert_eq!(live.revision(), state.revision);
    assert_eq!(table_view(&live, &domains), table_view(&rebuilt, &domains));
    assert_eq!(live.apps().len(), 3);
    assert_eq!(
        live.lookup("www.bravo.example").map(|a| &*a.name),
        Some("echo")
    );
    let sni = [
        "cert.bravo.example",
        "x.bravo.example",
        "cert.echo.example",
        "cert2.echo.example",
        "cert.foxtrot.example",
    ];
    let served = |t: &router::RouteTable| -> Vec<Option<Vec<u8>>> {
        sni.iter()
            .map(|n| t.certs().lookup(n).map(|k| k.cert[0].to_vec()))
            .collect()
    };
    assert_eq!(served(&live), served(&rebuilt));
    assert_eq!(
        served(&live)
            .iter()
            .map(Option::is_some)
            .collect::<Vec<_>>(),
        [true, true, false, true, false]
    );
    assert_eq!(live.certs().len(), rebuilt.certs().len());
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

#[tokio::test]
async fn an_update_the_router_refuses_is_published_whole() {
    let h = Harness::start().await;
    h.app("alpha").await;
    // Someone else published a newer table: the router refuses the next
    // commit's update as stale, and the commit is published whole instead.
    h.routes
        .publish(router::RouteTable::builder().revision(1_000))
        .expect("publish");
    assert!(h.routes.load().app("alpha").is_none());
    h.app("bravo").await;
    let table = h.routes.load();
    assert_eq!(table.revision(), h.control.read().revision);
    assert!(
        table.app("alpha").is_some(),
        "the whole table, not the change"
    );
    assert!(table.app("bravo").is_some());
    // And the commit after it is an update again.
    let bravo = table.app("bravo").expect("bravo").clone();
    h.app("charlie").await;
    let table = h.routes.load();
    assert!(table.app("charlie").is_some());
    assert!(std::sync::Arc::ptr_eq(
        table.app("bravo").expect("bravo"),
        &bravo
    ));
}
