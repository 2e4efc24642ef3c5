//! Drains, log sessions and log-input tokens, and the logplex config.

use std::sync::Arc;

use control::{MemoryStore, Store};
use serde_json::json;

use crate::support::{assert_error, Harness};

#[tokio::test]
async fn every_app_has_an_app_token_and_a_channel() {
    let h = Harness::start().await;
    let app = h.app("demo").await;
    let config = h.logs.config();
    let channel = config
        .channels
        .iter()
        .find(|c| c.app_name == "demo")
        .expect("channel");
    assert_eq!(channel.app_id, app["id"].as_str().unwrap_or_default());
    let mut names: Vec<&str> = channel.tokens.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["app", "heroku"]);
    assert!(channel.tokens.iter().all(|t| t.token.starts_with("t.")));
    assert_eq!(config.revision, h.control.read().revision);
}

#[tokio::test]
async fn drains_are_validated_and_published() {
    let h = Harness::start().await;
    h.app("demo").await;
    let mut ids = Vec::new();
    for url in [
        "syslog://logs.example.com:514",
        "syslog+tls://logs.example.com:6514",
        "https://u:p@logs.example.com/in",
    ] {
        let (status, d) = h
            .call("POST", "/apps/demo/log-drains", Some(json!({ "url": url })))
            .await;
        assert_eq!(status, 201, "{d}");
        assert!(
            d["token"].as_str().unwrap_or_default().starts_with("d."),
            "{d}"
        );
        ids.push(d["id"].as_str().unwrap_or_default().to_string());
    }
    let config = h.logs.config();
    assert_eq!(config.channels[0].drains.len(), 3);
    let (status, err) = h
        .call(
            "POST",
            "/apps/demo/log-drains",
            Some(json!({ "url": "syslog://logs.example.com:514" })),
        )
        .await;
    assert_error(status, &err, 422, "invalid_params", "url");
    for bad in [
        "http://logs.example.com/",
        "syslog://logs.example.com",
        "ftp://x:1",
        "not a url",
    ] {
        let (status, err) = h
            .call("POST", "/apps/demo/log-drains", Some(json!({ "url": bad })))
            .await;
        assert_error(status, &err, 422, "invalid_params", "url");
    }
    let (status, list) = h.get("/apps/demo/log-drains").await;
    assert_eq!((status, list.as_array().map(Vec::len)), (200, Some(3)));
    // Removal by URL, as `heroku drains:remove URL` does, or by id.
    let path = "/apps/demo/log-drains/syslog:%2F%2Flogs.example.com:514";
    assert_eq!(h.call("DELETE", path, None).await.0, 200);
    assert_eq!(
        h.call("DELETE", &format!("/apps/demo/log-drains/{}", ids[1]), None)
            .await
            .0,
        200
    );
    assert_eq!(h.logs.config().channels[0].drains.len(), 1);
}

#[tokio::test]
async fn drain_urls_are_bounded_in_host_port_and_length() {
    let h = Harness::start().await;
    h.app("demo").await;
    let long_host = format!("{}.example.com", vec!["a".repeat(60); 4].join("."));
    assert!(long_host.len() > 253);
    let huge = format!("https://logs.example.com/{}", "x".repeat(100_000));
    let cases = [
        (format!("syslog://{long_host}:514"), "253"),
        ("syslog://logs.example.com:0".to_string(), "1-65535"),
        ("syslog://logs.example.com:65536".to_string(), "1-65535"),
        ("syslog+tls://logs.example.com:99999".to_string(), "1-65535"),
        ("https://logs.example.com:0/in".to_string(), "1-65535"),
        (huge, "longer than 2048 bytes"),
    ];
    for (url, needle) in cases {
        let (status, err) = h
            .call("POST", "/apps/demo/log-drains", Some(json!({ "url": url })))
            .await;
        assert_error(status, &err, 422, "invalid_params", needle);
        // The answer never echoes a 100 KB URL back.
        assert!(
            err.to_string().len() < 1024,
            "{} bytes",
            err.to_string().len()
        );
    }
    assert!(h.logs.config().channels[0].drains.is_empty());
    // The limits themselves are accepted.
    let host = format!("{}.example.com", vec!["a".repeat(60); 3].join("."));
    for url in [
        format!("syslog://{host}:65535"),
        format!("https://logs.example.com/{}", "x".repeat(1900)),
    ] {
        let (status, d) = h
            .call("POST", "/apps/demo/log-drains", Some(json!({ "url": url })))
            .await;
        assert_eq!(status, 201, "{d}");
    }
    assert_eq!(h.logs.config().channels[0].drains.len(), 2);
}

#[tokio::test]
async fn named_log_tokens() {
    let h = Harness::start().await;
    h.app("demo").await;
    let (status, t) = h
        .call(
            "POST",
            "/apps/demo/log-tokens",
            Some(json!({ "name": "myservice" })),
        )
        .await;
    assert_eq!(status, 201, "{t}");
    assert_eq!(t["name"], "myservice");
    let token = t["token"].as_str().unwrap_or_default().to_string();
    assert!(
        token.starts_with("t.") && uuid::Uuid::parse_str(&token[2..]).is_ok(),
        "{token}"
    );
    let tokens = &h.logs.config().channels[0].tokens;
    assert!(tokens
        .iter()
        .any(|t| t.token == token && t.name == "myservice"));
    let (status, err) = h
        .call(
            "POST",
            "/apps/demo/log-tokens",
            Some(json!({ "name": "myservice" })),
        )
        .await;
    assert_error(status, &err, 409, "conflict", "myservice");
    let (status, err) = h
        .call(
            "POST",
            "/apps/demo/log-tokens",
            Some(json!({ "name": "no spaces" })),
        )
        .await;
    assert_error(status, &err, 422, "invalid_params", "name");
    let (_, list) = h.get("/apps/demo/log-tokens").await;
    // `app`, `heroku` and `myservice`.
    assert_eq!(list.as_array().map(Vec::len), Some(3));
    assert_eq!(
        h.call("DELETE", &format!("/apps/demo/log-tokens/{token}"), None)
            .await
            .0,
        200
    );
    assert_eq!(h.logs.config().channels[0].tokens.len(), 2);
}

/// The `heroku` token of `app` as the route table carries it to routers.
fn routed_token(h: &Harness, app_id: &str) -> Option<String> {
    let table = h.routes.load();
    let app = table.app_by_id(app_id)?;
    app.log_token.as_ref().map(|t| t.expose().to_string())
}

#[tokio::test]
async fn a_new_app_has_a_heroku_token_and_routers_get_it() {
    let h = Harness::start().await;
    let app = h.app("demo").await;
    let id = app["id"].as_str().unwrap_or_default().to_string();
    let (_, list) = h.get("/apps/demo/log-tokens").await;
    let names: Vec<&str> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names.len(), 2, "{list}");
    assert!(
        names.contains(&"app") && names.contains(&"heroku"),
        "{list}"
    );
    let (_, heroku) = h.get("/apps/demo/log-tokens/heroku").await;
    let token = heroku["token"].as_str().unwrap_or_default().to_string();
    assert!(token.starts_with("t."), "{heroku}");
    assert_eq!(routed_token(&h, &id), Some(token.clone()));
    // Remote routers read it from the route entries too.
    let (_, routes) = h.get("/routes").await;
    assert_eq!(routes["apps"][0]["log_token"], token.as_str(), "{routes}");
    // Its Debug form never shows it.
    let table = h.routes.load();
    let shown = format!("{:?}", table.app_by_id(&id).map(|a| &a.log_token));
    assert!(!shown.contains(&token), "{shown}");

    // Removed: routers no longer have one for the app.
    let (status, _) = h.call("DELETE", "/apps/demo/log-tokens/heroku", None).await;
    assert_eq!(status, 200);
    assert_eq!(routed_token(&h, &id), None);
}

#[tokio::test]
async fn apps_from_an_older_store_get_a_heroku_token_once_at_open() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut h = Harness::with_store(store.clone(), None).await;
    let mut ids = Vec::new();
    for name in ["old-a", "old-b", "new-c"] {
        let app = h.app(name).await;
        ids.push(app["id"].as_str().unwrap_or_default().to_string());
    }
    // What an older version wrote: apps with an `app` token only.
    for name in ["old-a", "old-b"] {
        let (status, _) = h
            .call("DELETE", &format!("/apps/{name}/log-tokens/heroku"), None)
            .await;
        assert_eq!(status, 200);
    }
    let (_, kept) = h.get("/apps/new-c/log-tokens/heroku").await;
    h.stop().await;

    let h = Harness::with_store(store.clone(), None).await;
    let before = store.revision().expect("revision");
    assert_eq!(h.control.add_platform_tokens().await.expect("upgrade"), 2);
    assert_eq!(
        store.revision().expect("revision"),
        before + 1,
        "one commit"
    );
    for (name, id) in ["old-a", "old-b", "new-c"].iter().zip(&ids) {
        let (status, t) = h.get(&format!("/apps/{name}/log-tokens/heroku")).await;
        assert_eq!(status, 200, "{name}: {t}");
        assert_eq!(
            routed_token(&h, id).as_deref(),
            t["token"].as_str(),
            "{name}: routers get it"
        );
    }
    let (_, same) = h.get("/apps/new-c/log-tokens/heroku").await;
    assert_eq!(same["token"], kept["token"], "an existing token is kept");
    // Idempotent: nothing left to add, nothing committed.
    assert_eq!(h.control.add_platform_tokens().await.expect("again"), 0);
    assert_eq!(store.revision().expect("revision"), before + 1);
}

#[tokio::test]
async fn log_sessions_return_the_logplex_url() {
    let h = Harness::start().await;
    let app = h.app("demo").await;
    let (status, s) = h
        .call(
            "POST",
            "/apps/demo/log-sessions",
            Some(json!({ "lines": 10, "tail": true, "source": "app", "dyno": "web.1" })),
        )
        .await;
    assert_eq!(status, 201, "{s}");
    assert!(
        s["logplex_url"]
            .as_str()
            .unwrap_or_default()
            .starts_with("http://"),
        "{s}"
    );
    let sessions = h.logs.sessions.lock().expect("lock").clone();
    let (app_id, params) = &sessions[0];
    assert_eq!(app_id, app["id"].as_str().unwrap_or_default());
    assert_eq!(params.lines, Some(10));
    assert!(params.tail);
    assert_eq!(params.source.as_deref(), Some("app"));
    assert_eq!(params.dyno.as_deref(), Some("web.1"));
    let (status, err) = h
        .call(
            "POST",
            "/apps/demo/log-sessions",
            Some(json!({ "lines": "many" })),
        )
        .await;
    assert_error(status, &err, 422, "invalid_params", "lines");
}
