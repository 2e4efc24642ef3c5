//! Authentication and the error body.

use base64::Engine as _;

use crate::support::{assert_error, request, Harness, KEY};

#[tokio::test]
async fn every_route_but_healthz_needs_the_key() {
    let h = Harness::start().await;
    h.app("demo").await;
    let (status, _) = request(&h.url(), "GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
    for (method, path) in [
        ("GET", "/apps"),
        ("POST", "/apps"),
        ("GET", "/account"),
        ("GET", "/users/~/apps"),
        ("GET", "/apps/demo"),
        ("PATCH", "/apps/demo"),
        ("DELETE", "/apps/demo"),
        ("GET", "/apps/demo/domains"),
        ("POST", "/apps/demo/domains"),
        ("GET", "/apps/demo/domains/www.example.com"),
        ("PATCH", "/apps/demo/domains/www.example.com"),
        ("DELETE", "/apps/demo/domains/www.example.com"),
        ("GET", "/apps/demo/log-drains"),
        ("POST", "/apps/demo/log-drains"),
        ("DELETE", "/apps/demo/log-drains/x"),
        ("POST", "/apps/demo/log-sessions"),
        ("GET", "/apps/demo/log-tokens"),
        ("POST", "/apps/demo/log-tokens"),
        ("DELETE", "/apps/demo/log-tokens/x"),
        ("GET", "/apps/demo/config-vars"),
        ("PATCH", "/apps/demo/config-vars"),
        ("GET", "/apps/demo/releases"),
        ("GET", "/apps/demo/formation"),
        ("PATCH", "/apps/demo/formation"),
        ("PATCH", "/apps/demo/formation/web"),
        ("GET", "/apps/demo/features"),
        ("PATCH", "/apps/demo/features/http-session-affinity"),
        ("GET", "/apps/demo/sni-endpoints"),
        ("POST", "/apps/demo/sni-endpoints"),
        ("DELETE", "/apps/demo/sni-endpoints/x"),
        ("GET", "/apps/demo/dynos"),
        ("PUT", "/apps/demo/dynos/web.1"),
        ("DELETE", "/apps/demo/dynos/web.1"),
        ("GET", "/apps/demo/router-settings"),
        ("PATCH", "/apps/demo/router-settings"),
        ("GET", "/routes"),
        ("GET", "/routes/watch?since=0"),
        ("GET", "/audit"),
        ("GET", "/apps/demo/audit"),
        ("GET", "/nowhere"),
    ] {
        let (status, body) = request(&h.url(), method, path, None, None).await;
        assert_error(status, &body, 401, "unauthorized", "credentials");
        let (status, body) = request(&h.url(), method, path, None, Some("Bearer wrong")).await;
        assert_error(status, &body, 401, "unauthorized", "credentials");
    }
    // Nothing was changed by the refused requests.
    assert_eq!(h.get("/apps/demo").await.0, 200);
}

#[tokio::test]
async fn bearer_and_basic_are_accepted() {
    let h = Harness::start().await;
    let (status, _) = request(
        &h.url(),
        "GET",
        "/apps",
        None,
        Some(&format!("Bearer {KEY}")),
    )
    .await;
    assert_eq!(status, 200);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(":{KEY}"));
    let (status, _) = request(
        &h.url(),
        "GET",
        "/apps",
        None,
        Some(&format!("Basic {basic}")),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_heroku_errors() {
    let h = Harness::start().await;
    let (status, body) = h.get("/nowhere").await;
    assert_error(status, &body, 404, "not_found", "not found");
    let (status, body) = h.call("PUT", "/apps", None).await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(body["id"], "method_not_allowed");
}
