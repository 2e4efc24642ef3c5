//! `switchyard serve --dynos`: an app's Procfile and formation run real
//! processes. A web dyno is routed once its port accepts, `ps:scale`
//! starts and stops dynos, their output and life cycle reach the app's log
//! stream, and shutting the server down stops them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use serde_json::{json, Value};

use crate::support::{
    api, create_app, eventually, http, serve_args, via_router, Proc, TempDir, KEY, SERVE_ROLES,
};

#[test]
#[ignore = "the fake web dyno that the dyno manager runs as a child"]
fn fake_web_dyno() {
    let Ok(port) = std::env::var("PORT") else {
        return;
    };
    let dyno = std::env::var("DYNO").unwrap_or_default();
    println!(
        "booting {dyno}, GREETING={}",
        std::env::var("GREETING").unwrap_or_default()
    );
    let port: u16 = port.parse().expect("PORT is a number");
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind PORT");
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let dyno = dyno.clone();
        std::thread::spawn(move || {
            let mut head = Vec::new();
            let mut reader = BufReader::new(conn.try_clone().expect("clone"));
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push(line);
            }
            let body = format!("hello from {dyno}");
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        });
    }
}

/// `serve` on port 0 everywhere with `flags` (`--dynos`, `--procfile …`),
/// its state in `dir`.
fn serve_with(dir: &TempDir, flags: &[String]) -> Proc {
    let mut args = serve_args(&dir.0, None);
    args.extend_from_slice(flags);
    Proc::start(&args, &[("SWITCHYARD_API_KEY", KEY)], SERVE_ROLES)
}

/// The flags that run `procfile` for app `demo`.
fn procfile_flags(procfile: &std::path::Path) -> Vec<String> {
    vec![
        "--procfile".into(),
        procfile.display().to_string(),
        "--app".into(),
        "demo".into(),
    ]
}

fn web_command() -> String {
    let exe = std::env::current_exe().expect("test binary");
    format!(
        "exec '{}' --ignored --exact dyno_manager::fake_web_dyno --nocapture --test-threads 1",
        exe.display()
    )
}

/// The app's dynos as `GET /apps/demo/dynos` shows them: name → (state, address).
fn dynos(api_addr: SocketAddr) -> Vec<(String, String, String)> {
    let (status, body) = api(api_addr, KEY, "GET", "/apps/demo/dynos", None).expect("dynos");
    if status == 404 {
        return Vec::new(); // --procfile has not created the app yet
    }
    assert_eq!(status, 200, "{body}");
    let mut out: Vec<(String, String, String)> = body
        .as_array()
        .expect("a list")
        .iter()
        .map(|d| {
            let s = |k: &str| d[k].as_str().unwrap_or_default().to_string();
            (s("name"), s("state"), s("address"))
        })
        .collect();
    out.sort();
    out
}

fn scale(api_addr: SocketAddr, web: u32) {
    let (status, body) = api(
        api_addr,
        KEY,
        "PATCH",
        "/apps/demo/formation",
        Some(json!({ "updates": [{ "type": "web", "quantity": web }] })),
    )
    .expect("scale");
    assert_eq!(status, 200, "{body}");
}

fn get(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split("\r\n\r\n").nth(1).map(str::to_string)
}

/// The app's recent log lines through a log session.
fn recent_logs(sy: &Proc) -> String {
    let (status, session) = api(
        sy.addr("api"),
        KEY,
        "POST",
        "/apps/demo/log-sessions",
        Some(json!({ "lines": 200 })),
    )
    .expect("session");
    assert_eq!(status, 201, "{session}");
    let url = session["logplex_url"].as_str().expect("url");
    let path = &url[url.find("/sessions/").expect("path")..];
    http(sy.addr("logplex-http"), "GET", "localhost", path, &[], b"")
        .expect("session body")
        .text()
}

#[test]
fn serve_runs_the_procfile_scales_it_and_stops_it() {
    let dir = TempDir::new("dynos");
    let mut sy = serve_with(&dir, &["--dynos".into()]);
    let api_addr = sy.addr("api");
    create_app(api_addr, KEY, "demo", None);
    let (status, body) = api(
        api_addr,
        KEY,
        "PATCH",
        "/apps/demo/config-vars",
        Some(json!({ "GREETING": "hi" })),
    )
    .expect("config");
    assert_eq!(status, 200, "{body}");
    let (status, body): (u16, Value) = api(
        api_addr,
        KEY,
        "PUT",
        "/apps/demo/procfile",
        Some(json!({ "processes": { "web": web_command() }, "dir": dir.0.display().to_string() })),
    )
    .expect("procfile");
    assert_eq!(status, 200, "{body}");

    // A new web type gets one dyno, routed once its port accepts.
    let router = sy.addr("router-http");
    eventually("web.1 answers through the router", || {
        via_router(router, "demo.localhost").is_some_and(|r| r.text() == "hello from web.1")
    });
    let listed = dynos(api_addr);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (listed[0].0.as_str(), listed[0].1.as_str()),
        ("web.1", "up")
    );

    // Scale up: a second process, on its own port.
    scale(api_addr, 2);
    eventually("web.2 is up", || {
        dynos(api_addr).iter().filter(|d| d.1 == "up").count() == 2
    });
    let web2 = dynos(api_addr)[1].2.clone();
    assert_eq!(get(&web2).as_deref(), Some("hello from web.2"));

    // Its output and life cycle are in the app's stream.
    eventually("the dynos' lines are in the stream", || {
        let logs = recent_logs(&sy);
        logs.contains("app[web.2]:")
            && logs.contains("booting web.2, GREETING=hi")
            && logs.contains("heroku[web.2]: State changed from starting to up")
            && logs.contains("heroku[web.1]: Starting process with command")
    });

    // `heroku ps:restart --dyno-name web.2`: stopped and started again on
    // its port; the registration stays.
    let (status, body) =
        api(api_addr, KEY, "DELETE", "/apps/demo/dynos/web.2", None).expect("restart");
    assert_eq!(status, 202, "{body}");
    eventually("web.2 was restarted and is up again", || {
        recent_logs(&sy).contains("heroku[web.2]: State changed from down to starting")
            && dynos(api_addr).iter().filter(|d| d.1 == "up").count() == 2
    });
    assert_eq!(get(&web2).as_deref(), Some("hello from web.2"));

    // Scale down: web.2 leaves routing, then stops.
    scale(api_addr, 1);
    eventually("web.2 is gone", || dynos(api_addr).len() == 1);
    eventually("web.2's process stopped", || get(&web2).is_none());
    let web1 = dynos(api_addr)[0].2.clone();
    assert!(recent_logs(&sy).contains("heroku[web.2]: Stopping all processes with SIGTERM"));

    // Shutting the server down stops the dynos too.
    assert!(sy.terminate(), "a clean exit");
    assert!(get(&web1).is_none(), "web.1 stopped with the server");
}

/// A web process that exits at once: the dyno is `crashed` between its
/// restarts, and the router answers H10 meanwhile.
#[test]
fn a_crashing_web_dyno_makes_the_router_answer_h10() {
    let dir = TempDir::new("dynos-crash");
    let sy = serve_with(&dir, &["--dynos".into()]);
    let api_addr = sy.addr("api");
    create_app(api_addr, KEY, "demo", None);
    let procfile = json!({
        "processes": { "web": "echo cannot start; exit 1" },
        "dir": dir.0.display().to_string(),
    });
    let (status, body) =
        api(api_addr, KEY, "PUT", "/apps/demo/procfile", Some(procfile)).expect("procfile");
    assert_eq!(status, 200, "{body}");
    // The second crash in a row waits out a 20 s cool-off, crashed.
    eventually("the dyno is crashed", || {
        dynos(api_addr)
            .iter()
            .any(|d| d.0 == "web.1" && d.1 == "crashed")
    });
    let resp = via_router(sy.addr("router-http"), "demo.localhost").expect("routed");
    assert_eq!(resp.status, 503);
    let needles = [
        "app[web.1]: cannot start",
        "heroku[web.1]: Process exited with status 1",
        "heroku[web.1]: State changed from starting to crashed",
        "heroku[router]: at=error code=H10",
    ];
    eventually("the crash and the H10 are in the stream", || {
        let logs = recent_logs(&sy);
        needles.iter().all(|n| logs.contains(n))
    });
}

/// `serve --procfile PATH --app NAME`: the app is created and its Procfile
/// runs at once; `ps:scale web=3` gives three dynos behind the router.
#[test]
fn serve_with_a_procfile_runs_it_at_once() {
    let dir = TempDir::new("dynos-procfile");
    let procfile = dir.0.join("Procfile");
    std::fs::write(&procfile, format!("# the demo\nweb: {}\n", web_command())).expect("Procfile");
    let mut sy = serve_with(&dir, &procfile_flags(&procfile));
    let api_addr = sy.addr("api");
    eventually("web.1 answers", || {
        via_router(sy.addr("router-http"), "demo.localhost")
            .is_some_and(|r| r.text() == "hello from web.1")
    });
    scale(api_addr, 3);
    eventually("three web dynos are up", || {
        dynos(api_addr).iter().filter(|d| d.1 == "up").count() == 3
    });
    assert!(sy.terminate(), "a clean exit");
}

#[test]
fn a_bad_procfile_stops_serve_before_it_listens() {
    let dir = TempDir::new("dynos-bad-procfile");
    let procfile = dir.0.join("Procfile");
    std::fs::write(&procfile, "web python3 server.py\n").expect("Procfile");
    let mut args = serve_args(&dir.0, None);
    args.extend(procfile_flags(&procfile));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(&args)
        .env("SWITCHYARD_API_KEY", KEY)
        .output()
        .expect("run switchyard");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not a Procfile (--procfile): line 1: expected `type: command`"),
        "{stderr}"
    );
}

/// A live tail of the app's `heroku[web.1]` and `app[web.1]` lines, read
/// as they come into the returned list (until the server closes the stream).
fn tail_web1(sy: &Proc) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    let (status, session) = api(
        sy.addr("api"),
        KEY,
        "POST",
        "/apps/demo/log-sessions",
        Some(json!({ "lines": 0, "tail": true })),
    )
    .expect("session");
    assert_eq!(status, 201, "{session}");
    let url = session["logplex_url"].as_str().expect("url").to_string();
    let path = url[url.find("/sessions/").expect("path")..].to_string();
    let mut stream = TcpStream::connect(sy.addr("logplex-http")).expect("connect");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").expect("request");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let into = seen.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            if line.contains("heroku[web.1]:") || line.contains("app[web.1]:") {
                into.lock().expect("lock").push(line);
            }
        }
    });
    seen
}

/// Requests through the router in a loop until `stop`, counting the
/// answers that are not 200.
fn load(
    router: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(u64, u64)> {
    std::thread::spawn(move || {
        let (mut total, mut failed) = (0u64, 0u64);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            total += 1;
            if via_router(router, "demo.localhost").is_none_or(|r| r.status != 200) {
                failed += 1;
            }
            // Paced, so the router's lines leave room in the app's
            // 1,500-line history for the dyno's own.
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        (total, failed)
    })
}

/// A config change replaces the web dyno. With preboot the new one boots
/// beside the old one and takes the traffic before the old one stops: a
/// load run through it sees no error. Without it, the old one stops first
/// (Heroku's behaviour).
#[test]
fn a_config_change_under_load_with_and_without_preboot() {
    for preboot in [true, false] {
        let dir = TempDir::new("dynos-preboot");
        let mut sy = serve_with(&dir, &["--dynos".into()]);
        let (api_addr, router) = (sy.addr("api"), sy.addr("router-http"));
        create_app(api_addr, KEY, "demo", None);
        if preboot {
            let (status, body) = api(
                api_addr,
                KEY,
                "PATCH",
                "/apps/demo/features/preboot",
                Some(json!({ "enabled": true })),
            )
            .expect("feature");
            assert_eq!(
                (status, body["enabled"].clone()),
                (200, json!(true)),
                "{body}"
            );
        }
        let procfile =
            json!({ "processes": { "web": web_command() }, "dir": dir.0.display().to_string() });
        let (status, _) =
            api(api_addr, KEY, "PUT", "/apps/demo/procfile", Some(procfile)).expect("procfile");
        assert_eq!(status, 200);
        eventually("web.1 answers", || {
            via_router(router, "demo.localhost").is_some_and(|r| r.status == 200)
        });
        let before = dynos(api_addr)[0].2.clone();

        let web1 = tail_web1(&sy);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let loader = load(router, stop.clone());
        let (status, _) = api(
            api_addr,
            KEY,
            "PATCH",
            "/apps/demo/config-vars",
            Some(json!({ "GREETING": "again" })),
        )
        .expect("config");
        assert_eq!(status, 200);
        eventually("the replacement is up and the old process is gone", || {
            let d = dynos(api_addr);
            d.len() == 1 && d[0].1 == "up" && d[0].2 != before && get(&before).is_none()
        });
        // A little traffic on the new dyno alone.
        eventually("the new dyno answers", || {
            get(&dynos(api_addr)[0].2).is_some()
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (total, failed) = loader.join().expect("load");
        eprintln!("preboot={preboot}: {failed} of {total} requests failed during the change");
        // The tail read the old instance's stop, the new one's start and
        // the new process's own output.
        eventually("the tail has the stop, the start and the output", || {
            let lines = web1.lock().expect("lock");
            lines.iter().any(|l| l.contains("Stopping all processes"))
                && lines
                    .iter()
                    .any(|l| l.contains("Starting process with command"))
                && lines
                    .iter()
                    .any(|l| l.contains("app[web.1]:") && l.contains("GREETING=again"))
        });
        let lines = web1.lock().expect("lock").clone();
        let at = |needle: &str| {
            lines
                .iter()
                .position(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("{needle:?} in {lines:#?}"))
        };
        let stopping = at("Stopping all processes");
        let second_start = at("Starting process with command");
        if preboot {
            assert!(total > 0);
            assert_eq!(failed, 0, "with preboot no request fails ({total} sent)");
            assert!(
                second_start < stopping,
                "the new one starts before the old one stops"
            );
        } else {
            assert!(
                stopping < second_start,
                "the old one stops before the new one starts"
            );
        }
        assert!(sy.terminate(), "a clean exit stops the dynos");
    }
}

/// The real heroku CLI's `ps`, `ps:scale`, `ps:restart` and `ps:stop`
/// against the dynos Switchyard runs.
#[test]
fn the_heroku_cli_scales_lists_restarts_and_stops_dynos() {
    use crate::heroku_cli::heroku;
    let dir = TempDir::new("dynos-cli");
    let procfile = dir.0.join("Procfile");
    std::fs::write(&procfile, format!("web: {}\n", web_command())).expect("Procfile");
    let mut sy = serve_with(&dir, &procfile_flags(&procfile));
    let api_addr = sy.addr("api");
    eventually("web.1 is up", || {
        dynos(api_addr)
            .iter()
            .any(|d| d.0 == "web.1" && d.1 == "up")
    });

    let out = heroku(api_addr, &["ps:scale", "web=2", "-a", "demo"]);
    assert!(out.contains("now running web at 2"), "{out}");
    eventually("heroku ps shows two dynos up", || {
        let ps = heroku(api_addr, &["ps", "-a", "demo"]);
        ps.contains("web.1: up") && ps.contains("web.2: up") && ps.contains("fake_web_dyno")
    });

    let before = recent_logs(&sy)
        .matches("heroku[web.2]: State changed from down to starting")
        .count();
    let out = heroku(
        api_addr,
        &["ps:restart", "--dyno-name", "web.2", "-a", "demo"],
    );
    assert!(out.contains("web.2"), "{out}");
    eventually("web.2 restarted", || {
        recent_logs(&sy)
            .matches("heroku[web.2]: State changed from down to starting")
            .count()
            > before
            && dynos(api_addr).iter().filter(|d| d.1 == "up").count() == 2
    });

    let out = heroku(api_addr, &["ps:stop", "--dyno-name", "web.1", "-a", "demo"]);
    assert!(out.contains("web.1"), "{out}");
    eventually("web.1 stopped and, still wanted, started again", || {
        recent_logs(&sy).contains("heroku[web.1]: Stopping all processes with SIGTERM")
            && dynos(api_addr).iter().filter(|d| d.1 == "up").count() == 2
    });

    let out = heroku(api_addr, &["ps:restart", "-a", "demo"]);
    assert!(out.contains("Restarting"), "{out}");
    eventually("every dyno restarted", || {
        let logs = recent_logs(&sy);
        logs.matches("State changed from down to starting").count() >= 4
            && dynos(api_addr).iter().filter(|d| d.1 == "up").count() == 2
    });
    assert!(sy.terminate(), "a clean exit stops the dynos");
}

/// `switchyard dynos` on etcd: the dyno manager apart from the control
/// node that took the Procfile and from the router that serves the dyno.
#[test]
fn the_dyno_manager_runs_apart_on_etcd() {
    use crate::etcd_store::{control_on, Etcd};
    let etcd_dir = TempDir::new("etcd");
    let etcd = Etcd::start(&etcd_dir.0);
    let control_dir = TempDir::new("dynos-control");
    let control = control_on(&etcd, "/fleet", &control_dir.0);
    let api_addr = control.addr("api");
    let store = etcd.url("/fleet");
    let mut manager = Proc::start(
        &["dynos", "--store", &store, "--admin", "127.0.0.1:0"].map(String::from),
        &[],
        &["admin"],
    );
    let router_dir = TempDir::new("dynos-router");
    let router_dir_arg = router_dir.0.display().to_string();
    let router = Proc::start(
        &[
            "router",
            "--store",
            &store,
            "--http",
            "127.0.0.1:0",
            "--https",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--data-dir",
            &router_dir_arg,
        ]
        .map(String::from),
        &[],
        &["router-http", "admin"],
    );
    create_app(api_addr, KEY, "demo", None);
    let dir = TempDir::new("dynos-apart");
    let procfile =
        json!({ "processes": { "web": web_command() }, "dir": dir.0.display().to_string() });
    let (status, body) =
        api(api_addr, KEY, "PUT", "/apps/demo/procfile", Some(procfile)).expect("procfile");
    assert_eq!(status, 200, "{body}");
    eventually("the router reaches the dyno the manager started", || {
        via_router(router.addr("router-http"), "demo.localhost")
            .is_some_and(|r| r.text() == "hello from web.1")
    });
    eventually("the control node lists it up", || {
        dynos(api_addr)
            .iter()
            .any(|d| d.0 == "web.1" && d.1 == "up")
    });
    // Stopped, the manager stops its dynos and takes them out of routing.
    assert!(manager.terminate(), "a clean exit");
    assert!(dynos(api_addr).is_empty() || dynos(api_addr).iter().all(|d| d.0 != "web.1"));
}

/// Other process types run too, and `heroku ps` lists them; the router
/// never routes to them.
#[test]
fn a_worker_runs_is_listed_and_not_routed() {
    let dir = TempDir::new("dynos-worker");
    let mut sy = serve_with(&dir, &["--dynos".into()]);
    let api_addr = sy.addr("api");
    create_app(api_addr, KEY, "demo", None);
    let procfile = json!({
        "processes": { "web": web_command(), "worker": "echo working as $DYNO; exec sleep 60" },
        "dir": dir.0.display().to_string(),
    });
    let (status, _) =
        api(api_addr, KEY, "PUT", "/apps/demo/procfile", Some(procfile)).expect("procfile");
    assert_eq!(status, 200);
    let (status, _) = api(
        api_addr,
        KEY,
        "PATCH",
        "/apps/demo/formation",
        Some(json!({ "updates": [{ "type": "worker", "quantity": 1 }] })),
    )
    .expect("scale");
    assert_eq!(status, 200);
    eventually("web.1 and worker.1 are up", || {
        let d = dynos(api_addr);
        d.iter().any(|d| d.0 == "web.1" && d.1 == "up")
            && d.iter().any(|d| d.0 == "worker.1" && d.1 == "up")
    });
    eventually("the worker's output is in the stream", || {
        recent_logs(&sy).contains("app[worker.1]: working as worker.1")
    });
    for _ in 0..10 {
        let r = via_router(sy.addr("router-http"), "demo.localhost").expect("routed");
        assert_eq!(r.text(), "hello from web.1", "only web dynos take requests");
    }
    assert!(sy.terminate(), "a clean exit");
}
