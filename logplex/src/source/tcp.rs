//! Syslog over TCP (RFC 6587: octet counting or newline framing, per frame).

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::hub::{Logplex, Transport};

/// Accepts syslog connections until `shutdown` resolves. Connections already
/// open are read to their end.
pub async fn serve_syslog_tcp(
    listener: TcpListener,
    logplex: Arc<Logplex>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let admission = super::Admission::new(&logplex, Transport::Tcp);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "syslog tcp accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(permit) = admission.admit(&stream, peer) else {
            continue;
        };
        let logplex = logplex.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = super::read_stream(stream, &logplex, Transport::Tcp).await {
                tracing::debug!(%peer, error = %e, "syslog tcp connection ended");
            }
        });
    }
}
