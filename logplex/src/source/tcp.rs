//! Syslog over TCP (RFC 6587: octet counting or newline framing, per frame).

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::hub::{Logplex, Transport};

/// Accepts syslog connections until `shutdown` resolves. Connections already
/// open are read to their end, or until they idle for
/// [`LogplexSettings::stream_idle_timeout`](crate::LogplexSettings).
pub async fn serve_syslog_tcp(
    listener: TcpListener,
    logplex: Arc<Logplex>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let lp = logplex.clone();
    super::listener::accept_loop(
        listener,
        &logplex,
        Transport::Tcp,
        shutdown,
        move |stream, peer, place| {
            super::keepalive(&stream, peer);
            let logplex = lp.clone();
            async move {
                let _place = place;
                if let Err(e) = super::read_stream(stream, &logplex, Transport::Tcp).await {
                    tracing::debug!(%peer, error = %e, "syslog tcp connection ended");
                }
            }
        },
    )
    .await
}
