//! Sources: syslog over TCP, TLS and UDP, and `POST /logs` over HTTP. Each
//! takes a bound socket and a shutdown future; framing and parsing are the
//! sans-I/O [`frame`](crate::frame) and [`message`](crate::message).

pub mod http;
pub mod tcp;
pub mod tls;
pub mod udp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::frame::Framer;
use crate::hub::{Logplex, Transport};

/// Open connections of one stream listener, bounded by
/// [`LogplexSettings::max_stream_connections`](crate::LogplexSettings).
#[derive(Debug, Clone)]
pub(crate) struct Admission {
    open: Arc<Semaphore>,
    refused: metrics::Counter,
}

impl Admission {
    pub(crate) fn new(logplex: &Logplex, transport: Transport) -> Self {
        Admission {
            open: Arc::new(Semaphore::new(logplex.settings().max_stream_connections)),
            refused: metrics::counter!(
                "logplex_connections_refused_total",
                "transport" => transport.as_str()
            ),
        }
    }

    /// A place for an accepted connection, or `None` (the caller drops the
    /// connection, which closes it) when the listener is full. Admitted
    /// connections get TCP keepalive, so a sender whose host vanished
    /// without a FIN frees its place within about two minutes while a quiet
    /// but live sender keeps its connection.
    pub(crate) fn admit(
        &self,
        stream: &TcpStream,
        peer: SocketAddr,
    ) -> Option<OwnedSemaphorePermit> {
        let Ok(permit) = self.open.clone().try_acquire_owned() else {
            self.refused.increment(1);
            tracing::warn!(%peer, "syslog connection refused: the listener's connection limit is reached");
            return None;
        };
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(60))
            .with_interval(Duration::from_secs(10))
            .with_retries(6);
        if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
            tracing::debug!(%peer, error = %e, "cannot set TCP keepalive");
        }
        Some(permit)
    }
}

/// Reads a syslog stream to its end, ingesting every frame. Bad frames are
/// counted (see [`Logplex::ingest_stats`]) and skipped; the stream goes on.
pub async fn read_stream<S: AsyncRead + Unpin>(
    mut stream: S,
    logplex: &Logplex,
    transport: Transport,
) -> std::io::Result<()> {
    let mut framer = Framer::new(logplex.settings().max_frame_bytes);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        while let Some(frame) = framer.next_frame(&mut buf) {
            take(logplex, frame, transport);
        }
        // Let the drain tasks these lines woke run before reading more. A
        // task woken from a worker goes to that worker's LIFO slot, which no
        // other worker steals; a sender that keeps the socket full would
        // otherwise keep this task running for a whole coop budget
        // (thousands of lines), past the drain buffers' 1024 lines, and the
        // drains would drop lines while a core had time to send them.
        tokio::task::yield_now().await;
        buf.reserve(8 * 1024);
        let n = stream.read_buf(&mut buf).await?;
        if n == 0 {
            if let Some(frame) = framer.finish(&mut buf) {
                take(logplex, frame, transport);
            }
            return Ok(());
        }
    }
}

fn take(
    logplex: &Logplex,
    frame: Result<bytes::Bytes, crate::frame::FrameError>,
    transport: Transport,
) {
    match frame {
        Ok(bytes) => {
            if let Err(e) = logplex.ingest(&bytes, transport) {
                tracing::debug!(transport = transport.as_str(), error = %e, "syslog frame not taken");
            }
        }
        Err(e) => {
            logplex.count_received(transport);
            logplex.count_malformed(transport);
            tracing::debug!(transport = transport.as_str(), error = %e, "syslog frame rejected");
        }
    }
}
