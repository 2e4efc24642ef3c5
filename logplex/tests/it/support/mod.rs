//! Scenario builders: a running logplex on 127.0.0.1:0, apps, certificates
//! and `eventually`; [`receivers`] holds the syslog and HTTPS drain
//! receivers, [`client`] a raw HTTP client and the senders.

#![allow(dead_code)]

mod client;
pub mod metrics;
mod receivers;

pub use client::*;
pub use receivers::*;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use logplex::{ChannelSpec, DrainSpec, Logplex, LogplexConfig, LogplexSettings, TokenSpec};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

#[path = "../../../../tests/support/wait.rs"]
mod wait;

pub use wait::{eventually, patience};

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

/// A TCP listener on 127.0.0.1:0 with the accept queue the binary asks
/// for: tokio's `bind` asks for 128, which a flood of a few hundred
/// connects overflows (the kernel then drops handshakes, and senders wait
/// for retransmits).
fn deep_listener() -> TcpListener {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .unwrap();
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&addr.into()).unwrap();
    socket.listen(4096).unwrap();
    socket.set_nonblocking(true).unwrap();
    TcpListener::from_std(socket.into()).unwrap()
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
        handover_delay: Duration::from_millis(50),
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
        let tcp = deep_listener();
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
