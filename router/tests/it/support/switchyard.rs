//! A router under test: real listener on 127.0.0.1:0, in-memory log sink.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use router::{AppSpec, MemorySink, RouteTable, Router, RouterConfig, Routes};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Builder for a running router.
pub struct Switchyard {
    apps: Vec<AppSpec>,
    certs: Vec<router::CertSpec>,
    tls: Option<router::TlsSettings>,
    config: RouterConfig,
    workers: Option<usize>,
}

/// A running router.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where HTTPS listens, if enabled.
    pub tls_addr: Option<SocketAddr>,
    /// Every router line.
    pub sink: Arc<MemorySink>,
    /// The published routes (publish to change them).
    pub routes: Arc<Routes>,
    /// The router itself.
    pub router: Arc<Router>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Switchyard {
    /// No apps, default config with short quarantine.
    pub fn new() -> Self {
        Switchyard {
            apps: Vec::new(),
            certs: Vec::new(),
            tls: None,
            config: RouterConfig::default(),
            workers: None,
        }
    }

    /// Adds an app.
    pub fn app(mut self, app: AppSpec) -> Self {
        self.apps.push(app);
        self
    }

    /// Also serves HTTPS with these settings.
    pub fn tls(mut self, settings: router::TlsSettings) -> Self {
        self.tls = Some(settings);
        self
    }

    /// Adds an SNI certificate to the table.
    pub fn cert(mut self, cert: router::CertSpec) -> Self {
        self.certs.push(cert);
        self
    }

    /// Sets the shutdown grace.
    pub fn grace(mut self, d: Duration) -> Self {
        self.config.shutdown_grace = d;
        self
    }

    /// Sets how long a dyno that refused or timed out a connect is skipped.
    pub fn quarantine(mut self, d: Duration) -> Self {
        self.config.quarantine = d;
        self
    }

    /// Sets the most connect attempts per request.
    pub fn max_attempts(mut self, n: usize) -> Self {
        self.config.max_attempts = n;
        self
    }

    /// Sets how long a client has to send a request head (slowloris).
    pub fn head_timeout(mut self, d: Duration) -> Self {
        self.config.head_timeout = d;
        self
    }

    /// Closes client connections idle (nothing in flight, no bytes) this long.
    pub fn client_idle(mut self, d: Duration) -> Self {
        self.config.client_idle = d;
        self
    }

    /// Fetches custom pages again after `refresh`, trusting `tls` for https.
    pub fn pages(mut self, refresh: Duration, tls: Arc<rustls::ClientConfig>) -> Self {
        self.config.page_refresh = refresh;
        self.config.page_tls = Some(tls);
        self
    }

    /// Sets how soon an idle HTTP/1 connection gives up its HTTP state.
    pub fn park_idle_after(mut self, d: Duration) -> Self {
        self.config.park_idle_after = d;
        self
    }

    /// Shares apps with other routers: `owners` says which router owns
    /// each, and requests for another's apps are forwarded there.
    pub fn owners(mut self, owners: Arc<dyn router::forward::Owners>, hop_limit: u8) -> Self {
        self.config.owners = Some(owners);
        self.config.hop_limit = hop_limit;
        self
    }

    /// Serves plain HTTP on `n` worker threads (one runtime and one
    /// handle to the listener each), as the binary does.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// Starts the router.
    pub async fn start(self) -> Running {
        let table = RouteTable::builder()
            .apps(self.apps)
            .certs(self.certs)
            .build()
            .expect("table");
        let routes = Arc::new(Routes::new(table));
        let sink = Arc::new(MemorySink::default());
        let router = Router::with_config(routes.clone(), sink.clone(), self.config);
        let handle = router.clone();
        let (tx, rx) = oneshot::channel::<()>();
        if let Some(n) = self.workers {
            let listeners = router::workers::bind_shared("127.0.0.1:0".parse().expect("addr"), n)
                .expect("bind");
            let addr = listeners[0].local_addr().expect("addr");
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let task = tokio::spawn(async move {
                let serving = router::workers::run_per_thread("router-test", listeners, {
                    let router = router.clone();
                    move |l| {
                        let mut stop = stop_rx.clone();
                        router::serve(l, router.clone(), async move {
                            let _ = stop.wait_for(|s| *s).await;
                        })
                    }
                });
                tokio::spawn(async move {
                    let _ = rx.await;
                    let _ = stop_tx.send(true);
                });
                serving.await
            });
            return Running {
                addr,
                tls_addr: None,
                sink,
                routes,
                router: handle,
                stop: Some(tx),
                task: Some(task),
            };
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut tls_addr = None;
        if let Some(settings) = self.tls {
            let config = router::tls::server_config(routes.clone(), &settings).expect("tls config");
            let tls_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            tls_addr = Some(tls_listener.local_addr().expect("addr"));
            let router = router.clone();
            // The HTTPS listener lives as long as the test's runtime.
            tokio::spawn(router::serve_tls(
                tls_listener,
                router,
                config,
                std::future::pending(),
            ));
        }
        let task = tokio::spawn(router::serve(listener, router, async move {
            let _ = rx.await;
        }));
        Running {
            addr,
            tls_addr,
            sink,
            routes,
            router: handle,
            stop: Some(tx),
            task: Some(task),
        }
    }
}

impl Running {
    /// Router lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.sink.texts()
    }

    /// Waits until `n` lines are logged and returns them.
    pub async fn wait_lines(&self, n: usize) -> Vec<String> {
        crate::eventually("self.lines().len() >= n", || self.lines().len() >= n).await;
        self.lines()
    }

    /// Starts graceful shutdown; returns the serve task.
    pub fn shutdown(&mut self) -> JoinHandle<std::io::Result<()>> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.take().expect("running")
    }

    /// Replaces the table.
    pub fn publish(&self, apps: Vec<AppSpec>) {
        self.publish_with_certs(apps, Vec::new());
    }

    /// Replaces the table, certificates included.
    pub fn publish_with_certs(&self, apps: Vec<AppSpec>, certs: Vec<router::CertSpec>) {
        self.routes
            .publish(
                RouteTable::builder()
                    .revision(self.routes.load().revision() + 1)
                    .apps(apps)
                    .certs(certs),
            )
            .expect("publish");
    }
}

/// Replaces the parts of a router line that vary run to run.
pub fn normalize(line: &str) -> String {
    let re = regex::Regex::new(r"request_id=[0-9a-f-]{36}").expect("re");
    let line = re.replace_all(line, "request_id=ID");
    let re = regex::Regex::new(r"(connect|service|wait)=[0-9]+ms").expect("re");
    re.replace_all(&line, "${1}=Nms").into_owned()
}
