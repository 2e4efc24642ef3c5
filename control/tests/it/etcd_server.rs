//! A real etcd (Debian's `/usr/bin/etcd`, installed by
//! `scripts/setup-test-deps.sh`) on loopback with a temporary data dir.
//!
//! etcd cannot be handed a bound listener and does not report the port it
//! picks for `:0`, so the ports are chosen at random below the kernel's
//! ephemeral range and etcd binds them itself; we never bind, free and
//! re-bind a port. If another process holds one, etcd exits with "address
//! already in use" and we start it again on other ports, so the race is
//! harmless. etcd counts as started only once its own log says it serves
//! clients on *our* port, never because something answers on it.
//!
//! Shared with the end-to-end tests through `#[path]`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running etcd member; killed (SIGKILL) when dropped.
pub struct Etcd {
    child: Child,
    /// `127.0.0.1:PORT` clients connect to.
    pub endpoint: String,
    data_dir: PathBuf,
}

impl Etcd {
    /// Starts etcd with its data in `data_dir` (created if missing).
    pub fn start(data_dir: &Path) -> Etcd {
        for _ in 0..20 {
            if let Some(etcd) = Self::try_start(data_dir) {
                return etcd;
            }
        }
        panic!("etcd did not start in 20 tries (is /usr/bin/etcd installed? scripts/setup-test-deps.sh)");
    }

    fn try_start(data_dir: &Path) -> Option<Etcd> {
        let client = rand::random_range(10_000u16..30_000);
        let peer = client + 1;
        let c = format!("http://127.0.0.1:{client}");
        let p = format!("http://127.0.0.1:{peer}");
        let mut child = Command::new("etcd")
            .arg("--name=t")
            .arg(format!("--data-dir={}", data_dir.display()))
            .arg(format!("--listen-client-urls={c}"))
            .arg(format!("--advertise-client-urls={c}"))
            .arg(format!("--listen-peer-urls={p}"))
            .arg(format!("--initial-advertise-peer-urls={p}"))
            .arg(format!("--initial-cluster=t={p}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn etcd (is /usr/bin/etcd installed? scripts/setup-test-deps.sh)");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        let serving = format!("serving insecure client requests on 127.0.0.1:{client}");
        // Reads etcd's log for the whole life of the process, so a full pipe
        // never stalls it; reports the first line that decides the start.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains(&serving) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(true);
                    }
                } else if line.contains("address already in use") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(false);
                    }
                }
            }
            if let Some(tx) = tx {
                let _ = tx.send(false);
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(true) => Some(Etcd {
                child,
                endpoint: format!("127.0.0.1:{client}"),
                data_dir: data_dir.to_path_buf(),
            }),
            Ok(false) => {
                let _ = child.kill();
                let _ = child.wait();
                None
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("etcd started but never said it serves clients within 30 s");
            }
        }
    }

    /// `etcd://127.0.0.1:PORT/<prefix>` for `--store`.
    pub fn url(&self, prefix: &str) -> String {
        format!("etcd://{}{prefix}", self.endpoint)
    }

    /// The store configuration for this member under `prefix`.
    pub fn config(&self, prefix: &str) -> control::EtcdConfig {
        control::EtcdConfig::parse_url(&self.url(prefix)).expect("etcd url")
    }

    /// `kill -9`; the member stays dead.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9 etcd");
        self.child.wait().expect("reap etcd");
    }

    /// `kill -9`, then a new etcd on the same data dir (on new ports: the
    /// endpoint changes).
    pub fn kill9_and_restart(&mut self) {
        self.kill9();
        *self = Etcd::start(&self.data_dir.clone());
    }

    /// Freezes etcd (SIGSTOP): its sockets stay open and it answers nothing,
    /// like a hung process or a frozen VM.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused etcd run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(sig)
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} etcd");
    }

    /// Compacts etcd's history up to its current revision with `etcdctl`,
    /// from outside the store under test.
    pub fn compact_all(&self) {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints=http://{}", self.endpoint))
            .args(["endpoint", "status", "--write-out=json"])
            .output()
            .expect("etcdctl endpoint status");
        let status: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("etcdctl status json");
        let rev = status[0]["Status"]["header"]["revision"]
            .as_u64()
            .expect("header revision");
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints=http://{}", self.endpoint))
            .args(["compact", &rev.to_string(), "--physical"])
            .output()
            .expect("etcdctl compact");
        assert!(out.status.success(), "etcdctl compact: {out:?}");
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
