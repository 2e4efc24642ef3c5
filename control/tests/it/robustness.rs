//! Bad input is a 4xx with a Heroku error body — never a 500, never a panic.

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
