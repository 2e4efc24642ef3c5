//! SNI endpoints: PEM that parses and matches its key; published for TLS.

use serde_json::json;

use crate::support::{assert_error, Harness};

fn self_signed(names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let c = rcgen::generate_simple_self_signed(names).expect("rcgen");
    (c.cert.pem(), c.key_pair.serialize_pem())
}

#[tokio::test]
async fn add_list_update_and_remove_certificates() {
    let h = Harness::start().await;
    h.app("demo").await;
    h.call(
        "POST",
        "/apps/demo/domains",
        Some(json!({ "hostname": "www.example.com" })),
    )
    .await;
    let (chain, key) = self_signed(&["www.example.com", "*.example.com"]);
    let (status, c) = h
        .call(
            "POST",
            "/apps/demo/sni-endpoints",
            Some(json!({ "certificate_chain": chain, "private_key": key })),
        )
        .await;
    assert_eq!(status, 201, "{c}");
    assert_eq!(
        c["ssl_cert"]["cert_domains"],
        json!(["www.example.com", "*.example.com"])
    );
    assert!(c["ssl_cert"]["expires_at"].is_string());
    assert_eq!(
        c["domains"].as_array().map(Vec::len),
        Some(1),
        "matches the app's domain"
    );
    let id = c["id"].as_str().unwrap_or_default().to_string();

    let routes = h.get("/routes").await.1;
    let cert = &routes["apps"][0]["certs"][0];
    assert_eq!(cert["id"], id.as_str());
    assert!(cert["private_key"]
        .as_str()
        .unwrap_or_default()
        .contains("PRIVATE KEY"));

    // `heroku certs:add` then associates matching domains with the endpoint.
    let name0 = c["name"].as_str().unwrap_or_default().to_string();
    let (status, d) = h
        .call(
            "PATCH",
            "/apps/demo/domains/www.example.com",
            Some(json!({ "sni_endpoint": name0 })),
        )
        .await;
    assert_eq!((status, &d["sni_endpoint"]["id"]), (200, &json!(id)), "{d}");
    let (status, err) = h
        .call(
            "PATCH",
            "/apps/demo/domains/www.example.com",
            Some(json!({ "sni_endpoint": "nope" })),
        )
        .await;
    assert_error(status, &err, 422, "invalid_params", "sni_endpoint");

    let (status, list) = h.get("/apps/demo/sni-endpoints").await;
    assert_eq!((status, list.as_array().map(Vec::len)), (200, Some(1)));
    let (chain2, key2) = self_signed(&["api.example.com"]);
    let (status, c) = h
        .call(
            "PATCH",
            &format!("/apps/demo/sni-endpoints/{id}"),
            Some(json!({ "certificate_chain": chain2, "private_key": key2 })),
        )
        .await;
    assert_eq!(
        (status, &c["ssl_cert"]["cert_domains"]),
        (200, &json!(["api.example.com"])),
        "{c}"
    );
    let name = c["name"].as_str().unwrap_or_default().to_string();
    assert_eq!(
        h.call("DELETE", &format!("/apps/demo/sni-endpoints/{name}"), None)
            .await
            .0,
        200
    );
    assert_eq!(h.get("/apps/demo/sni-endpoints").await.1, json!([]));
    let (_, d) = h.get("/apps/demo/domains/www.example.com").await;
    assert_eq!(
        d["sni_endpoint"],
        json!(null),
        "unbound when its endpoint goes"
    );
}

#[tokio::test]
async fn bad_certificates_name_the_field() {
    let h = Harness::start().await;
    h.app("demo").await;
    let (chain, key) = self_signed(&["www.example.com"]);
    let (_, other_key) = self_signed(&["www.example.com"]);
    for (c, k, field) in [
        (chain.as_str(), other_key.as_str(), "private_key"),
        ("not pem", key.as_str(), "certificate_chain"),
        (chain.as_str(), "not pem", "private_key"),
        (
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            key.as_str(),
            "certificate_chain",
        ),
    ] {
        let (status, err) = h
            .call(
                "POST",
                "/apps/demo/sni-endpoints",
                Some(json!({ "certificate_chain": c, "private_key": k })),
            )
            .await;
        assert_error(status, &err, 422, "invalid_params", field);
    }
}
