//! The byte pipe behind an `Upgrade` (WebSocket and friends): copies both
//! ways at once until both sides have closed, under the rolling idle window;
//! `pipe` runs it for one exchange after `101 Switching Protocols`.
//!
//! Each direction is its own loop, so a peer that does not read what is sent
//! to it stalls only that direction; and every write must finish within the
//! idle window, so it cannot stall the pipe for good either (a write that
//! cannot finish is a [`SpliceError::Stalled`]). The pipe also ends when
//! nothing has moved either way for the idle window.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::clock;
use crate::exchange::{End, Exchange};
use crate::failure::Side;

/// How a pipe ended early.
#[derive(Debug)]
pub enum SpliceError {
    /// Nothing moved either way for the idle window (bytes sent to the
    /// client so far).
    DynoIdle(u64),
    /// That side did not take a write within the idle window (bytes sent to the
    /// client so far).
    Stalled(Side, u64),
    /// A socket failed.
    Io(io::Error),
}

/// Bytes moved so far and when anything last moved.
struct Progress {
    up: AtomicU64,
    down: AtomicU64,
    /// Router-clock milliseconds ([`crate::clock`]).
    last: AtomicU64,
}

impl Progress {
    fn moved(&self) {
        self.last.store(clock::now_ms(), Ordering::Relaxed);
    }
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
    let (cr, cw) = tokio::io::split(client);
    let (dr, dw) = tokio::io::split(dyno);
    let progress = Progress {
        up: AtomicU64::new(0),
        down: AtomicU64::new(0),
        last: AtomicU64::new(clock::now_ms()),
    };
    let up = one_way(cr, dw, Side::Dyno, &progress.up, &progress, idle);
    let down = one_way(dr, cw, Side::Client, &progress.down, &progress, idle);
    let watchdog = async {
        loop {
            let deadline = clock::instant_at(progress.last.load(Ordering::Relaxed)) + idle;
            tokio::time::sleep_until(deadline).await;
            let last = progress.last.load(Ordering::Relaxed);
            if tokio::time::Instant::now() >= clock::instant_at(last) + idle {
                return;
            }
        }
    };
    tokio::select! {
        r = async { tokio::try_join!(up, down) } => r,
        _ = watchdog => Err(SpliceError::DynoIdle(progress.down.load(Ordering::Relaxed))),
    }
}

/// Copies `from` to `to` until `from` ends, then shuts `to` down. Returns
/// the bytes copied.
async fn one_way<R, W>(
    mut from: R,
    mut to: W,
    to_end: Side,
    count: &AtomicU64,
    progress: &Progress,
    idle: Duration,
) -> Result<u64, SpliceError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await.map_err(SpliceError::Io)?;
        progress.moved();
        if n == 0 {
            // Half-close: the other direction may go on.
            let _ = tokio::time::timeout(idle, to.shutdown()).await;
            return Ok(count.load(Ordering::Relaxed));
        }
        match tokio::time::timeout(idle, to.write_all(&buf[..n])).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(SpliceError::Io(e)),
            Err(_) => {
                return Err(SpliceError::Stalled(
                    to_end,
                    progress.down.load(Ordering::Relaxed),
                ))
            }
        }
        count.fetch_add(n as u64, Ordering::Relaxed);
        progress.moved();
    }
}

/// After `101 Switching Protocols`: a byte pipe between client and dyno
/// until either side closes, the idle window passes, or the router shuts
/// down. The log line is written when the pipe ends (`service=` is the whole
/// session, as Heroku logs it). The client connection stays counted
/// against the app (H22) while the pipe runs.
pub(crate) async fn pipe(
    client: tokio::sync::oneshot::Receiver<crate::connection::UpgradedClient>,
    dyno: crate::upstream::Upgraded,
    exchange: Box<Exchange>,
    idle: Duration,
    _counted: Option<std::sync::Arc<crate::live::ClientConn>>,
) {
    let Ok(mut client) = client.await else {
        return exchange.finish(End::DynoBroke);
    };
    let mut dyno = dyno;
    let router = exchange.router.clone();
    let mut exchange = exchange;
    let end = tokio::select! {
        r = copy_bidirectional_idle(&mut client, &mut dyno, idle) => match r {
            Ok((_, to_client)) => {
                exchange.bytes += to_client;
                End::Complete
            }
            Err(SpliceError::DynoIdle(to_client)) => {
                exchange.bytes += to_client;
                End::DynoIdle
            }
            // A dyno that takes no byte for the idle window is as good as
            // silent (H15); a client that takes none has gone (H27).
            Err(SpliceError::Stalled(side, to_client)) => {
                exchange.bytes += to_client;
                match side {
                    Side::Dyno => End::DynoIdle,
                    Side::Client | Side::Router => End::ClientGone,
                }
            }
            Err(SpliceError::Io(_)) => End::DynoBroke,
        },
        _ = router.forcing() => End::ClientGone,
    };
    exchange.finish(end);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    const IDLE: Duration = Duration::from_secs(55);

    /// Runs `f`, failing the test if it is not done within ten idle windows
    /// (paused time: instantly, when the pipe is wedged).
    async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(IDLE * 10, f)
            .await
            .expect("the pipe wedged")
    }

    #[tokio::test(start_paused = true)]
    async fn both_directions_flow_at_once() {
        // The client sends far more than the pipes buffer before it reads
        // anything; the dyno answers while it reads. A pipe that copies one
        // direction at a time gets stuck writing the dyno's answer to the
        // client, stops taking the client's bytes, and all three wait.
        let (client, mut client_side) = duplex(1024);
        let (dyno, mut dyno_side) = duplex(1024);
        let big = vec![7u8; 256 * 1024];
        let pipe = tokio::spawn(async move {
            copy_bidirectional_idle(&mut client_side, &mut dyno_side, IDLE).await
        });
        let client = async {
            let (mut r, mut w) = tokio::io::split(client);
            w.write_all(&big).await.expect("write");
            w.shutdown().await.expect("shutdown");
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.expect("read");
            got.len()
        };
        let dyno = async {
            let (mut r, mut w) = tokio::io::split(dyno);
            let write = async {
                w.write_all(&big).await.expect("write");
                w.shutdown().await.expect("shutdown");
            };
            let mut got = Vec::new();
            let (_, n) = tokio::join!(write, r.read_to_end(&mut got));
            n.expect("read");
            got.len()
        };
        let (c, d) = within(async { tokio::join!(client, dyno) }).await;
        let moved = within(pipe).await.expect("join").expect("pipe");
        assert_eq!((c, d), (big.len(), big.len()));
        assert_eq!(moved, (big.len() as u64, big.len() as u64));
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_cannot_wedge_the_pipe() {
        // The dyno never reads but keeps the session alive with a byte to
        // the client every few seconds; the client keeps sending.
        let (client, mut client_side) = duplex(1024);
        let (mut dyno, mut dyno_side) = duplex(1024);
        let pipe = tokio::spawn(async move {
            copy_bidirectional_idle(&mut client_side, &mut dyno_side, IDLE).await
        });
        let chatter = tokio::spawn(async move {
            while dyno.write_all(b".").await.is_ok() {
                tokio::time::sleep(IDLE / 10).await;
            }
        });
        let (mut from_pipe, mut to_pipe) = tokio::io::split(client);
        let sender =
            tokio::spawn(async move { while to_pipe.write_all(&[1u8; 512]).await.is_ok() {} });
        let reader = tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = from_pipe.read_to_end(&mut sink).await;
        });
        let started = tokio::time::Instant::now();
        let ended = within(pipe).await.expect("join");
        assert!(
            matches!(ended, Err(SpliceError::Stalled(Side::Dyno, n)) if n > 0),
            "{ended:?}"
        );
        assert!(started.elapsed() >= IDLE, "only after a whole idle window");
        for t in [chatter, sender, reader] {
            t.abort();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn silence_both_ways_ends_the_pipe_after_the_idle_window() {
        let (_client, mut client_side) = duplex(1024);
        let (_dyno, mut dyno_side) = duplex(1024);
        let started = tokio::time::Instant::now();
        let ended = copy_bidirectional_idle(&mut client_side, &mut dyno_side, IDLE).await;
        assert!(matches!(ended, Err(SpliceError::DynoIdle(0))), "{ended:?}");
        assert!(started.elapsed() >= IDLE);
    }
}
