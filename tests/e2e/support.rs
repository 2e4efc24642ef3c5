//! Running the binary, a tiny blocking HTTP/1.1 client, test dynos and
//! the `eventually` helper.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const KEY: &str = "e2e-key-0123456789abcdef";

#[path = "../support/wait.rs"]
mod wait;

pub use wait::{eventually_blocking as eventually, patience};

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "switchyard-e2e-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).expect("mkdir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `switchyard` process and the addresses it announced.
pub struct Proc {
    child: Child,
    pub addrs: HashMap<String, SocketAddr>,
    /// Every stdout line so far (including the announcements).
    pub stdout: Vec<String>,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    /// Starts `switchyard ARGS`, waiting until every role in `roles` announced
    /// its address.
    pub fn start(args: &[String], env: &[(&str, &str)], roles: &[&str]) -> Proc {
        Proc::start_under(&[], args, env, roles)
    }

    /// [`Proc::start`] through `wrapper`, a command that runs the binary it
    /// is given (`prlimit --nofile=1024:1024`, say) in the same process.
    pub fn start_under(
        wrapper: &[&str],
        args: &[String],
        env: &[(&str, &str)],
        roles: &[&str],
    ) -> Proc {
        Proc::spawn(wrapper, args, env, roles, Stdio::null())
    }

    /// [`Proc::start`] with `socket` handed over for `role` (systemd-style
    /// socket activation, as descriptor 0): the caller keeps its own handle,
    /// so the port stays theirs across restarts of the process.
    pub fn start_with_socket(
        args: &[String],
        env: &[(&str, &str)],
        roles: &[&str],
        role: &str,
        socket: &TcpListener,
    ) -> Proc {
        let handed = socket.try_clone().expect("clone the socket");
        let mut env = env.to_vec();
        env.extend([
            ("LISTEN_FDS", "1"),
            ("LISTEN_FDS_FIRST_FD", "0"),
            ("LISTEN_FDNAMES", role),
        ]);
        let stdin = Stdio::from(std::os::fd::OwnedFd::from(handed));
        Proc::spawn(&[], args, &env, roles, stdin)
    }

    fn spawn(
        wrapper: &[&str],
        args: &[String],
        env: &[(&str, &str)],
        roles: &[&str],
        stdin: Stdio,
    ) -> Proc {
        let binary = env!("CARGO_BIN_EXE_switchyard");
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut cmd = Command::new(program);
                cmd.args(rest).arg(binary);
                cmd
            }
            None => Command::new(binary),
        };
        // `E2E_LOG` (a `SWITCHYARD_LOG` filter) lets a failing test's
        // processes say more, e.g. `E2E_LOG=info,logplex=debug`.
        let log = std::env::var("E2E_LOG").unwrap_or_else(|_| "warn,logplex::drain=error".into());
        cmd.args(args)
            .env_remove("SWITCHYARD_API_KEY")
            .env("SWITCHYARD_LOG", log)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn switchyard");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = Proc {
            child,
            addrs: HashMap::new(),
            stdout: Vec::new(),
            lines,
        };
        let deadline = Instant::now() + patience();
        while !roles.iter().all(|r| p.addrs.contains_key(*r)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match p.lines.recv_timeout(left) {
                Ok(line) => p.take(line),
                Err(_) => {
                    let status = p.child.try_wait().ok().flatten();
                    panic!(
                        "switchyard did not announce {roles:?} (exit: {status:?}); stdout: {:?}",
                        p.stdout
                    );
                }
            }
        }
        p
    }

    fn take(&mut self, line: String) {
        if let Some(rest) = line.strip_prefix("listening role=") {
            if let Some((role, addr)) = rest.split_once(" addr=") {
                if let Ok(a) = addr.trim().parse() {
                    self.addrs.insert(role.to_string(), a);
                }
            }
        }
        self.stdout.push(line);
    }

    /// Lines printed since the last call.
    pub fn drain_stdout(&mut self) -> &[String] {
        while let Ok(l) = self.lines.try_recv() {
            self.take(l);
        }
        &self.stdout
    }

    pub fn addr(&self, role: &str) -> SocketAddr {
        self.addrs[role]
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits; returns whether it exited successfully in time.
    pub fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + patience();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                self.kill9();
                return false;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
    }
}

/// `switchyard serve` on port 0 everywhere (the API on `api` when given).
pub fn serve(data_dir: &Path, api: Option<SocketAddr>, key: Option<&str>) -> Proc {
    let args = serve_args(data_dir, api);
    let env: Vec<(&str, &str)> = key
        .map(|k| vec![("SWITCHYARD_API_KEY", k)])
        .unwrap_or_default();
    Proc::start(&args, &env, SERVE_ROLES)
}

/// [`serve`] with the control API on `api`, a socket the caller holds and
/// hands over (socket activation): a restart finds the port where it was,
/// and no other process can have taken it in between.
pub fn serve_on(data_dir: &Path, api: &TcpListener, key: &str) -> Proc {
    Proc::start_with_socket(
        &serve_args(data_dir, None),
        &[("SWITCHYARD_API_KEY", key)],
        SERVE_ROLES,
        "api",
        api,
    )
}

/// The roles [`serve`] waits for.
pub const SERVE_ROLES: &[&str] = &["router-http", "api", "logplex-http", "admin"];

/// The arguments of [`serve`]: `serve` on port 0 everywhere (the API on
/// `api` when given), state in `data_dir`.
pub fn serve_args(data_dir: &Path, api: Option<SocketAddr>) -> Vec<String> {
    let any = "127.0.0.1:0".to_string();
    let api = api.map_or(any.clone(), |a| a.to_string());
    let mut args: Vec<String> = vec![
        "serve".into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
    ];
    for flag in [
        "--http",
        "--https",
        "--logplex-http",
        "--syslog",
        "--syslog-tls",
        "--admin",
    ] {
        args.push(flag.into());
        args.push(any.clone());
    }
    args.push("--api".into());
    args.push(api);
    args
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request with `Connection: close`.
pub fn http(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, patience())?;
    s.set_read_timeout(Some(patience()))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse(&raw).ok_or_else(|| {
        std::io::Error::other(format!("bad response: {:?}", String::from_utf8_lossy(&raw)))
    })
}

fn parse(raw: &[u8]) -> Option<Response> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body)?;
    }
    Some(Response { status, body })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(
            std::str::from_utf8(&b[..nl])
                .ok()?
                .split(';')
                .next()?
                .trim(),
            16,
        )
        .ok()?;
        b = &b[nl + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// A control-API call with the key.
pub fn api(
    addr: SocketAddr,
    key: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> std::io::Result<(u16, Value)> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = format!("Bearer {key}");
    let r = http(
        addr,
        method,
        &addr.to_string(),
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )?;
    Ok((r.status, r.json()))
}

/// A test dyno: answers every request with `200` and `body`, except a
/// request for `/status/NNN`, which it answers with status NNN.
pub struct Dyno {
    pub addr: SocketAddr,
}

impl Dyno {
    pub fn start(body: &'static str) -> Dyno {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind dyno");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(match s.try_clone() {
                        Ok(c) => c,
                        Err(_) => return,
                    });
                    loop {
                        // Read one request head (the tests send no bodies).
                        let mut request_line = None;
                        loop {
                            let mut line = String::new();
                            match reader.read_line(&mut line) {
                                Ok(0) | Err(_) => return,
                                Ok(_) => {}
                            }
                            if line == "\r\n" || line == "\n" {
                                break;
                            }
                            request_line.get_or_insert(line);
                        }
                        let Some(request_line) = request_line else {
                            return;
                        };
                        let status = request_line
                            .split(' ')
                            .nth(1)
                            .and_then(|p| p.strip_prefix("/status/"))
                            .and_then(|s| s.parse::<u16>().ok())
                            .filter(|s| (200..600).contains(s))
                            .unwrap_or(200);
                        let resp = format!(
                            "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(resp.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Dyno { addr }
    }
}

/// GET `/` on the router for `host`; `None` on a connection error.
pub fn via_router(router: SocketAddr, host: &str) -> Option<Response> {
    http(router, "GET", host, "/", &[], b"").ok()
}

/// Creates app `name` and, with `dyno`, registers it as `web.1` in state `up`.
pub fn create_app(api_addr: SocketAddr, key: &str, name: &str, dyno: Option<SocketAddr>) {
    let (status, body) = api(
        api_addr,
        key,
        "POST",
        "/apps",
        Some(serde_json::json!({ "name": name })),
    )
    .expect("create app");
    assert_eq!(status, 201, "{body}");
    if let Some(addr) = dyno {
        let (status, body) = api(
            api_addr,
            key,
            "PUT",
            &format!("/apps/{name}/dynos/web.1"),
            Some(serde_json::json!({ "address": addr.to_string(), "state": "up" })),
        )
        .expect("register dyno");
        assert_eq!(status, 201, "{body}");
    }
}

/// A real syslog drain endpoint: a TCP listener held for the whole test,
/// collecting every byte any connection sends it.
pub struct SyslogSink {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    received: mpsc::Receiver<Vec<u8>>,
    bytes: Vec<u8>,
}

impl SyslogSink {
    pub fn start() -> SyslogSink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind syslog sink");
        let addr = listener.local_addr().expect("addr");
        let (tx, received) = mpsc::channel::<Vec<u8>>();
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accepted = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 8192];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        SyslogSink {
            addr,
            connections,
            received,
            bytes: Vec::new(),
        }
    }

    /// `syslog://ADDR`, for `POST /apps/{app}/log-drains`.
    pub fn url(&self) -> String {
        format!("syslog://{}", self.addr)
    }

    /// Everything received so far.
    pub fn text(&mut self) -> String {
        while let Ok(b) = self.received.try_recv() {
            self.bytes.extend_from_slice(&b);
        }
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}
