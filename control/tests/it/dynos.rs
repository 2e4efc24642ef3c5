//! The routing-table API: dyno registration and router settings, and their
//! publication into the router's table.

use std::time::Duration;

use serde_json::json;

use crate::support::{assert_error, Harness};

#[tokio::test]
async fn register_update_list_and_remove_dynos() {
    let h = Harness::start().await;
    h.app("demo").await;
    let (status, d) = h
        .call(
            "PUT",
            "/apps/demo/dynos/web.1",
            Some(json!({ "address": "127.0.0.1:5001", "state": "up" })),
        )
        .await;
    assert_eq!(status, 201, "{d}");
    assert_eq!(
        (
            d["type"].as_str(),
            d["address"].as_str(),
            d["state"].as_str()
        ),
        (Some("web"), Some("127.0.0.1:5001"), Some("up"))
    );
    let (status, _) = h
        .call(
            "PUT",
            "/apps/demo/dynos/worker.1",
            Some(json!({ "address": "127.0.0.1:5002" })),
        )
        .await;
    assert_eq!(status, 201);
    let (status, d) = h
        .call(
            "PUT",
            "/apps/demo/dynos/web.1",
            Some(json!({ "address": "127.0.0.1:5003", "state": "starting" })),
        )
        .await;
    assert_eq!(status, 200, "{d}");

    let table = h.routes.load();
    let app = table.app("demo").expect("published");
    assert_eq!(app.web.len(), 1, "only web dynos take HTTP");
    assert_eq!(app.web[0].address.to_string(), "127.0.0.1:5003");
    assert_eq!(app.web[0].state, router::DynoState::Starting);
    assert_eq!(table.revision(), h.control.read().revision);

    let (status, list) = h.get("/apps/demo/dynos").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert_eq!(names, ["web.1", "worker.1"]);
    assert_eq!(list[0]["release"]["version"], 1);

    assert_eq!(
        h.call("DELETE", "/apps/demo/dynos/web.1", None).await.0,
        200
    );
    assert!(h.routes.load().app("demo").expect("app").web.is_empty());
    let (status, body) = h.call("DELETE", "/apps/demo/dynos/web.1", None).await;
    assert_error(status, &body, 404, "not_found", "web.1");
}

#[tokio::test]
async fn bad_dyno_input_names_the_field() {
    let h = Harness::start().await;
    h.app("demo").await;
    for (name, body, field) in [
        ("web.1", json!({ "address": "nope" }), "address"),
        ("web.1", json!({ "address": "127.0.0.1:0" }), "address"),
        ("web.1", json!({ "address": "localhost:80" }), "address"),
        (
            "web.1",
            json!({ "address": "127.0.0.1:5001", "state": "sleepy" }),
            "state",
        ),
        ("web", json!({ "address": "127.0.0.1:5001" }), "name"),
        ("Web.1", json!({ "address": "127.0.0.1:5001" }), "name"),
        ("web.x", json!({ "address": "127.0.0.1:5001" }), "name"),
    ] {
        let (status, err) = h
            .call("PUT", &format!("/apps/demo/dynos/{name}"), Some(body))
            .await;
        assert_error(status, &err, 422, "invalid_params", field);
    }
    let (status, err) = h
        .call("PUT", "/apps/demo/dynos/web.1", Some(json!({})))
        .await;
    assert!(
        (400..500).contains(&status)
            && err["message"]
                .as_str()
                .unwrap_or_default()
                .contains("address"),
        "{err}"
    );
    let (status, err) = h
        .call(
            "PUT",
            "/apps/ghost/dynos/web.1",
            Some(json!({ "address": "127.0.0.1:5001" })),
        )
        .await;
    assert_error(status, &err, 404, "not_found", "ghost");
}

#[tokio::test]
async fn router_settings_round_trip_into_the_table() {
    let h = Harness::start().await;
    h.app("demo").await;
    let (status, s) = h.get("/apps/demo/router-settings").await;
    assert_eq!(status, 200);
    assert_eq!(s["connect_timeout_ms"], 5000);
    assert_eq!(s["request_timeout_ms"], 30000);
    assert_eq!(s["idle_timeout_ms"], 55000);
    assert_eq!(s["boot_timeout_ms"], 75000);
    assert_eq!(s["max_dyno_concurrency"], 50);
    assert_eq!(s["max_in_flight"], json!(null));
    assert_eq!(s["balance"], "least-outstanding");
    assert_eq!(s["force_https"], false);
    assert_eq!(s["hsts_max_age_s"], json!(null));
    assert_eq!(s["max_body_bytes"], json!(null));
    assert_eq!(s["max_client_connections"], 10_000);
    assert_eq!(s["max_request_line_bytes"], 8192);
    assert_eq!(s["max_header_value_bytes"], 8192);
    assert_eq!(s["max_header_name_bytes"], 1000);
    assert_eq!(s["max_headers"], 1000);

    let patch = json!({ "request_timeout_ms": 1500, "max_in_flight": 7, "balance": "round-robin", "max_dyno_concurrency": 1 });
    let (status, s) = h
        .call("PATCH", "/apps/demo/router-settings", Some(patch))
        .await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["request_timeout_ms"], 1500);
    let table = h.routes.load();
    let app = table.app("demo").expect("app");
    assert_eq!(app.settings.timers.first_byte, Duration::from_millis(1500));
    assert_eq!(app.settings.max_in_flight, Some(7));
    assert_eq!(app.settings.max_dyno_concurrency, 1);
    assert_eq!(app.settings.balance, router::Balance::RoundRobin);

    let (status, s) = h
        .call(
            "PATCH",
            "/apps/demo/router-settings",
            Some(json!({ "max_in_flight": null })),
        )
        .await;
    assert_eq!((status, &s["max_in_flight"]), (200, &json!(null)));

    // HTTPS redirect, HSTS and the request-size limits reach the table too.
    let patch = json!({
        "force_https": true, "hsts_max_age_s": 31_536_000, "max_body_bytes": 1_048_576,
        "max_client_connections": null, "max_request_line_bytes": 4096,
        "max_header_value_bytes": 16_384, "max_header_name_bytes": 200, "max_headers": 50,
    });
    let (status, s) = h
        .call("PATCH", "/apps/demo/router-settings", Some(patch))
        .await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["max_body_bytes"], 1_048_576);
    assert_eq!(
        s["request_timeout_ms"], 1500,
        "fields not in a patch keep their value"
    );
    let table = h.routes.load();
    let app = table.app("demo").expect("app");
    assert!(app.settings.force_https);
    assert_eq!(app.settings.hsts_max_age, Some(31_536_000));
    assert_eq!(
        app.settings.limits,
        router::Limits {
            request_line: 4096,
            header_value: 16_384,
            header_name: 200,
            headers: 50,
            max_body: Some(1_048_576),
            max_client_connections: None,
        }
    );

    for (body, field) in [
        (json!({ "balance": "fastest" }), "balance"),
        (json!({ "connect_timeout_ms": 0 }), "connect_timeout_ms"),
        (json!({ "idle_timeout_ms": 99_999_999 }), "idle_timeout_ms"),
        (json!({ "max_dyno_concurrency": 0 }), "max_dyno_concurrency"),
        (
            json!({ "request_timeout_ms": "soon" }),
            "request_timeout_ms",
        ),
        (json!({ "request_timeout_ms": -1 }), "request_timeout_ms"),
        (json!({ "max_body_bytes": 0 }), "max_body_bytes"),
        (json!({ "max_headers": 1001 }), "max_headers"),
        (
            json!({ "max_request_line_bytes": 1_000_000 }),
            "max_request_line_bytes",
        ),
        (
            json!({ "max_header_name_bytes": 8 }),
            "max_header_name_bytes",
        ),
        (json!({ "hsts_max_age_s": 999_999_999 }), "hsts_max_age_s"),
        (
            json!({ "max_client_connections": 0 }),
            "max_client_connections",
        ),
        (json!({ "force_https": "yes" }), "force_https"),
    ] {
        let (status, err) = h
            .call("PATCH", "/apps/demo/router-settings", Some(body))
            .await;
        assert_error(status, &err, 422, "invalid_params", field);
    }
    // A field the settings do not define is ignored, as on every endpoint.
    let (_, before) = h.get("/apps/demo/router-settings").await;
    let (status, after) = h
        .call(
            "PATCH",
            "/apps/demo/router-settings",
            Some(json!({ "colour": 1 })),
        )
        .await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(after, before);
    assert!(after.get("colour").is_none(), "{after}");
}
