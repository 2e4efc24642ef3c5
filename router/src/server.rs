//! Listeners: accept connections, speak HTTP/1.1 (and HTTP/2 where the
//! client asks for it), hand each request to the proxy, and shut down
//! gracefully.
//!
//! Shutdown: when the `shutdown` future resolves the listener closes, idle
//! keep-alive connections are closed, and requests in flight get
//! [`RouterConfig::shutdown_grace`] to finish. What is still running then is
//! cut, and each cut request is logged as H24.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::accept::{Acceptor, Throttle, WARN_EVERY};
use crate::connection::{serve_client, Client, ClientStream, Http, UpgradedClient};
use crate::exchange::Facts;
use crate::hcode::HCode;
use crate::live::ClientConn;
use crate::logline::{LogSink, RouterLine};
use crate::pages::PageCache;
use crate::table::Routes;
use crate::watch::ClientWatch;

/// Router-wide settings (per-app ones live in the route table).
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// How long a dyno that refused or timed out a connect is skipped (5 s).
    pub quarantine: Duration,
    /// Most connect attempts per request (10, or the number of up dynos).
    pub max_attempts: usize,
    /// Idle keep-alive connections to dynos older than this are dropped (90 s).
    pub pool_idle: Duration,
    /// How long in-flight requests may run after shutdown begins (25 s).
    pub shutdown_grace: Duration,
    /// A client must send a full request head within this (30 s).
    pub head_timeout: Duration,
    /// A client connection with no request in flight that moves no byte
    /// for this long is closed quietly (60 s, Heroku's keep-alive idle).
    /// HTTP/1.1 connections are usually closed sooner by `head_timeout`,
    /// which also times the gap before the next request head; HTTP/2 ones
    /// only by this.
    pub client_idle: Duration,
    /// Custom error and maintenance pages are fetched again once this old
    /// (10 min); a failed fetch is retried after this or 30 s, if sooner.
    pub page_refresh: Duration,
    /// Trust for fetching `https://` custom pages; `None` trusts the Web
    /// PKI roots.
    pub page_tls: Option<Arc<rustls::ClientConfig>>,
    /// Client connections open at once over all of this router's listeners
    /// and worker threads (unbounded by default; the binary sizes it from
    /// the file-descriptor limit, leaving room for a dyno-side connection
    /// each). At the cap the listeners stop accepting: new connections wait
    /// in the kernel's accept queue until one closes.
    pub max_client_connections: usize,
    /// When an idle HTTP/1 connection gives up its HTTP state (hyper's
    /// buffers, ~25 KB) until the client sends again (1 s). A connection
    /// parks as soon as a response is out and nothing is in flight; but
    /// one that spoke again within this of parking is taken for a busy
    /// client and keeps its state until this long passes (checked once per
    /// period, so one to two periods) with no request started — parking
    /// after every response costs about 10 % more instructions a request on
    /// a busy keep-alive connection (BENCHMARKS.md). Zero: always at once.
    pub park_idle_after: Duration,
    /// Who owns each app when several routers share the apps (app-owner
    /// routing, [`crate::forward`]); `None` routes every request here.
    pub owners: Option<Arc<dyn crate::forward::Owners>>,
    /// How many times a request may be forwarded between routers (2): one
    /// hop to the owner, and one more while two routers' views of the
    /// member set differ. A request at the limit that would be forwarded
    /// again gets H99.
    pub hop_limit: u8,
    /// How long to wait for an owner router to accept a connection before
    /// routing the request here instead (500 ms).
    pub forward_connect: Duration,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            quarantine: Duration::from_secs(5),
            max_attempts: 10,
            pool_idle: Duration::from_secs(90),
            shutdown_grace: Duration::from_secs(25),
            head_timeout: Duration::from_secs(30),
            client_idle: Duration::from_secs(60),
            page_refresh: Duration::from_secs(600),
            page_tls: None,
            max_client_connections: usize::MAX,
            park_idle_after: Duration::from_secs(1),
            owners: None,
            hop_limit: 2,
            forward_connect: Duration::from_millis(500),
        }
    }
}

/// What a typical router line needs: growing a buffer from empty cost as
/// much as formatting the line (`cargo bench --bench router`,
/// router_log_line).
const LINE_CAPACITY: usize = 384;

/// Connections the workers sharing a listener accept in a row, together,
/// before each lets its other tasks run: each takes its share (at least
/// one; see `serve_with`).
const ACCEPT_BURST: usize = 16;

thread_local! {
    /// The buffer each worker thread formats its router lines into, reused
    /// line after line: no allocation per request once warm.
    static LINE: std::cell::RefCell<String> =
        std::cell::RefCell::new(String::with_capacity(LINE_CAPACITY));
}

/// Everything a router listener needs: the published routes and the log sink.
pub struct Router {
    /// The published route table.
    pub routes: Arc<Routes>,
    /// Where router lines go.
    pub sink: Arc<dyn LogSink>,
    /// Router-wide settings.
    pub config: RouterConfig,
    /// Custom error pages.
    pub(crate) pages: Arc<PageCache>,
    /// Cancelled when shutdown's grace period ends: cut what remains (H24).
    force: CancellationToken,
    /// Set just before `force` is cancelled: read by requests without the
    /// lock the token's own check takes.
    forced: std::sync::atomic::AtomicBool,
    /// One permit per open client connection, at most
    /// [`RouterConfig::max_client_connections`]; taken before each accept.
    connections: Arc<Semaphore>,
    /// Client connections holding no HTTP state ([`Router::idle_connections`]).
    pub(crate) idle: AtomicUsize,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Router {
    /// A router over `routes`, logging to `sink`, with default settings.
    pub fn new(routes: Arc<Routes>, sink: Arc<dyn LogSink>) -> Arc<Self> {
        Self::with_config(routes, sink, RouterConfig::default())
    }

    /// A router with explicit settings.
    pub fn with_config(
        routes: Arc<Routes>,
        sink: Arc<dyn LogSink>,
        config: RouterConfig,
    ) -> Arc<Self> {
        let pages = Arc::new(PageCache::new(config.page_refresh, config.page_tls.clone()));
        let connections = Arc::new(Semaphore::new(
            config.max_client_connections.min(Semaphore::MAX_PERMITS),
        ));
        Arc::new(Router {
            connections,
            routes,
            sink,
            config,
            pages,
            force: CancellationToken::new(),
            forced: std::sync::atomic::AtomicBool::new(false),
            idle: AtomicUsize::new(0),
        })
    }

    /// Client connections the router holds no HTTP state for: those that
    /// have sent nothing yet, and HTTP/1 ones parked between requests
    /// ([`crate::connection`]).
    pub fn idle_connections(&self) -> usize {
        self.idle.load(Ordering::Relaxed)
    }

    /// True once shutdown's grace period has run out.
    pub fn is_forcing(&self) -> bool {
        self.forced.load(Ordering::Acquire)
    }

    /// Resolves when shutdown's grace period runs out.
    pub fn forcing(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.force.cancelled()
    }

    /// Writes one router line to the sink, formatted into this thread's
    /// reusable buffer, and records the request's metrics; the clock is
    /// read once for both.
    pub(crate) fn emit(&self, facts: &Facts, code: Option<HCode>, line: &RouterLine<'_>) {
        let ended = tokio::time::Instant::now();
        crate::metrics::request(facts, code, line, ended);
        LINE.with(|buf| match buf.try_borrow_mut() {
            Ok(mut text) => {
                text.clear();
                line.write_to(&mut text);
                self.sink.router_line_at(&facts.app_id, &text, ended);
            }
            // Only if a sink wrote a router line from inside `router_line`.
            Err(_) => {
                let mut text = String::with_capacity(LINE_CAPACITY);
                line.write_to(&mut text);
                self.sink.router_line_at(&facts.app_id, &text, ended);
            }
        });
    }
}

/// What the proxy knows about the client connection.
#[derive(Debug)]
pub struct ConnInfo {
    /// Client address.
    pub peer: SocketAddr,
    /// The client's IP as text, formatted once per connection (it goes
    /// into `X-Forwarded-For` and the log line of every request).
    pub peer_ip: Box<str>,
    /// `http` or `https`.
    pub proto: &'static str,
    /// The listener's port (for `X-Forwarded-Port`).
    pub port: u16,
    /// `tls1.2` / `tls1.3` on TLS connections.
    pub tls_version: Option<&'static str>,
    /// Write progress toward the client (H28 after the first byte).
    pub watch: Arc<ClientWatch>,
    /// The app this connection counts against (H22), set by its first
    /// request; released when the connection (and any upgrade) ends.
    pub client: OnceLock<Arc<ClientConn>>,
    /// Where the connection's task sends the socket after a `101` to an
    /// upgrade request ([`ConnInfo::on_upgrade`]); set only by such requests.
    upgrade: Mutex<Option<oneshot::Sender<UpgradedClient>>>,
    /// The timer its requests wait for their dyno's first byte under.
    pub timer: crate::clock::TimerSlot,
}

impl ConnInfo {
    /// Facts about a new client connection.
    pub fn new(
        peer: SocketAddr,
        proto: &'static str,
        port: u16,
        tls_version: Option<&'static str>,
    ) -> Self {
        ConnInfo {
            peer,
            peer_ip: ip_text(peer.ip()),
            proto,
            port,
            tls_version,
            watch: Arc::default(),
            client: OnceLock::new(),
            upgrade: Mutex::new(None),
            timer: crate::clock::TimerSlot::default(),
        }
    }

    /// The client's side of an upgrade this request asks for: resolves with
    /// the socket once the connection has written `101 Switching
    /// Protocols`, or fails if it ends another way.
    pub(crate) fn on_upgrade(&self) -> oneshot::Receiver<UpgradedClient> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut slot) = self.upgrade.lock() {
            *slot = Some(tx);
        }
        rx
    }

    /// The waiting upgrade, if a request asked for one.
    pub(crate) fn take_upgrade(&self) -> Option<oneshot::Sender<UpgradedClient>> {
        self.upgrade.lock().ok()?.take()
    }
}

/// A client address as `X-Forwarded-For` and `fwd=` carry it. IPv4 is
/// spelled by hand: `Display` goes through the formatter's padding for
/// every octet, ~1,300 instructions a new connection against ~100.
fn ip_text(ip: IpAddr) -> Box<str> {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string().into_boxed_str();
    };
    let mut buf = [0u8; 15];
    let mut n = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            buf[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            buf[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + octet % 10;
        n += 1;
    }
    // Digits and dots only.
    std::str::from_utf8(&buf[..n]).unwrap_or_default().into()
}

/// Serves plain HTTP (HTTP/1.1, and HTTP/2 with prior knowledge) on
/// `listener` until `shutdown` resolves, then drains gracefully.
pub async fn serve(
    listener: TcpListener,
    router: Arc<Router>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let port = listener.local_addr()?.port();
    serve_with(listener, router, shutdown, move |stream, peer| async move {
        let info = ConnInfo::new(peer, "http", port, None);
        Some((stream, info))
    })
    .await
}

/// The accept loop shared by plain and TLS listeners: `handshake` turns an
/// accepted TCP stream into the stream HTTP runs over (or drops it). Each
/// connection is then served by [`crate::connection`].
pub async fn serve_with<H, F, S>(
    listener: TcpListener,
    router: Arc<Router>,
    shutdown: impl Future<Output = ()> + Send,
    handshake: H,
) -> std::io::Result<()>
where
    H: Fn(tokio::net::TcpStream, SocketAddr) -> F + Send + Sync + 'static,
    F: Future<Output = Option<(S, ConnInfo)>> + Send + 'static,
    S: ClientStream,
{
    let http = Arc::new(Http::new());
    // Each connection's task holds a receiver; shutdown waits until all
    // are dropped.
    let (live, _) = tokio::sync::watch::channel(());
    let handshake = Arc::new(handshake);
    let open = Arc::new(crate::metrics::ConnectionGauge::default());
    let stop = CancellationToken::new();
    let mut acceptor = Acceptor::new(listener, "router");
    let nodelay_inherited = acceptor.nodelay_inherited();
    let burst = (ACCEPT_BURST / crate::workers::sharing()).max(1);
    let mut in_row = 0;
    let mut at_cap = Throttle::new(WARN_EVERY);
    tokio::pin!(shutdown);
    loop {
        // A place first, then the connection: at the cap, new connections
        // wait in the accept queue rather than take a descriptor.
        let place = match router.connections.clone().try_acquire_owned() {
            Ok(place) => place,
            Err(_) => {
                if let Some(n) = at_cap.hit() {
                    tracing::warn!(
                        times = n,
                        limit = router.config.max_client_connections,
                        "client connection limit reached; new connections wait to be accepted"
                    );
                }
                tokio::select! {
                    place = router.connections.clone().acquire_owned() => match place {
                        Ok(place) => place,
                        Err(_) => break,
                    },
                    _ = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = acceptor.accept() => accepted,
            _ = &mut shutdown => break,
        };
        if !nodelay_inherited {
            let _ = stream.set_nodelay(true);
        }
        let head_deadline = tokio::time::Instant::now() + router.config.head_timeout;
        let client = Client {
            router: router.clone(),
            http: http.clone(),
            stop: stop.clone(),
        };
        let alive = live.subscribe();
        let handshake = handshake.clone();
        let open = open.clone();
        // Boxed: the task then holds a pointer, where the connection's
        // whole state (several KiB) would be copied as the task is made
        // and again as it finishes.
        tokio::spawn(Box::pin(async move {
            let _place = place;
            let _alive = alive;
            let Some((io, info)) = (tokio::select! {
                r = handshake(stream, peer) => r,
                _ = client.stop.cancelled() => None,
            }) else {
                return;
            };
            let _open = open.open(info.proto);
            serve_client(io, info, client, head_deadline).await;
        }));
        // Worker threads share the listener: after its share of a burst,
        // a worker lets its other tasks (and so the other workers) at the
        // next connections, rather than draining a burst of connects onto
        // one thread (long-lived HTTP/2 connections would stay uneven).
        // Not after each one while it is alone or nearly: a yield is a
        // whole turn of the event loop, and under a burst of connects each
        // new connection waited that turn behind the busy ones (p99 4 ms
        // against HAProxy's 1.2 with a new connection per request,
        // BENCHMARKS.md).
        in_row += 1;
        if in_row >= burst {
            in_row = 0;
            tokio::task::yield_now().await;
        }
    }
    drop(acceptor);
    stop.cancel();
    tokio::select! {
        _ = live.closed() => {}
        _ = tokio::time::sleep(router.config.shutdown_grace) => {
            router.forced.store(true, Ordering::Release);
            router.force.cancel();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    #[test]
    fn ip_text_spells_addresses_as_display_does() {
        let mut ips: Vec<IpAddr> = Vec::new();
        // Every octet value in every position, beside the other octets'
        // widths (one, two and three digits).
        for v in 0..=255u8 {
            for other in [0u8, 7, 42, 255] {
                for pos in 0..4 {
                    let mut octets = [other; 4];
                    octets[pos] = v;
                    ips.push(std::net::Ipv4Addr::from(octets).into());
                }
            }
        }
        ips.push("::1".parse().expect("v6"));
        ips.push("2001:db8::8a2e:370:7334".parse().expect("v6"));
        ips.push("::ffff:10.0.0.1".parse().expect("mapped"));
        for ip in ips {
            assert_eq!(&*ip_text(ip), ip.to_string(), "{ip:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_connection_cap_new_clients_wait_to_be_accepted() {
        let routes = Arc::new(Routes::new(
            crate::RouteTable::builder().build().expect("table"),
        ));
        let config = RouterConfig {
            max_client_connections: 2,
            ..RouterConfig::default()
        };
        let router = Router::with_config(routes, Arc::new(crate::NullSink), config);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(serve(listener, router, std::future::pending()));
        // Two silent clients take both places.
        let first = TcpStream::connect(addr).await.expect("connect");
        let _second = TcpStream::connect(addr).await.expect("connect");
        let mut third = TcpStream::connect(addr).await.expect("connect");
        third
            .write_all(b"GET / HTTP/1.1\r\nHost: nosuch.localhost\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut answer = Vec::new();
        let waited =
            tokio::time::timeout(Duration::from_secs(10), third.read_to_end(&mut answer)).await;
        assert!(
            waited.is_err() && answer.is_empty(),
            "answered at the cap: {:?}",
            String::from_utf8_lossy(&answer)
        );
        // A place frees: the waiting client is accepted and served.
        drop(first);
        tokio::time::timeout(Duration::from_secs(10), third.read_to_end(&mut answer))
            .await
            .expect("served once a place is free")
            .expect("read");
        assert!(
            answer.starts_with(b"HTTP/1.1 404 "),
            "{:?}",
            String::from_utf8_lossy(&answer)
        );
    }
}
