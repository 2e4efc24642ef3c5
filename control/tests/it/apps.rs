//! `/apps`: create, list, info, rename, maintenance, destroy, features.

use serde_json::json;

use crate::support::{assert_error, raw, Harness, KEY};

fn is_rfc3339(v: &serde_json::Value) -> bool {
    v.as_str()
        .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok())
}

#[tokio::test]
async fn create_list_info_rename_destroy() {
    let h = Harness::start().await;
    let app = h.app("demo").await;
    assert!(
        uuid::Uuid::parse_str(app["id"].as_str().unwrap_or_default()).is_ok(),
        "{app}"
    );
    assert!(is_rfc3339(&app["created_at"]), "{app}");
    assert_eq!(app["name"], "demo");
    assert_eq!(app["maintenance"], false);
    assert_eq!(app["web_url"], "http://demo.localhost:8080/");

    let (status, list) = h.get("/apps").await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    let (status, by_id) = h
        .get(&format!("/apps/{}", app["id"].as_str().unwrap_or_default()))
        .await;
    assert_eq!((status, &by_id["name"]), (200, &json!("demo")));

    let (status, renamed) = h
        .call("PATCH", "/apps/demo", Some(json!({ "name": "demo2" })))
        .await;
    assert_eq!(
        (status, &renamed["name"]),
        (200, &json!("demo2")),
        "{renamed}"
    );
    assert_eq!(renamed["id"], app["id"]);
    assert_eq!(h.get("/apps/demo").await.0, 404);
    assert!(h.routes.load().lookup("demo2.localhost").is_some());
    assert!(h.routes.load().lookup("demo.localhost").is_none());

    let (status, _) = h.call("DELETE", "/apps/demo2", None).await;
    assert_eq!(status, 200);
    let (status, body) = h.get("/apps/demo2").await;
    assert_error(status, &body, 404, "not_found", "demo2");
    assert!(h.routes.load().apps().is_empty());
    // The name is free again.
    h.app("demo2").await;
}

#[tokio::test]
async fn app_names_are_validated() {
    let h = Harness::start().await;
    for bad in [
        "ab",
        "Demo",
        "9lives",
        "demo-",
        "has_underscore",
        &"a".repeat(31),
    ] {
        let (status, body) = h.call("POST", "/apps", Some(json!({ "name": bad }))).await;
        assert_error(status, &body, 422, "invalid_params", "name");
    }
    h.app("taken").await;
    let (status, body) = h
        .call("POST", "/apps", Some(json!({ "name": "taken" })))
        .await;
    assert_error(status, &body, 422, "invalid_params", "taken");
    h.app("other").await;
    let (status, body) = h
        .call("PATCH", "/apps/other", Some(json!({ "name": "taken" })))
        .await;
    assert_error(status, &body, 422, "invalid_params", "taken");
    let (status, body) = h.call("POST", "/apps", Some(json!({ "name": 7 }))).await;
    assert_error(status, &body, 422, "invalid_params", "name");
    // Without a name, one is generated.
    let (status, body) = h.call("POST", "/apps", None).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn malformed_bodies_are_400_not_500() {
    let h = Harness::start().await;
    let auth = format!("Bearer {KEY}");
    for body in [&b"{"[..], b"[1,2", b"\xff\xfe", b"null"] {
        let (status, bytes) =
            raw(&h.url(), "POST", "/apps", Some(body.to_vec()), Some(&auth)).await;
        assert!((400..500).contains(&status), "{status} {bytes:?}");
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json error body");
        assert!(v["id"].is_string() && v["message"].is_string(), "{v}");
    }
}

#[tokio::test]
async fn maintenance_is_published_and_logged() {
    let h = Harness::start().await;
    h.app("demo").await;
    let (status, body) = h
        .call("PATCH", "/apps/demo", Some(json!({ "maintenance": true })))
        .await;
    assert_eq!((status, &body["maintenance"]), (200, &json!(true)));
    let table = h.routes.load();
    let app = table.app("demo").expect("published");
    assert!(app.settings.maintenance);
    assert!(
        h.logs
            .messages()
            .iter()
            .any(|m| m.starts_with("heroku[api]: Enable maintenance mode")),
        "{:?}",
        h.logs.messages()
    );
    let (status, body) = h
        .call("PATCH", "/apps/demo", Some(json!({ "maintenance": "yes" })))
        .await;
    assert_error(status, &body, 422, "invalid_params", "maintenance");
}

#[tokio::test]
async fn session_affinity_feature() {
    let h = Harness::start().await;
    h.app("demo").await;
    let (status, list) = h.get("/apps/demo/features").await;
    assert_eq!(status, 200);
    assert_eq!(list[0]["name"], "http-session-affinity");
    assert_eq!(list[0]["enabled"], false);
    let (status, f) = h
        .call(
            "PATCH",
            "/apps/demo/features/http-session-affinity",
            Some(json!({ "enabled": true })),
        )
        .await;
    assert_eq!((status, &f["enabled"]), (200, &json!(true)));
    assert!(
        h.routes
            .load()
            .app("demo")
            .expect("app")
            .settings
            .session_affinity
    );
    let (status, body) = h
        .call(
            "PATCH",
            "/apps/demo/features/nope",
            Some(json!({ "enabled": true })),
        )
        .await;
    assert_error(status, &body, 404, "not_found", "nope");
}

#[tokio::test]
async fn account_and_cli_side_lists() {
    let h = Harness::start().await;
    h.app("demo").await;
    let (status, account) = h.get("/account").await;
    assert_eq!(status, 200);
    assert!(account["email"].is_string());
    assert_eq!(h.get("/users/~/apps").await.0, 200);
    assert_eq!(h.get("/apps/demo/addons").await.1, json!([]));
    assert_eq!(h.get("/apps/demo/pipeline-couplings").await.0, 404);
}
