//! Operating the real binary: `/healthz`, `/readyz`, and a `/metrics`
//! scrape under traffic that a Prometheus text-format parser accepts. The
//! scrape is kept in `target/metrics-scrape.txt` so CI can also run
//! `promtool check metrics` on it.

use crate::support::{
    create_app, eventually, http, serve, serve_args, via_router, Dyno, Proc, TempDir, SERVE_ROLES,
};

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

/// Each thread of process `pid`: its name and nice value
/// (`/proc/PID/task/TID/stat`, the 19th field).
#[cfg(target_os = "linux")]
fn thread_nice_values(pid: u32) -> Vec<(String, i32)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let path = task.expect("task").path();
        let (Ok(name), Ok(stat)) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("stat")),
        ) else {
            continue; // the thread ended meanwhile
        };
        // The fields after the parenthesised name; nice is the 19th field
        // of the whole line, the 17th after the name.
        let after = &stat[stat.rfind(')').expect("stat has a name") + 2..];
        let nice = after.split(' ').nth(16).expect("nice field");
        threads.push((name.trim().to_string(), nice.parse().expect("nice")));
    }
    threads
}

#[cfg(target_os = "linux")]
#[test]
fn background_threads_run_below_the_router_threads() {
    let dir = TempDir::new("priority");
    let mut args = serve_args(&dir.0, None);
    args.extend(["--router-threads".into(), "2".into()]);
    args.extend(["--background-nice".into(), "7".into()]);
    let sy = Proc::start(
        &args,
        &[("SWITCHYARD_API_KEY", "priority-test-key-0123456789")],
        SERVE_ROLES,
    );
    let own = std::fs::read_to_string("/proc/self/stat").expect("own stat");
    let own: i32 = own[own.rfind(')').expect("name") + 2..]
        .split(' ')
        .nth(16)
        .expect("nice")
        .parse()
        .expect("nice");

    // The listeners are announced before the router threads start.
    let routers = |threads: &[(String, i32)]| {
        threads
            .iter()
            .filter(|(name, _)| name.starts_with("router-"))
            .count()
    };
    eventually("router threads started", || {
        routers(&thread_nice_values(sy.pid())) == 4
    });
    let threads = thread_nice_values(sy.pid());
    let of = |prefix: &str| -> Vec<i32> {
        threads
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, nice)| *nice)
            .collect()
    };
    // Router threads keep the process's priority, started from the main
    // thread; the runtime's (logplex, control plane, metrics) run 7 below.
    assert_eq!(of("router-http-"), vec![own; 2], "{threads:?}");
    assert_eq!(of("router-https-"), vec![own; 2], "{threads:?}");
    let background = of("tokio-rt-worker");
    assert!(!background.is_empty(), "{threads:?}");
    assert!(
        background.iter().all(|&n| n == (own + 7).min(19)),
        "{threads:?}"
    );

    // And the router still routes.
    let dyno = Dyno::start("ok");
    create_app(
        sy.addr("api"),
        "priority-test-key-0123456789",
        "nice",
        Some(dyno.addr),
    );
    eventually("routed", || {
        via_router(sy.addr("router-http"), "nice.localhost").is_some_and(|r| r.status == 200)
    });
}
