//! Authentication and the error body.

use base64::Engine as _;

use crate::support::{assert_error, request, Harness, KEY};

#[tokio::test]
async fn every_route_but_healthz_needs_the_key() {
    let h = Harness::start().await;
    let (status, _) = request(&h.url(), "GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
    for (method, path) in [
        ("GET", "/apps"),
        ("POST", "/apps"),
        ("GET", "/account"),
        ("GET", "/routes"),
        ("GET", "/routes/watch?since=0"),
        ("PUT", "/apps/demo/dynos/web.1"),
        ("GET", "/apps/demo/router-settings"),
        ("GET", "/nowhere"),
    ] {
        let (status, body) = request(&h.url(), method, path, None, None).await;
        assert_error(status, &body, 401, "unauthorized", "credentials");
        let (status, body) = request(&h.url(), method, path, None, Some("Bearer wrong")).await;
        assert_error(status, &body, 401, "unauthorized", "credentials");
    }
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
