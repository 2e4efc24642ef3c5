//! Sources: syslog over TCP, TLS and UDP, and `POST /logs` over HTTP. Each
//! takes a bound socket and a shutdown future; framing and parsing are the
//! sans-I/O [`frame`](crate::frame) and [`message`](crate::message).

pub mod http;
pub(crate) mod listener;
pub mod tcp;
pub mod tls;
pub mod udp;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;

use crate::frame::Framer;
use crate::hub::{Logplex, Transport};

/// TCP keepalive on an admitted syslog connection, so a sender whose host
/// vanished without a FIN frees its place within about two minutes even
/// before the idle timeout.
pub(crate) fn keepalive(stream: &TcpStream, peer: SocketAddr) {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(6);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(%peer, error = %e, "cannot set TCP keepalive");
    }
}

/// Reads a syslog stream to its end, ingesting every frame. Bad frames are
/// counted (see [`Logplex::ingest_stats`]) and skipped; the stream goes on.
/// A stream that sends nothing for
/// [`LogplexSettings::stream_idle_timeout`](crate::LogplexSettings) is
/// ended there, as if it had closed (a frame it left unfinished is taken
/// as at the end of a stream), and counted in [`Logplex::connection_stats`].
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
        let idle = logplex.settings().stream_idle_timeout;
        let Ok(read) = tokio::time::timeout(idle, stream.read_buf(&mut buf)).await else {
            if let Some(gate) = logplex.gate(transport) {
                gate.counts().idle_closed();
            }
            tracing::debug!(
                transport = transport.as_str(),
                "syslog connection idle; closing"
            );
            if let Some(frame) = framer.finish(&mut buf) {
                take(logplex, frame, transport);
            }
            return Ok(());
        };
        let n = read?;
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
