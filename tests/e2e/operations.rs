//! Operating the real binary: `/healthz`, `/readyz`, and a `/metrics`
//! scrape under traffic that a Prometheus text-format parser accepts. The
//! scrape is kept in `target/metrics-scrape.txt` so CI can also run
//! `promtool check metrics` on it.

use crate::support::{create_app, eventually, http, serve, via_router, Dyno, TempDir};

fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let r = http(addr, "GET", &addr.to_string(), path, &[], b"").expect("admin answers");
    (r.status, r.text())
}

#[test]
fn metrics_scrape_under_traffic_parses_and_counts_requests() {
    let dir = TempDir::new("operations");
    let key = "operations-test-key-0123456789";
    let mut sy = serve(&dir.0, None, Some(key));
    let admin = sy.addr("admin");
    assert_eq!(get(admin, "/healthz").0, 200);
    eventually("ready", || get(admin, "/readyz").0 == 200);

    let api_addr = sy.addr("api");
    let router = sy.addr("router-http");
    let dyno = Dyno::start("ok");
    create_app(api_addr, key, "demo", Some(dyno.addr));
    create_app(api_addr, key, "empty", None);
    eventually("demo reachable", || {
        via_router(router, "demo.localhost").is_some_and(|r| r.status == 200)
    });
    for _ in 0..20 {
        assert_eq!(
            via_router(router, "demo.localhost").expect("router").status,
            200
        );
    }
    assert_eq!(
        via_router(router, "empty.localhost")
            .expect("router")
            .status,
        503,
        "H14"
    );

    // Sampled gauges refresh once a second; wait until the scrape has them.
    let mut text = String::new();
    eventually("a scrape with router gauges", || {
        let (status, body) = get(admin, "/metrics");
        text = body;
        status == 200 && text.contains("router_app_in_flight")
    });
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("exposition parses");
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    assert!(
        value(
            "router_requests_total",
            &[("app", "demo"), ("status_class", "2xx"), ("code", "none")]
        ) >= 21.0,
        "{text}"
    );
    assert_eq!(
        value(
            "router_requests_total",
            &[("app", "empty"), ("status_class", "5xx"), ("code", "H14")]
        ),
        1.0
    );
    assert!(scrape
        .samples
        .iter()
        .any(|s| s.metric == "router_request_duration_seconds_bucket"
            || s.metric == "router_request_duration_seconds"));
    assert!(
        value("router_table_revision", &[]) >= 3.0,
        "revision follows the control plane"
    );
    for s in &scrape.samples {
        for (k, v) in s.labels.iter() {
            assert!(
                !(k == "path" || k == "request_id" || v.contains("127.0.0.1")),
                "unbounded label {k}={v} on {}",
                s.metric
            );
        }
    }
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let _ = std::fs::create_dir_all(&out);
    std::fs::write(out.join("metrics-scrape.txt"), &text).expect("keep the scrape");
    assert!(sy.terminate(), "SIGTERM exits 0 after a clean drain");
}
