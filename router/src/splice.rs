//! The byte pipe behind an `Upgrade` (WebSocket and friends): copies both
//! ways until both sides have closed, under the rolling idle window.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How a pipe ended early.
#[derive(Debug)]
pub enum SpliceError {
    /// Nothing moved either way for the idle window (bytes sent to the client so far).
    DynoIdle(u64),
    /// A socket failed.
    Io(io::Error),
}

/// Copies `client` ⇄ `dyno` until both directions reach end of stream.
/// Returns bytes (client → dyno, dyno → client).
pub async fn copy_bidirectional_idle<A, B>(
    client: &mut A,
    dyno: &mut B,
    idle: Duration,
) -> Result<(u64, u64), SpliceError>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut dr, mut dw) = tokio::io::split(dyno);
    let mut up_buf = vec![0u8; 16 * 1024];
    let mut down_buf = vec![0u8; 16 * 1024];
    let (mut up, mut down) = (0u64, 0u64);
    let (mut client_done, mut dyno_done) = (false, false);
    while !(client_done && dyno_done) {
        tokio::select! {
            r = cr.read(&mut up_buf), if !client_done => match r {
                Ok(0) => {
                    client_done = true;
                    let _ = dw.shutdown().await;
                }
                Ok(n) => {
                    dw.write_all(&up_buf[..n]).await.map_err(SpliceError::Io)?;
                    up += n as u64;
                }
                Err(e) => return Err(SpliceError::Io(e)),
            },
            r = dr.read(&mut down_buf), if !dyno_done => match r {
                Ok(0) => {
                    dyno_done = true;
                    let _ = cw.shutdown().await;
                }
                Ok(n) => {
                    cw.write_all(&down_buf[..n]).await.map_err(SpliceError::Io)?;
                    down += n as u64;
                }
                Err(e) => return Err(SpliceError::Io(e)),
            },
            _ = tokio::time::sleep(idle) => return Err(SpliceError::DynoIdle(down)),
        }
    }
    Ok((up, down))
}
