//! Bad input is a 4xx with a Heroku error body — never a 500, never a panic.

use serde_json::{json, Value};

use crate::support::{raw, Harness, KEY};

const ROUTES: &[(&str, &str)] = &[
    ("POST", "/apps"),
    ("PATCH", "/apps/demo"),
    ("POST", "/apps/demo/domains"),
    ("PATCH", "/apps/demo/domains/www.example.com"),
    ("POST", "/apps/demo/log-drains"),
    ("POST", "/apps/demo/log-sessions"),
    ("POST", "/apps/demo/log-tokens"),
    ("PATCH", "/apps/demo/config-vars"),
    ("PATCH", "/apps/demo/formation"),
    ("PATCH", "/apps/demo/formation/web"),
    ("PATCH", "/apps/demo/features/http-session-affinity"),
    ("POST", "/apps/demo/sni-endpoints"),
    ("PUT", "/apps/demo/dynos/web.1"),
    ("PATCH", "/apps/demo/router-settings"),
];

fn bodies() -> Vec<Vec<u8>> {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    [
        "",
        "{",
        "[]",
        "null",
        "123",
        "\"s\"",
        "{\"x\":1}",
        "{\"name\":null,\"hostname\":[],\"url\":{},\"address\":1e999,\"updates\":[{}]}",
        "{\"updates\":\"no\",\"quantity\":1.5,\"enabled\":\"yes\",\"max_in_flight\":-3}",
        deep.as_str(),
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .chain([
        vec![0xff, 0x00, 0xfe],
        format!("{{\"name\":\"{}\"}}", "x".repeat(100_000)).into_bytes(),
    ])
    .collect()
}

#[tokio::test]
async fn odd_bodies_never_cause_a_server_error() {
    let h = Harness::start().await;
    h.app("demo").await;
    let auth = format!("Bearer {KEY}");
    for (method, path) in ROUTES {
        for body in bodies() {
            let (status, bytes) =
                raw(&h.url(), method, path, Some(body.clone()), Some(&auth)).await;
            assert!(
                status < 500,
                "{method} {path} {:?} → {status} {bytes:?}",
                String::from_utf8_lossy(&body[..body.len().min(60)])
            );
            if status >= 400 {
                let v: serde_json::Value = serde_json::from_slice(&bytes).expect("an error body");
                assert!(
                    v["id"].is_string() && v["message"].is_string(),
                    "{method} {path}: {v}"
                );
            }
        }
    }
    // The app is still there and the server still answers.
    assert_eq!(h.get("/apps").await.0, 200);
}

#[tokio::test]
async fn odd_paths_are_404s() {
    let h = Harness::start().await;
    for path in [
        "/apps/%FF%FE",
        "/apps/..%2F..%2Fetc",
        &format!("/apps/{}", "a".repeat(5000)),
        "/apps/demo/dynos/%00",
    ] {
        let (status, body) = h.get(path).await;
        assert!((400..500).contains(&status), "{path} → {status} {body}");
    }
}

/// `body` with fields no endpoint defines, at the top level and nested.
fn with_unknown(mut body: Value) -> Value {
    body["unknown_field"] = json!({ "nested": [1, 2] });
    body["another_unknown"] = json!(null);
    body
}

#[tokio::test]
async fn unknown_fields_are_ignored_on_every_write_endpoint() {
    let h = Harness::start().await;
    let c = rcgen::generate_simple_self_signed(vec!["www.example.com".to_string()]).expect("rcgen");
    let cert =
        json!({ "certificate_chain": c.cert.pem(), "private_key": c.key_pair.serialize_pem() });
    let unknown_update = json!({ "type": "web", "quantity": 1, "unknown_field": true });
    let mut calls: Vec<(&str, String, Value)> = vec![
        (
            "POST",
            "/apps".into(),
            json!({ "name": "demo", "region": "us" }),
        ),
        ("PATCH", "/apps/demo".into(), json!({ "maintenance": true })),
        (
            "PATCH",
            "/apps/demo/features/http-session-affinity".into(),
            json!({ "enabled": true }),
        ),
        (
            "POST",
            "/apps/demo/domains".into(),
            json!({ "hostname": "www.example.com" }),
        ),
        (
            "PATCH",
            "/apps/demo/domains/www.example.com".into(),
            json!({ "sni_endpoint": null }),
        ),
        (
            "POST",
            "/apps/demo/log-drains".into(),
            json!({ "url": "syslog://logs.example.com:514" }),
        ),
        (
            "POST",
            "/apps/demo/log-sessions".into(),
            json!({ "tail": false }),
        ),
        (
            "POST",
            "/apps/demo/log-tokens".into(),
            json!({ "name": "edge" }),
        ),
        (
            "PATCH",
            "/apps/demo/formation".into(),
            json!({ "updates": [unknown_update] }),
        ),
        (
            "PATCH",
            "/apps/demo/formation/web".into(),
            json!({ "quantity": 2 }),
        ),
        ("POST", "/apps/demo/sni-endpoints".into(), cert.clone()),
        (
            "PUT",
            "/apps/demo/dynos/web.1".into(),
            json!({ "address": "127.0.0.1:5001" }),
        ),
        (
            "PATCH",
            "/apps/demo/router-settings".into(),
            json!({ "connect_timeout_ms": 1234 }),
        ),
    ];
    for (method, path, body) in calls.drain(..) {
        let (status, answer) = h.call(method, &path, Some(with_unknown(body))).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path} → {status} {answer}"
        );
    }
    // Updating the certificate needs its id.
    let (_, certs) = h.get("/apps/demo/sni-endpoints").await;
    let id = certs[0]["id"].as_str().expect("cert id").to_string();
    let path = format!("/apps/demo/sni-endpoints/{id}");
    let (status, answer) = h.call("PATCH", &path, Some(with_unknown(cert))).await;
    assert!(
        (200..300).contains(&status),
        "PATCH {path} → {status} {answer}"
    );

    // The known fields took effect.
    let table = h.routes.load();
    let app = table.app("demo").expect("demo");
    assert!(app.settings.maintenance && app.settings.session_affinity);
    assert_eq!(app.settings.timers.connect.as_millis(), 1234);
    let config = h.logs.config();
    assert_eq!(config.channels[0].drains.len(), 1);
    // `app`, `heroku` and `edge`.
    assert_eq!(config.channels[0].tokens.len(), 3);
    let (_, web) = h.get("/apps/demo/formation/web").await;
    assert_eq!(web["quantity"], 2, "{web}");
}
