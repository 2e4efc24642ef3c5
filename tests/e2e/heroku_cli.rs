//! The real `heroku` CLI (npm package `heroku`, installed under
//! `target/npm` by `scripts/setup-test-deps.sh`) driving `switchyard serve`
//! through `HEROKU_HOST` and `HEROKU_API_KEY`, with its output checked as a
//! Heroku user would read it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use serde_json::json;

use crate::support::{api, eventually, patience, serve, Dyno, Proc, TempDir, KEY};

fn cli_path() -> PathBuf {
    if let Some(p) = std::env::var_os("SWITCHYARD_HEROKU_CLI") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/npm/node_modules/.bin/heroku")
}

pub(crate) struct Cli {
    bin: PathBuf,
    home: TempDir,
    host: String,
}

impl Cli {
    /// The CLI talking to the control API at `api_addr` with `KEY`.
    pub(crate) fn new(api_addr: std::net::SocketAddr) -> Cli {
        let bin = cli_path();
        assert!(
            bin.exists(),
            "the heroku CLI is not at {} — run scripts/setup-test-deps.sh (or set SWITCHYARD_HEROKU_CLI)",
            bin.display()
        );
        Cli {
            bin,
            home: TempDir::new("cli-home"),
            host: format!("http://{api_addr}"),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .env("HEROKU_HOST", &self.host)
            .env("HEROKU_API_KEY", KEY)
            .env("HOME", &self.home.0)
            .env("XDG_CONFIG_HOME", self.home.0.join(".config"))
            .env("XDG_CACHE_HOME", self.home.0.join(".cache"))
            .env("XDG_DATA_HOME", self.home.0.join(".local"))
            // Nothing phones home: no telemetry, analytics or update checks.
            .env("DISABLE_TELEMETRY", "true")
            .env("HEROKU_SKIP_ANALYTICS", "1")
            .env("HEROKU_DISABLE_AUTOUPDATE", "1")
            .env("HEROKU_SKIP_NEW_VERSION_CHECK", "true")
            .env("HEROKU_HIDE_UPDATED_MESSAGE", "1")
            .env("HIDE_HEROKU_RELEASE_NOTES", "true")
            .env("FORCE_COLOR", "0")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        c
    }

    /// Runs `heroku ARGS` (killed if it outlives twice the patience),
    /// asserts success, returns stdout + stderr.
    pub(crate) fn run(&self, args: &[&str]) -> String {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run heroku");
        let read = |mut r: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = r.read_to_string(&mut s);
                s
            })
        };
        let out = read(Box::new(child.stdout.take().expect("stdout")));
        let err = read(Box::new(child.stderr.take().expect("stderr")));
        let deadline = std::time::Instant::now() + patience() * 2;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break Some(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let text = format!(
            "{}{}",
            out.join().unwrap_or_default(),
            err.join().unwrap_or_default()
        );
        match status {
            Some(s) if s.success() => text,
            Some(s) => panic!("heroku {args:?} failed ({s}):\n{text}"),
            None => panic!("heroku {args:?} did not finish in time:\n{text}"),
        }
    }

    /// Runs and asserts that every `needle` is in the output.
    pub(crate) fn expect(&self, args: &[&str], needles: &[&str]) -> String {
        let text = self.run(args);
        for n in needles {
            assert!(
                text.contains(n),
                "heroku {args:?}: expected {n:?} in:\n{text}"
            );
        }
        text
    }
}

fn self_signed(dir: &Path, name: &str) -> (String, String) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args([
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            &format!("subjectAltName=DNS:{name}"),
        ])
        .stderr(Stdio::null())
        .status()
        .expect("openssl (scripts/setup-test-deps.sh installs it)");
    assert!(status.success());
    (cert.display().to_string(), key.display().to_string())
}

#[test]
fn the_heroku_cli_manages_apps_domains_drains_logs_and_more() {
    let dir = TempDir::new("cli");
    heroku_cli_session(&serve(&dir.0, None, Some(KEY)));
}

/// The heroku CLI's commands against `sy` (a `switchyard serve` started
/// with `KEY`, on whichever store).
pub(crate) fn heroku_cli_session(sy: &Proc) {
    session(sy.addr("api"), sy.addr("router-http").port(), Logs::Served);
}

/// The heroku CLI's commands against a `switchyard control` node on etcd
/// started with `KEY` and `--router-port router_port`, with no log router
/// running: `heroku logs` is refused with a clear error (with one, see
/// `logplex_role`).
pub(crate) fn heroku_cli_control_session(control: &Proc, router_port: u16) {
    session(control.addr("api"), router_port, Logs::NotServed);
}

/// Whether the process under test serves log sessions.
#[derive(PartialEq)]
enum Logs {
    Served,
    NotServed,
}

fn session(api_addr: std::net::SocketAddr, router_port: u16, logs: Logs) {
    let cli = Cli::new(api_addr);

    // Apps.
    cli.expect(
        &["apps:create", "demo"],
        &[
            "Creating demo... done",
            &format!("http://demo.localhost:{router_port}/"),
        ],
    );
    cli.expect(&["apps"], &["demo"]);
    cli.expect(
        &["apps:info", "-a", "demo"],
        &["=== demo", "Web URL:", "http://demo.localhost", "Region:"],
    );

    // Domains, exact and wildcard.
    cli.expect(
        &["domains:add", "www.example.com", "-a", "demo"],
        &["Adding www.example.com to demo... done", "demo.localhost"],
    );
    cli.expect(
        &["domains:add", "*.example.org", "-a", "demo"],
        &["Adding *.example.org to demo... done"],
    );
    cli.expect(
        &["domains", "-a", "demo"],
        &[
            "demo.localhost",
            "www.example.com",
            "*.example.org",
            "CNAME",
        ],
    );
    cli.expect(
        &["domains:remove", "www.example.com", "-a", "demo"],
        &["Removing www.example.com from demo... done"],
    );
    let domains = cli.run(&["domains", "-a", "demo"]);
    assert!(!domains.contains("www.example.com"), "{domains}");

    // Drains.
    // (A loopback listener held for the whole test and never read: the
    // drain never leaves the machine, and no other test can take the port.)
    let sink = std::net::TcpListener::bind("127.0.0.1:0").expect("bind drain sink");
    let drain = format!("syslog://{}", sink.local_addr().expect("addr"));
    cli.expect(
        &["drains:add", &drain, "-a", "demo"],
        &[&format!("Successfully added drain {drain}")],
    );
    cli.expect(&["drains", "-a", "demo"], &[&drain, "(d."]);
    cli.expect(
        &["drains:remove", &drain, "-a", "demo"],
        &[&format!("Successfully removed drain {drain}")],
    );

    // Maintenance.
    cli.expect(&["maintenance", "-a", "demo"], &["off"]);
    cli.expect(
        &["maintenance:on", "-a", "demo"],
        &["Enabling maintenance mode for demo... done"],
    );
    cli.expect(&["maintenance", "-a", "demo"], &["on"]);
    cli.expect(
        &["maintenance:off", "-a", "demo"],
        &["Disabling maintenance mode for demo... done"],
    );

    // Dynos (registered through the routing-table API) and formation.
    let dyno = Dyno::start("ok");
    let (status, _) = api(
        api_addr,
        KEY,
        "PUT",
        "/apps/demo/dynos/web.1",
        Some(json!({ "address": dyno.addr.to_string() })),
    )
    .expect("register");
    assert_eq!(status, 201);
    cli.expect(&["ps", "-a", "demo"], &["=== web", "web.1: up"]);
    cli.expect(
        &["ps:scale", "web=2", "-a", "demo"],
        &["Scaling dynos... done", "web at 2"],
    );

    // Config vars.
    cli.expect(
        &["config:set", "FOO=bar", "-a", "demo"],
        &["Setting FOO and restarting demo... done", "FOO: bar"],
    );
    cli.expect(
        &["config", "-a", "demo"],
        &["=== demo Config Vars", "FOO: bar"],
    );
    cli.expect(&["config:get", "FOO", "-a", "demo"], &["bar"]);
    cli.expect(
        &["config:unset", "FOO", "-a", "demo"],
        &["Unsetting FOO and restarting demo... done"],
    );

    // Features.
    cli.expect(&["features", "-a", "demo"], &["[ ] http-session-affinity"]);
    cli.expect(
        &["features:enable", "http-session-affinity", "-a", "demo"],
        &["Enabling http-session-affinity for demo... done"],
    );
    cli.expect(&["features", "-a", "demo"], &["[+] http-session-affinity"]);

    // Certificates (SNI endpoints).
    let certs = TempDir::new("cli-certs");
    let (cert, key) = self_signed(&certs.0, "secure.example.net");
    cli.expect(
        &["certs:add", &cert, &key, "-a", "demo"],
        &[
            "Adding SSL certificate to demo... done",
            "secure.example.net",
        ],
    );
    cli.expect(&["certs", "-a", "demo"], &["secure.example.net", "SNI"]);
    cli.expect(
        &["certs:remove", "-a", "demo", "--confirm", "demo"],
        &["Removing SSL certificate", "done"],
    );
    cli.expect(&["certs", "-a", "demo"], &["demo has no SSL certificates."]);

    // Releases: one per config or formation change.
    cli.expect(
        &["releases", "-a", "demo"],
        &[
            "Initial release",
            "Scale to web=2",
            "Set FOO config vars",
            "Remove FOO config vars",
        ],
    );

    if logs == Logs::Served {
        logs_and_tail(&cli, api_addr);
    } else {
        let out = cli
            .command(&["logs", "-a", "demo"])
            .output()
            .expect("heroku logs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "heroku logs without logplex: {text}");
        assert!(
            text.contains("No log router is live"),
            "heroku logs says why: {text}"
        );
    }

    // Rename and destroy.
    cli.expect(
        &["apps:rename", "demo2", "-a", "demo"],
        &["Renaming demo to demo2... done"],
    );
    eventually("the renamed app answers", || {
        api(api_addr, KEY, "GET", "/apps/demo2", None).is_ok_and(|r| r.0 == 200)
    });
    cli.expect(
        &["apps:destroy", "demo2", "--confirm", "demo2"],
        &["Destroying demo2", "done"],
    );
    cli.expect(&["apps"], &["You have no apps."]);
}

/// `heroku logs` (the history of `heroku[api]` lines), then a live tail.
fn logs_and_tail(cli: &Cli, api_addr: std::net::SocketAddr) {
    cli.expect(
        &["logs", "-a", "demo"],
        &[
            "heroku[api]: Set FOO config vars",
            "heroku[api]: Enable maintenance mode",
        ],
    );
    let mut tail = cli
        .command(&["logs", "--tail", "-a", "demo"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tail");
    let out = tail.stdout.take().expect("stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Changes keep coming until the tail shows one (it may connect late).
    let mut n = 0;
    let mut seen = false;
    let deadline = std::time::Instant::now() + patience();
    while !seen && std::time::Instant::now() < deadline {
        n += 1;
        api(
            api_addr,
            KEY,
            "PATCH",
            "/apps/demo/config-vars",
            Some(json!({ "TAILED": n.to_string() })),
        )
        .expect("config");
        while let Ok(line) = lines.recv_timeout(std::time::Duration::from_millis(500)) {
            if line.contains("heroku[api]: Set TAILED config vars") {
                seen = true;
                break;
            }
        }
    }
    let _ = tail.kill();
    let _ = tail.wait();
    assert!(seen, "heroku logs --tail showed a live line");
}

/// `heroku ARGS` against the control API at `api` with `KEY`, as a user
/// types it; asserts success and returns what it printed.
pub(crate) fn heroku(api: std::net::SocketAddr, args: &[&str]) -> String {
    let cli = Cli {
        bin: cli_path(),
        home: TempDir::new("cli-home"),
        host: format!("http://{api}"),
    };
    cli.run(args)
}
