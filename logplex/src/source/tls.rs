//! Syslog over TLS (RFC 5425), framed like TCP.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::hub::{Logplex, Transport};

/// Handshakes must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts TLS syslog connections until `shutdown` resolves.
pub async fn serve_syslog_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    logplex: Arc<Logplex>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let admission = super::Admission::new(&logplex, Transport::Tls);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "syslog tls accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(permit) = admission.admit(&stream, peer) else {
            continue;
        };
        let logplex = logplex.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _permit = permit;
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
        });
    }
}
