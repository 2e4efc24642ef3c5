//! Switchyard's log router (work in progress): syslog in, per-app channels,
//! history, tails and drains.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![warn(missing_docs)]

pub mod config;
pub mod settings;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use config::{ChannelSpec, DrainSpec, LogplexConfig, TokenSpec};
pub use settings::LogplexSettings;

/// The shared state of the log router.
#[derive(Debug)]
pub struct Logplex {
    settings: LogplexSettings,
}

/// What a log session shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionParams {
    /// Recent lines first (default 100, at most 1500).
    pub lines: Option<usize>,
    /// Keep streaming live lines.
    pub tail: bool,
    /// `app` or `heroku`.
    pub source: Option<String>,
    /// `web.1` or a process type such as `web`.
    pub dyno: Option<String>,
}

/// Counters of one drain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainStats {
    /// The app's id.
    pub app_id: String,
    /// The drain's id.
    pub drain_id: String,
    /// Lines accepted into the drain's buffer.
    pub accepted: u64,
    /// Lines delivered.
    pub delivered: u64,
    /// Lines dropped.
    pub dropped: u64,
    /// Lines waiting.
    pub buffered: u64,
}

impl Logplex {
    /// A log router with no channels.
    pub fn new(settings: LogplexSettings) -> Arc<Logplex> {
        Arc::new(Logplex { settings })
    }
    /// Replaces the channel configuration.
    pub fn configure(&self, config: LogplexConfig) {
        let _ = (config, &self.settings);
    }
    /// Emits one line in-process.
    pub fn emit(&self, app_id: &str, source: &str, process: &str, msg: &str) {
        let _ = (app_id, source, process, msg);
    }
    /// Creates a log session.
    pub fn create_session(&self, app_id: &str, params: SessionParams) -> Option<String> {
        let _ = (app_id, params);
        None
    }
    /// Recent formatted lines.
    pub fn recent(&self, app_id: &str, n: usize) -> Vec<String> {
        let _ = (app_id, n);
        Vec::new()
    }
    /// Drain counters.
    pub fn drain_stats(&self) -> Vec<DrainStats> {
        Vec::new()
    }
    /// Waits for drains to deliver.
    pub async fn flush(&self, deadline: Duration) {
        let _ = deadline;
    }
}

/// Serves `POST /logs` and `GET /sessions/{id}`.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    logplex: Arc<Logplex>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let _ = (listener, logplex);
    shutdown.await;
    Ok(())
}

/// Serves syslog over TCP.
pub async fn serve_syslog_tcp(
    listener: tokio::net::TcpListener,
    logplex: Arc<Logplex>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let _ = (listener, logplex);
    shutdown.await;
    Ok(())
}

/// Serves syslog over UDP.
pub async fn serve_syslog_udp(
    socket: tokio::net::UdpSocket,
    logplex: Arc<Logplex>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let _ = (socket, logplex);
    shutdown.await;
    Ok(())
}

/// Serves syslog over TLS.
pub async fn serve_syslog_tls(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    logplex: Arc<Logplex>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let _ = (listener, tls, logplex);
    shutdown.await;
    Ok(())
}
