//! Config vars, formation and releases; the audit list.

use serde_json::json;

use crate::support::{assert_error, Harness};

#[tokio::test]
async fn config_changes_make_releases_and_reach_the_router() {
    let h = Harness::start().await;
    h.app("demo").await;
    let (status, vars) = h
        .call(
            "PATCH",
            "/apps/demo/config-vars",
            Some(json!({ "FOO": "bar", "ERROR_PAGE_URL": "https://pages.example.com/error.html" })),
        )
        .await;
    assert_eq!(status, 200, "{vars}");
    assert_eq!(vars["FOO"], "bar");
    assert_eq!(
        h.routes
            .load()
            .app("demo")
            .expect("app")
            .settings
            .error_page_url
            .as_deref(),
        Some("https://pages.example.com/error.html")
    );
    let (status, vars) = h
        .call(
            "PATCH",
            "/apps/demo/config-vars",
            Some(json!({ "FOO": null })),
        )
        .await;
    assert_eq!(status, 200);
    assert!(vars.get("FOO").is_none(), "{vars}");
    assert_eq!(
        h.get("/apps/demo/config-vars").await.1,
        json!({ "ERROR_PAGE_URL": "https://pages.example.com/error.html" })
    );

    let (status, releases) = h.get("/apps/demo/releases").await;
    assert_eq!(status, 200);
    let descriptions: Vec<&str> = releases
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|r| r["description"].as_str())
        .collect();
    assert_eq!(
        descriptions,
        [
            "Initial release",
            "Set ERROR_PAGE_URL, FOO config vars",
            "Remove FOO config vars"
        ]
    );
    assert_eq!(releases[2]["current"], true);
    assert_eq!(h.get("/apps/demo/releases/v2").await.1["version"], 2);

    let messages = h.logs.messages();
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("heroku[api]: Set ERROR_PAGE_URL, FOO config vars by user")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("heroku[api]: Release v3 created")),
        "{messages:?}"
    );

    for bad in [
        json!({ "1BAD": "x" }),
        json!({ "BAD-NAME": "x" }),
        json!({ "OK": ["x"] }),
    ] {
        let (status, err) = h.call("PATCH", "/apps/demo/config-vars", Some(bad)).await;
        assert_eq!(status, 422, "{err}");
        assert_eq!(err["id"], "invalid_params");
    }
}

#[tokio::test]
async fn page_urls_must_be_http_or_https() {
    let h = Harness::start().await;
    h.app("demo").await;
    for var in ["ERROR_PAGE_URL", "MAINTENANCE_PAGE_URL"] {
        for bad in [
            json!("file:///etc/passwd"),
            json!("ftp://pages.example.com/x.html"),
            json!("/relative.html"),
            json!("pages.example.com/x.html"),
            json!(42),
        ] {
            let (status, err) = h
                .call("PATCH", "/apps/demo/config-vars", Some(json!({ var: bad })))
                .await;
            assert_error(status, &err, 422, "invalid_params", var);
        }
    }
    assert_eq!(h.get("/apps/demo/config-vars").await.1, json!({}));
    let settings = h.routes.load().app("demo").expect("app").settings.clone();
    assert_eq!(settings.error_page_url, None);
    let (status, vars) = h
        .call(
            "PATCH",
            "/apps/demo/config-vars",
            Some(json!({
                "ERROR_PAGE_URL": "http://pages.example.com/e.html",
                "MAINTENANCE_PAGE_URL": "https://pages.example.com/m.html",
            })),
        )
        .await;
    assert_eq!(status, 200, "{vars}");
    let settings = h.routes.load().app("demo").expect("app").settings.clone();
    assert_eq!(
        settings.maintenance_page_url.as_deref(),
        Some("https://pages.example.com/m.html")
    );
    // Unsetting is always allowed.
    let (status, _) = h
        .call(
            "PATCH",
            "/apps/demo/config-vars",
            Some(json!({ "ERROR_PAGE_URL": null })),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn formation_is_recorded_and_released() {
    let h = Harness::start().await;
    h.app("demo").await;
    let (status, f) = h
        .call(
            "PATCH",
            "/apps/demo/formation",
            Some(json!({ "updates": [{ "type": "web", "quantity": "2" }] })),
        )
        .await;
    assert_eq!(status, 200, "{f}");
    assert_eq!(f[0]["quantity"], 2);
    let (status, f) = h
        .call(
            "PATCH",
            "/apps/demo/formation/worker",
            Some(json!({ "quantity": 1, "size": "performance-m" })),
        )
        .await;
    assert_eq!((status, &f["size"]), (200, &json!("performance-m")), "{f}");
    let (_, list) = h.get("/apps/demo/formation").await;
    assert_eq!(list.as_array().map(Vec::len), Some(2));
    let (_, releases) = h.get("/apps/demo/releases").await;
    assert_eq!(releases.as_array().map(Vec::len), Some(3));
    assert!(
        h.logs
            .messages()
            .iter()
            .any(|m| m.starts_with("heroku[api]: Scale to web=2")),
        "{:?}",
        h.logs.messages()
    );

    let (status, err) = h
        .call(
            "PATCH",
            "/apps/demo/formation/web",
            Some(json!({ "quantity": -1 })),
        )
        .await;
    assert_error(status, &err, 422, "invalid_params", "quantity");
    let (status, err) = h
        .call(
            "PATCH",
            "/apps/demo/formation/web",
            Some(json!({ "quantity": "lots" })),
        )
        .await;
    assert_error(status, &err, 422, "invalid_params", "quantity");
    let (status, err) = h
        .call(
            "PATCH",
            "/apps/demo/formation/Web!",
            Some(json!({ "quantity": 1 })),
        )
        .await;
    assert_error(status, &err, 422, "invalid_params", "type");
}

#[tokio::test]
async fn the_audit_list_records_every_change() {
    let h = Harness::start().await;
    h.app("demo").await;
    h.call("PATCH", "/apps/demo", Some(json!({ "maintenance": true })))
        .await;
    let (status, audit) = h.get("/audit").await;
    assert_eq!(status, 200);
    let actions: Vec<&str> = audit
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|a| a["action"].as_str())
        .collect();
    assert_eq!(actions, ["app.create", "release.create", "app.maintenance"]);
    let last_rev = audit[2]["revision"].as_u64().expect("revision");
    let (_, later) = h.get(&format!("/audit?since={last_rev}")).await;
    assert_eq!(later, json!([]));
    let (_, app_audit) = h.get("/apps/demo/audit").await;
    assert_eq!(app_audit.as_array().map(Vec::len), Some(3));
    let (status, err) = h.get("/audit?since=banana").await;
    assert_error(status, &err, 422, "invalid_params", "since");
}
