//! Syslog over TLS (RFC 5425), framed like TCP.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::hub::{Logplex, Transport};

/// Handshakes must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts TLS syslog connections until `shutdown` resolves. They share
/// the TCP listener's connection cap and idle timeout.
pub async fn serve_syslog_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    logplex: Arc<Logplex>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let lp = logplex.clone();
    super::listener::accept_loop(
        listener,
        &logplex,
        Transport::Tls,
        shutdown,
        move |stream, peer, place| {
            super::keepalive(&stream, peer);
            let logplex = lp.clone();
            let acceptor = acceptor.clone();
            async move {
                let _place = place;
                let stream =
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "syslog tls handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "syslog tls handshake timed out");
                            return;
                        }
                    };
                if let Err(e) = super::read_stream(stream, &logplex, Transport::Tls).await {
                    tracing::debug!(%peer, error = %e, "syslog tls connection ended");
                }
            }
        },
    )
    .await
}
