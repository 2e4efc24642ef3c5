//! A real ACME CA for tests: Debian's `pebble` (installed by
//! `scripts/setup-test-deps.sh`), with a DNS responder of our own that
//! points names at 127.0.0.1, so pebble validates HTTP-01 against a real
//! router on its real port.
//!
//! Ports: pebble listens on `127.0.0.1:0` (its ACME API and its management
//! API both) and does not say which port it got, so we read its listening
//! sockets from `/proc` (the inodes behind `/proc/<pid>/fd` matched against
//! `/proc/net/tcp`): no port is ever chosen for it, freed and re-bound.
//! The router port pebble validates on (`httpPort`) is one the test holds
//! bound. The DNS responder is a UDP socket bound to port 0 and kept.
//!
//! Shared with the end-to-end tests through `#[path]`.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Names starting with this label do not resolve (NXDOMAIN): a domain
/// that cannot validate.
pub const UNRESOLVABLE: &str = "nxdomain";

/// A running pebble; killed when dropped.
pub struct Pebble {
    child: Child,
    /// `https://127.0.0.1:PORT/dir`.
    pub directory: String,
    /// The CA of pebble's own HTTPS certificate (PEM file): trust it to
    /// talk to pebble (`--acme-ca-root`).
    pub tls_root: PathBuf,
    /// The root pebble issues under (PEM file): trust it to check what
    /// pebble issued.
    pub issuing_root: PathBuf,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn patience() -> Duration {
    std::env::var("SWITCHYARD_TEST_PATIENCE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(30))
}

impl Pebble {
    /// Starts pebble with its files in `dir`, validating HTTP-01 on
    /// `http_port` of whatever `dns` resolves names to, and issuing
    /// certificates valid for `validity` (its default when `None`).
    pub fn start(
        dir: &Path,
        dns: SocketAddr,
        http_port: u16,
        validity: Option<Duration>,
    ) -> Pebble {
        std::fs::create_dir_all(dir).expect("pebble dir");
        let (cert, key) = (dir.join("pebble.pem"), dir.join("pebble.key"));
        let (ca, ca_key) = (dir.join("pebble-ca.pem"), dir.join("pebble-ca.key"));
        // A CA, and a leaf for pebble's HTTPS under it (a TLS client will
        // not take a CA certificate as a server's).
        ec_cert("/CN=pebble test CA", &[], &ca_key, &ca);
        let issuer = ["-CA", &path(&ca), "-CAkey", &path(&ca_key)].map(str::to_string);
        let leaf = [
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ]
        .map(str::to_string);
        let extra: Vec<&str> = issuer.iter().chain(&leaf).map(String::as_str).collect();
        ec_cert("/CN=localhost", &extra, &key, &cert);
        let mut config = serde_json::json!({ "pebble": {
            "listenAddress": "127.0.0.1:0",
            "managementListenAddress": "127.0.0.1:0",
            "certificate": cert, "privateKey": key,
            "httpPort": http_port, "tlsPort": 0,
            "ocspResponderURL": "", "externalAccountBindingRequired": false,
        }});
        if let Some(v) = validity {
            config["pebble"]["certificateValidityPeriod"] = v.as_secs().into();
        }
        let config_path = dir.join("pebble-config.json");
        std::fs::write(&config_path, config.to_string()).expect("pebble config");
        let mut child = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .arg("-dnsserver")
            .arg(dns.to_string())
            // Validate at once, accept every nonce, reuse no authorization:
            // each order runs a real HTTP-01 validation.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pebble (scripts/setup-test-deps.sh installs it)");
        let stdout = child.stdout.take().expect("stdout");
        // Keep reading pebble's log so a full pipe never stalls it.
        std::thread::spawn(move || for _ in BufReader::new(stdout).lines() {});
        let pid = child.id();
        let deadline = Instant::now() + patience();
        let ports = loop {
            let ports = listening_ports(pid);
            if ports.len() >= 2 {
                break ports;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("pebble exited: {status}");
            }
            assert!(Instant::now() < deadline, "pebble did not listen");
            std::thread::sleep(Duration::from_millis(10));
        };
        let get = |port: u16, at: &str| {
            curl(&[
                "--cacert",
                &path(&ca),
                &format!("https://127.0.0.1:{port}{at}"),
            ])
        };
        let acme = *ports
            .iter()
            .find(|p| get(**p, "/dir").is_some_and(|d| d.contains("newOrder")))
            .expect("one of pebble's ports serves the ACME directory");
        let management = *ports.iter().find(|p| **p != acme).expect("management port");
        let root = get(management, "/roots/0").expect("pebble's issuing root");
        let issuing_root = dir.join("issuing-root.pem");
        std::fs::write(&issuing_root, root).expect("write root");
        Pebble {
            child,
            directory: format!("https://127.0.0.1:{acme}/dir"),
            tls_root: ca,
            issuing_root,
        }
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// A P-256 certificate for `subject` good for two days (self-signed
/// unless `extra` names a `-CA`), its key at `key` and itself at `out`.
fn ec_cert(subject: &str, extra: &[&str], key: &Path, out: &Path) {
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", subject])
        .args(extra)
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(out)
        .stderr(Stdio::null())
        .status()
        .expect("openssl (scripts/setup-test-deps.sh installs it)");
    assert!(
        status.success(),
        "openssl made no certificate for {subject}"
    );
}

/// `curl -s ARGS`: the body when curl succeeded (whatever the status).
pub fn curl(args: &[&str]) -> Option<String> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .expect("curl (scripts/setup-test-deps.sh installs it)");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// TCP ports process `pid` listens on, from `/proc`.
fn listening_ports(pid: u32) -> Vec<u16> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let inodes: HashSet<String> = fds
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(
                link.strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is f[1] (`HEXIP:HEXPORT`), st f[3] (0A: LISTEN), inode f[9].
            if f.len() > 9 && f[3] == "0A" && inodes.contains(f[9]) {
                let port = f[1]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok());
                ports.extend(port);
            }
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// A DNS responder on 127.0.0.1 (UDP, port 0): every `A` question is
/// answered 127.0.0.1, except names under [`UNRESOLVABLE`], which get
/// NXDOMAIN; other types get an empty answer. It serves for the rest of
/// the test process.
pub fn dns() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind dns");
    let addr = socket.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = socket.recv_from(&mut buf) {
            if let Some(answer) = answer(&buf[..n]) {
                let _ = socket.send_to(&answer, peer);
            }
        }
    });
    addr
}

/// The response to one DNS query (RFC 1035 §4), or `None` for garbage.
fn answer(query: &[u8]) -> Option<Vec<u8>> {
    let mut at = 12;
    let mut first_label = None;
    loop {
        let len = *query.get(at)? as usize;
        if len == 0 {
            break;
        }
        let label = query.get(at + 1..at + 1 + len)?;
        first_label.get_or_insert_with(|| String::from_utf8_lossy(label).to_ascii_lowercase());
        at += 1 + len;
    }
    let question_end = at + 5;
    let qtype = u16::from_be_bytes([*query.get(at + 1)?, *query.get(at + 2)?]);
    let question = query.get(12..question_end)?;
    let nxdomain = first_label.as_deref() == Some(UNRESOLVABLE);
    let a = qtype == 1 && !nxdomain;
    let mut out = Vec::with_capacity(question_end + 16);
    out.extend_from_slice(&query[..2]); // id
    out.extend_from_slice(&[0x81, if nxdomain { 0x83 } else { 0x80 }]); // QR RD, RCODE
    out.extend_from_slice(&[0, 1, 0, u8::from(a), 0, 0, 0, 0]);
    out.extend_from_slice(question);
    if a {
        // Name pointer to the question, A, IN, TTL 60, 4 bytes: 127.0.0.1.
        out.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
    }
    Some(out)
}
