//! Scenario builders: a running logplex on 127.0.0.1:0, syslog and HTTPS
//! receivers, certificates, a raw HTTP client, and `eventually`.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use logplex::{ChannelSpec, DrainSpec, Logplex, LogplexConfig, LogplexSettings, TokenSpec};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;

/// How long `eventually` waits: `SWITCHYARD_TEST_PATIENCE_SECS`, default 30 s.
pub fn patience() -> Duration {
    std::env::var("SWITCHYARD_TEST_PATIENCE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(30))
}

/// Polls `check` until it holds, panicking with `what` after [`patience`].
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + patience();
    loop {
        if check() {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A fresh `t.<uuid>` token.
pub fn token() -> String {
    format!("t.{}", uuid::Uuid::new_v4())
}

/// A fresh `d.<uuid>` drain token.
pub fn drain_token() -> String {
    format!("d.{}", uuid::Uuid::new_v4())
}

/// A drain spec for `url` with fresh ids.
pub fn drain(url: &str) -> DrainSpec {
    DrainSpec {
        id: uuid::Uuid::new_v4().to_string(),
        token: drain_token(),
        url: url.to_string(),
    }
}

/// One app: id, name, `app` and `heroku` tokens.
#[derive(Debug, Clone)]
pub struct App {
    pub id: String,
    pub name: String,
    pub app_token: String,
    pub heroku_token: String,
    pub drains: Vec<DrainSpec>,
}

impl App {
    pub fn new(name: &str) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_string(),
            app_token: token(),
            heroku_token: token(),
            drains: Vec::new(),
        }
    }

    pub fn drain(mut self, d: DrainSpec) -> Self {
        self.drains.push(d);
        self
    }

    pub fn spec(&self) -> ChannelSpec {
        ChannelSpec {
            app_id: self.id.clone(),
            app_name: self.name.clone(),
            tokens: vec![
                TokenSpec {
                    token: self.app_token.clone(),
                    name: "app".into(),
                },
                TokenSpec {
                    token: self.heroku_token.clone(),
                    name: "heroku".into(),
                },
            ],
            drains: self.drains.clone(),
        }
    }
}

/// A running logplex with every listener on 127.0.0.1:0.
pub struct Plex {
    pub logplex: Arc<Logplex>,
    pub tcp: SocketAddr,
    pub udp: SocketAddr,
    pub tls: SocketAddr,
    pub http: SocketAddr,
    pub tls_cert: rustls::pki_types::CertificateDer<'static>,
    stop: watch::Sender<bool>,
}

impl Drop for Plex {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn stopped(rx: &watch::Receiver<bool>) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut rx = rx.clone();
    async move {
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// Settings with short timers so failures show quickly.
pub fn quick_settings() -> LogplexSettings {
    LogplexSettings {
        drain_backoff_min: Duration::from_millis(20),
        drain_backoff_max: Duration::from_millis(200),
        drain_connect_timeout: Duration::from_secs(2),
        loss_report_interval: Duration::from_millis(100),
        ..LogplexSettings::default()
    }
}

impl Plex {
    pub async fn start(settings: LogplexSettings, apps: &[&App]) -> Plex {
        let logplex = Logplex::new(settings);
        logplex.configure(LogplexConfig {
            revision: 1,
            channels: apps.iter().map(|a| a.spec()).collect(),
        });
        let (stop, rx) = watch::channel(false);
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (tcp_addr, udp_addr, tls_addr, http_addr) = (
            tcp.local_addr().unwrap(),
            udp.local_addr().unwrap(),
            tls.local_addr().unwrap(),
            http.local_addr().unwrap(),
        );
        let cert = Cert::new();
        tokio::spawn(logplex::serve_syslog_tcp(
            tcp,
            logplex.clone(),
            stopped(&rx),
        ));
        tokio::spawn(logplex::serve_syslog_udp(
            udp,
            logplex.clone(),
            stopped(&rx),
        ));
        tokio::spawn(logplex::serve_syslog_tls(
            tls,
            cert.server_config(),
            logplex.clone(),
            stopped(&rx),
        ));
        tokio::spawn(logplex::serve_http(http, logplex.clone(), stopped(&rx)));
        Plex {
            logplex,
            tcp: tcp_addr,
            udp: udp_addr,
            tls: tls_addr,
            http: http_addr,
            tls_cert: cert.der.clone(),
            stop,
        }
    }

    pub fn configure(&self, apps: &[&App]) {
        self.logplex.configure(LogplexConfig {
            revision: 2,
            channels: apps.iter().map(|a| a.spec()).collect(),
        });
    }

    /// Message texts (after `: `) of the app's recent lines.
    pub fn messages(&self, app: &App) -> Vec<String> {
        self.logplex
            .recent(&app.id, 5000)
            .into_iter()
            .map(|l| l.split_once(": ").map(|(_, m)| m.to_string()).unwrap_or(l))
            .collect()
    }
}

/// A self-signed certificate for 127.0.0.1 and localhost.
pub struct Cert {
    pub der: rustls::pki_types::CertificateDer<'static>,
    key: Vec<u8>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Cert {
    pub fn new() -> Cert {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap();
        Cert {
            der: ck.cert.der().clone(),
            key: ck.key_pair.serialize_der(),
        }
    }

    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(self.key.clone().into());
        Arc::new(
            rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![self.der.clone()], key)
                .unwrap(),
        )
    }
}

/// A client config trusting exactly `cert`.
pub fn client_trusting(
    cert: &rustls::pki_types::CertificateDer<'static>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Splits octet-counted frames strictly (independently of the crate).
pub fn octet_frames(mut data: &[u8]) -> (Vec<String>, usize) {
    let mut out = Vec::new();
    let mut used = 0;
    while let Some(sp) = data.iter().position(|b| *b == b' ') {
        let Ok(len) = std::str::from_utf8(&data[..sp])
            .unwrap_or("x")
            .parse::<usize>()
        else {
            panic!(
                "not octet-counted: {:?}",
                String::from_utf8_lossy(&data[..data.len().min(80)])
            );
        };
        if data.len() < sp + 1 + len {
            break;
        }
        out.push(String::from_utf8(data[sp + 1..sp + 1 + len].to_vec()).unwrap());
        used += sp + 1 + len;
        data = &data[sp + 1 + len..];
    }
    (out, used)
}

/// A syslog receiver: every frame of every connection, in arrival order.
#[derive(Clone)]
pub struct SyslogReceiver {
    pub addr: SocketAddr,
    pub frames: Arc<Mutex<Vec<String>>>,
    pub connections: Arc<Mutex<usize>>,
}

impl SyslogReceiver {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, None)
    }

    pub async fn start_tls(cert: &Cert) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(
            listener,
            Some(tokio_rustls::TlsAcceptor::from(cert.server_config())),
        )
    }

    pub fn serve(listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let r = SyslogReceiver {
            addr: listener.local_addr().unwrap(),
            frames: Arc::default(),
            connections: Arc::default(),
        };
        let rc = r.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                *rc.connections.lock().unwrap() += 1;
                let frames = rc.frames.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(stream).await {
                                read_frames(s, frames).await;
                            }
                        }
                        None => read_frames(stream, frames).await,
                    }
                });
            }
        });
        r
    }

    pub fn frames(&self) -> Vec<String> {
        self.frames.lock().unwrap().clone()
    }
}

async fn read_frames<S: AsyncRead + Unpin>(mut s: S, frames: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let n = match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let (got, used) = octet_frames(&buf);
        buf.drain(..used);
        frames.lock().unwrap().extend(got);
    }
}

/// A TCP listener that accepts connections and never reads them.
/// Its receive buffer is small, so a sender's writes block after a few MB.
pub async fn stalled_receiver() -> (SocketAddr, Arc<Mutex<Vec<TcpStream>>>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(16).unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            h.lock().unwrap().push(s);
        }
    });
    (addr, held)
}

/// One request an HTTPS receiver saw.
#[derive(Debug, Clone)]
pub struct Captured {
    pub head: http::request::Parts,
    pub body: Bytes,
}

/// An HTTPS (or HTTP) server recording requests; answers with the statuses
/// in `script` first, then 200.
#[derive(Clone)]
pub struct HttpsReceiver {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Captured>>>,
    script: Arc<Mutex<std::collections::VecDeque<u16>>>,
}

impl HttpsReceiver {
    pub async fn start(cert: Option<&Cert>, script: &[u16]) -> Self {
        use http_body_util::BodyExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let r = HttpsReceiver {
            addr: listener.local_addr().unwrap(),
            requests: Arc::default(),
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
        };
        let acceptor = cert.map(|c| tokio_rustls::TlsAcceptor::from(c.server_config()));
        let rc = r.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let rc = rc.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let rc = rc.clone();
                            async move {
                                let (head, body) = req.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                rc.requests.lock().unwrap().push(Captured { head, body });
                                let status = rc.script.lock().unwrap().pop_front().unwrap_or(200);
                                let mut resp =
                                    http::Response::new(http_body_util::Full::new(Bytes::new()));
                                *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        },
                    );
                    let builder = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(a) => {
                            if let Ok(s) = a.accept(stream).await {
                                let _ = builder
                                    .serve_connection(hyper_util::rt::TokioIo::new(s), service)
                                    .await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        r
    }

    pub fn requests(&self) -> Vec<Captured> {
        self.requests.lock().unwrap().clone()
    }
}

/// A raw HTTP/1.1 exchange: returns status, headers (lower-cased) and body
/// (de-chunked) once the server closes or the body is complete.
pub async fn http_request(addr: SocketAddr, raw: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut data = Vec::new();
    s.read_to_end(&mut data).await.unwrap();
    parse_response(&data)
}

pub fn parse_response(data: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let head = String::from_utf8_lossy(&data[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = data[end + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v == "chunked")
    {
        body = dechunk(&body);
    }
    (status, headers, body)
}

pub fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(nl) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..nl]).unwrap().trim(), 16).unwrap();
        if size == 0 || data.len() < nl + 2 + size {
            break;
        }
        out.extend_from_slice(&data[nl + 2..nl + 2 + size]);
        data = &data[(nl + 2 + size + 2).min(data.len())..];
    }
    out
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A `POST /logs` request.
pub fn post_logs(token: Option<&str>, body: &[u8], extra: &[(&str, &str)]) -> Vec<u8> {
    use base64::Engine as _;
    let mut req = format!(
        "POST /logs HTTP/1.1\r\nHost: logplex\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = token {
        let creds = base64::engine::general_purpose::STANDARD.encode(format!("token:{t}"));
        req.push_str(&format!("Authorization: Basic {creds}\r\n"));
    }
    let mut has_ct = false;
    for (k, v) in extra {
        has_ct |= k.eq_ignore_ascii_case("content-type");
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_ct {
        req.push_str("Content-Type: application/logplex-1\r\n");
    }
    req.push_str("\r\n");
    let mut out = req.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Octet-counts each message.
pub fn frames(msgs: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        out.extend_from_slice(format!("{} {m}", m.len()).as_bytes());
    }
    out
}

/// Runs util-linux `logger` with `args`, feeding `lines` on stdin.
pub async fn logger(args: &[&str], lines: &[&str]) {
    use std::process::Stdio;
    let mut child = tokio::process::Command::new("/usr/bin/logger")
        .args(args)
        .stdin(Stdio::piped())
        .spawn()
        .expect("util-linux logger at /usr/bin/logger");
    let mut stdin = child.stdin.take().unwrap();
    let input = lines.join("\n") + "\n";
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let status = child.wait().await.unwrap();
    assert!(status.success(), "logger failed: {status}");
}
