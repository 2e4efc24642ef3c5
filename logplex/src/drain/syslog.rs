//! `syslog://` and `syslog+tls://` drains: octet-counted RFC 5424 frames
//! over one TCP (or TLS, RFC 5425) connection,
//! `<len> <pri>1 <ts> d.<drain-token> <app|heroku> <process> - - <msg>\n`.
//!
//! The sender connects when there is something to send, writes batches of
//! up to `syslog_batch_bytes`, and treats a batch as delivered when the
//! write returns. While idle it reads the connection (and ignores the bytes)
//! so a peer that closes is noticed before the next write. A failed write
//! keeps the batch and retries it on a new connection after a jittered
//! backoff: deliveries are at-least-once.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::{Batch, Ctx};

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Encodes a batch (L10 line first) as octet-counted frames.
pub fn encode(ctx: &Ctx, batch: &Batch) -> Vec<u8> {
    let l10 = ctx.loss_line(batch);
    let mut out = Vec::with_capacity(batch.frames_bound(l10.as_ref(), &ctx.token));
    if let Some(l10) = l10 {
        l10.write_frame(&ctx.token, true, &mut out);
    }
    for line in &batch.lines {
        line.write_frame(&ctx.token, true, &mut out);
    }
    out
}

async fn connect(
    ctx: &Ctx,
    host: &str,
    port: u16,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> std::io::Result<Box<dyn Stream>> {
    let limit = ctx.settings.drain_connect_timeout;
    let tcp = timeout(limit, TcpStream::connect((host, port)))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = tcp.set_nodelay(true);
    let Some(config) = tls else {
        return Ok(Box::new(tcp));
    };
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    let stream = timeout(limit, connector.connect(name, tcp))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
        })??;
    Ok(Box::new(stream))
}

/// The sender task of one syslog drain; ends when the buffer closes.
pub async fn run(ctx: Arc<Ctx>, host: String, port: u16, tls: Option<Arc<rustls::ClientConfig>>) {
    let max = ctx.settings.syslog_batch_bytes;
    let mut pending: Option<Batch> = None;
    let mut failures: u32 = 0;
    loop {
        if pending.is_none() {
            match ctx.buffer.next(max).await {
                Some(batch) => pending = Some(batch),
                None => return,
            }
        }
        let stream = match connect(&ctx, &host, port, tls.as_ref()).await {
            Ok(s) => s,
            Err(e) => {
                failures += 1;
                // Like Logplex, say so in the app's stream from the second
                // consecutive failure on, once per streak.
                if failures == 2 && tls.is_some() {
                    ctx.tls_failed(&e);
                }
                if failures > 1 {
                    tracing::warn!(drain = %ctx.id, host = %super::clipped(&host), port, error = %super::clipped(&e.to_string()), "syslog drain connect failed");
                }
                tokio::time::sleep(ctx.backoff(failures)).await;
                continue;
            }
        };
        let (mut reader, mut writer) = tokio::io::split(stream);
        let mut scratch = [0u8; 512];
        loop {
            let batch = match pending.take() {
                Some(b) => b,
                None => {
                    let next = tokio::select! {
                        batch = ctx.buffer.next(max) => batch,
                        read = reader.read(&mut scratch) => match read {
                            Ok(n) if n > 0 => continue,
                            _ => break, // peer closed: reconnect when needed
                        },
                    };
                    match next {
                        Some(b) => b,
                        None => return,
                    }
                }
            };
            let bytes = encode(&ctx, &batch);
            let write = async {
                writer.write_all(&bytes).await?;
                writer.flush().await
            };
            match timeout(ctx.settings.drain_send_timeout, write).await {
                Ok(Ok(())) => {
                    failures = 0;
                    ctx.delivered(batch);
                }
                Ok(Err(e)) => {
                    tracing::warn!(drain = %ctx.id, error = %super::clipped(&e.to_string()), "syslog drain write failed");
                    pending = Some(batch);
                    failures += 1;
                    break;
                }
                Err(_) => {
                    tracing::warn!(drain = %ctx.id, "syslog drain write timed out");
                    pending = Some(batch);
                    failures += 1;
                    break;
                }
            }
        }
        if failures > 0 {
            tokio::time::sleep(ctx.backoff(failures)).await;
        }
    }
}
