//! Syslog over UDP: one message per datagram (a trailing newline is dropped;
//! an octet-count prefix, if a sender adds one, is honoured).

use std::future::Future;
use std::sync::Arc;

use tokio::net::UdpSocket;

use crate::frame::{check, Check};
use crate::hub::{Logplex, Transport};

/// Receives datagrams until `shutdown` resolves.
pub async fn serve_syslog_udp(
    socket: UdpSocket,
    logplex: Arc<Logplex>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    let mut buf = vec![0u8; 65_536];
    loop {
        let n = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, _)) => n,
                Err(e) => {
                    // ICMP errors from earlier sends and the like; keep going.
                    tracing::debug!(error = %e, "syslog udp receive failed");
                    continue;
                }
            },
        };
        datagram(&logplex, &buf[..n]);
    }
}

/// Ingests one datagram.
pub fn datagram(logplex: &Logplex, data: &[u8]) {
    let max = logplex.settings().max_frame_bytes;
    let msg = match check(data, max) {
        Check::Frame { start, end, .. } if start > 0 => &data[start..end],
        _ => data,
    };
    if msg.len() > max {
        logplex.count_received(Transport::Udp);
        logplex.count_malformed(Transport::Udp);
        return;
    }
    if let Err(e) = logplex.ingest(msg, Transport::Udp) {
        tracing::debug!(error = %e, "syslog datagram not taken");
    }
}
