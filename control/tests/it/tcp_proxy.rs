//! A real TCP proxy between a client and etcd that the test can cut (every
//! connection closed, new ones refused: a partition) and point elsewhere
//! (etcd restarted on other ports), so a follower keeps one address while
//! the network under it fails.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};

/// The proxy; its task ends when it is dropped.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

struct State {
    target: Mutex<String>,
    cut: AtomicBool,
    /// Bumped by [`Proxy::cut`]: every open pipe ends.
    generation: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    /// Forwards a new port on 127.0.0.1 to `target` (`HOST:PORT`).
    pub async fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let state = Arc::new(State {
            target: Mutex::new(target.to_string()),
            cut: AtomicBool::new(false),
            generation: tokio::sync::watch::channel(0).0,
        });
        let s = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if s.cut.load(Ordering::Acquire) {
                    drop(client);
                    continue;
                }
                let target = s.target.lock().expect("target").clone();
                let mut ended = s.generation.subscribe();
                tokio::spawn(async move {
                    let Ok(mut upstream) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let mut client = client;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                        _ = ended.changed() => {}
                    }
                });
            }
        });
        Proxy { addr, state, task }
    }

    /// `etcd://<proxy>/<prefix>` for a store or a follower.
    pub fn etcd_config(&self, prefix: &str) -> control::EtcdConfig {
        control::EtcdConfig::parse_url(&format!("etcd://{}{prefix}", self.addr)).expect("url")
    }

    /// Closes every connection and refuses new ones until [`Proxy::heal`].
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::Release);
        self.state.generation.send_modify(|g| *g += 1);
    }

    /// Accepts and forwards again.
    pub fn heal(&self) {
        self.state.cut.store(false, Ordering::Release);
    }

    /// Forwards new connections to `target` from now on.
    pub fn retarget(&self, target: &str) {
        *self.state.target.lock().expect("target") = target.to_string();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.state.generation.send_modify(|g| *g += 1);
    }
}
