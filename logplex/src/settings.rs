//! Tunables of the log router, typed once at the edge.

use std::sync::Arc;
use std::time::Duration;

/// Limits and timers of a [`Logplex`](crate::Logplex). `Default` gives
/// Heroku's numbers where Heroku has one.
#[derive(Clone)]
pub struct LogplexSettings {
    /// Lines of history kept per channel (Heroku: 1500).
    pub history_lines: usize,
    /// Lines buffered per drain before the oldest are dropped (Heroku: 1024).
    pub drain_buffer_lines: usize,
    /// How long a created log session may wait for its first `GET`.
    pub session_ttl: Duration,
    /// Verifies session grants signed by control nodes running apart
    /// ([`crate::grant`]); `None`: only sessions created here open.
    pub session_grants: Option<crate::GrantKey>,
    /// Longer message bodies are split into chunks of at most this many
    /// bytes, each its own line (Heroku: 10 000).
    pub max_line_bytes: usize,
    /// Largest accepted syslog frame on any source; larger frames are
    /// discarded and counted as malformed.
    pub max_frame_bytes: usize,
    /// Largest accepted `POST /logs` body (after gzip inflation).
    pub max_body_bytes: usize,
    /// A `POST /logs` body must be in whole within this of its head (408
    /// otherwise).
    pub http_body_timeout: Duration,
    /// A request head on the HTTP source (the first on a connection, and
    /// each next one on a kept-alive connection) must be in whole within
    /// this, or the connection is closed.
    pub http_head_timeout: Duration,
    /// Open connections to the HTTP source (`POST /logs`, session streams)
    /// past which a new one is closed at once and counted
    /// (`logplex_connections_refused_total{transport="http"}`). Logplex: 1024.
    pub max_http_connections: usize,
    /// Lines buffered per live tail before the oldest are dropped (L11).
    pub tail_buffer_lines: usize,
    /// Connect timeout of drains.
    pub drain_connect_timeout: Duration,
    /// Send (syslog) or request (HTTPS) timeout of drains.
    pub drain_send_timeout: Duration,
    /// First retry delay of a failing drain; doubles up to `drain_backoff_max`,
    /// with full jitter.
    pub drain_backoff_min: Duration,
    /// Largest retry delay of a failing drain.
    pub drain_backoff_max: Duration,
    /// Tries per HTTPS batch before it is dropped (and counted, and reported).
    pub https_max_attempts: u32,
    /// Target size of one HTTPS drain request body.
    pub https_batch_bytes: usize,
    /// Target size of one syslog drain write.
    pub syslog_batch_bytes: usize,
    /// How often, at most, a drain that is losing lines says so in the app's
    /// own stream.
    pub loss_report_interval: Duration,
    /// In a cluster, how long a node that takes a channel over from a live
    /// node (or on its start) holds the channel's drains before they
    /// connect: time for the previous owner to see the change and stop
    /// its own, so a drain never has two connections. Lines meanwhile wait
    /// in the drains' buffers. A channel taken from a dead node starts at
    /// once.
    pub handover_delay: Duration,
    /// Open syslog connections (TCP and TLS together) past which a new one
    /// is closed at once and counted (`logplex_connections_refused_total`).
    /// The binary sizes it from the process's file-descriptor limit.
    pub max_stream_connections: usize,
    /// A syslog TCP or TLS connection that sends nothing for this long is
    /// closed and counted (`logplex_connections_idle_closed_total`).
    /// Logplex closes its idle drain connections after 240 s.
    pub stream_idle_timeout: Duration,
    /// How long the ingest task waits for more in-process lines after the
    /// first one arrives in an empty queue before it publishes them
    /// ([`inbox`](crate::inbox)): the most a router line is delayed on its
    /// way to tails and drains.
    pub inbox_linger: Duration,
    /// A worker's queue this long is published without waiting out the
    /// linger.
    pub inbox_batch_lines: usize,
    /// Most lines one worker's queue holds; lines past it are counted as
    /// dropped and reported (L10) in the app's stream.
    pub inbox_lane_lines: usize,
    /// TLS client configuration for `syslog+tls://` and `https://` drains;
    /// `None` trusts the Web PKI roots (`webpki-roots`).
    pub drain_tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for LogplexSettings {
    fn default() -> Self {
        Self {
            history_lines: 1500,
            drain_buffer_lines: 1024,
            session_ttl: Duration::from_secs(300),
            session_grants: None,
            max_line_bytes: 10_000,
            max_frame_bytes: 64 * 1024,
            max_body_bytes: 8 * 1024 * 1024,
            http_body_timeout: Duration::from_secs(30),
            http_head_timeout: Duration::from_secs(30),
            max_http_connections: 1024,
            tail_buffer_lines: 1024,
            drain_connect_timeout: Duration::from_secs(5),
            drain_send_timeout: Duration::from_secs(10),
            drain_backoff_min: Duration::from_millis(50),
            drain_backoff_max: Duration::from_secs(5),
            https_max_attempts: 5,
            https_batch_bytes: 100 * 1024,
            syslog_batch_bytes: 16 * 1024,
            loss_report_interval: Duration::from_secs(1),
            handover_delay: Duration::from_secs(1),
            max_stream_connections: 10_000,
            stream_idle_timeout: Duration::from_secs(240),
            inbox_linger: Duration::from_millis(10),
            inbox_batch_lines: 256,
            inbox_lane_lines: 16_384,
            drain_tls: None,
        }
    }
}

impl std::fmt::Debug for LogplexSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogplexSettings")
            .field("history_lines", &self.history_lines)
            .field("drain_buffer_lines", &self.drain_buffer_lines)
            .field("session_ttl", &self.session_ttl)
            .field("session_grants", &self.session_grants.is_some())
            .field("max_line_bytes", &self.max_line_bytes)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("http_body_timeout", &self.http_body_timeout)
            .field("http_head_timeout", &self.http_head_timeout)
            .field("max_http_connections", &self.max_http_connections)
            .field("max_stream_connections", &self.max_stream_connections)
            .field("stream_idle_timeout", &self.stream_idle_timeout)
            .field("inbox_linger", &self.inbox_linger)
            .field("inbox_batch_lines", &self.inbox_batch_lines)
            .field("inbox_lane_lines", &self.inbox_lane_lines)
            .field("drain_tls", &self.drain_tls.is_some())
            .finish_non_exhaustive()
    }
}
