//! Custom domains: exact, wildcard, punycode; one app per domain.

use serde_json::json;

use crate::support::{assert_error, Harness};

#[tokio::test]
async fn add_list_and_remove_domains() {
    let h = Harness::start().await;
    h.app("demo").await;
    for (input, stored) in [
        ("www.example.com", "www.example.com"),
        ("*.Example.ORG.", "*.example.org"),
        ("bücher.example", "xn--bcher-kva.example"),
    ] {
        let (status, d) = h
            .call(
                "POST",
                "/apps/demo/domains",
                Some(json!({ "hostname": input })),
            )
            .await;
        assert_eq!(status, 201, "{d}");
        assert_eq!(d["hostname"], stored);
        assert_eq!(d["kind"], "custom");
        assert_eq!(d["cname"], "demo.localhost");
    }
    let (status, list) = h.get("/apps/demo/domains").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|d| d["hostname"].as_str())
        .collect();
    assert_eq!(names[0], "demo.localhost", "the Heroku domain comes first");
    assert_eq!(names.len(), 4);

    let table = h.routes.load();
    for host in [
        "www.example.com",
        "a.example.org",
        "xn--bcher-kva.example",
        "demo.localhost",
    ] {
        assert_eq!(
            table.lookup(host).map(|a| a.name.to_string()).as_deref(),
            Some("demo"),
            "{host}"
        );
    }

    let (status, _) = h
        .call("DELETE", "/apps/demo/domains/www.example.com", None)
        .await;
    assert_eq!(status, 200);
    assert!(h.routes.load().lookup("www.example.com").is_none());
    let (status, body) = h
        .call("DELETE", "/apps/demo/domains/www.example.com", None)
        .await;
    assert_error(status, &body, 404, "not_found", "www.example.com");
}

#[tokio::test]
async fn a_domain_belongs_to_one_app() {
    let h = Harness::start().await;
    h.app("first").await;
    h.app("second").await;
    let (status, _) = h
        .call(
            "POST",
            "/apps/first/domains",
            Some(json!({ "hostname": "shop.example.com" })),
        )
        .await;
    assert_eq!(status, 201);
    let (status, body) = h
        .call(
            "POST",
            "/apps/second/domains",
            Some(json!({ "hostname": "SHOP.example.com" })),
        )
        .await;
    assert_error(status, &body, 409, "conflict", "shop.example.com");
    let (status, body) = h
        .call(
            "POST",
            "/apps/first/domains",
            Some(json!({ "hostname": "shop.example.com" })),
        )
        .await;
    assert_error(status, &body, 409, "conflict", "already");
    // Destroying the owner frees the name.
    assert_eq!(h.call("DELETE", "/apps/first", None).await.0, 200);
    let (status, _) = h
        .call(
            "POST",
            "/apps/second/domains",
            Some(json!({ "hostname": "shop.example.com" })),
        )
        .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn bad_hostnames_name_the_field() {
    let h = Harness::start().await;
    h.app("demo").await;
    for bad in [
        "",
        "localhost",
        "a.*.example.com",
        "*example.com",
        "10.0.0.1",
        "-x.example.com",
        "a b.example.com",
    ] {
        let (status, body) = h
            .call(
                "POST",
                "/apps/demo/domains",
                Some(json!({ "hostname": bad })),
            )
            .await;
        assert_error(status, &body, 422, "invalid_params", "hostname");
    }
    let (status, body) = h.call("POST", "/apps/demo/domains", Some(json!({}))).await;
    assert!((400..500).contains(&status), "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("hostname"),
        "{body}"
    );
    let (status, body) = h
        .call(
            "POST",
            "/apps/nope/domains",
            Some(json!({ "hostname": "x.example.com" })),
        )
        .await;
    assert_error(status, &body, 404, "not_found", "nope");
}
