//! [`Link`]: one persistent syslog connection to one log router, kept
//! up with capped exponential back-off.
//!
//! The shipper's task hands a link whole batches through a bounded queue
//! and never waits for it. The link's task writes what is queued in one
//! write (a burst of batches becomes one), and reads its socket meanwhile:
//! a log router never writes to a syslog sender, so a readable socket
//! means its close, which ends the connection before the next write rather
//! than after it (a write into a closed connection would succeed locally
//! and its lines would vanish uncounted).
//!
//! States: *connecting* (the first attempt: batches wait in the queue),
//! *up*, *down* (after a failed attempt or a broken connection: the
//! shipper drops the link's lines at once and counts them; what was queued
//! is counted too). A link whose shipper dropped it ends.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::{Batch, DropReason, Shared, ShipSettings};

const CONNECTING: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// A connection that lasted this long is retried at once when it breaks.
const STEADY: Duration = Duration::from_secs(1);

/// The shipper's handle on one link. Dropping it ends the link once its
/// queue is empty.
pub(crate) struct Link {
    tx: mpsc::Sender<Batch>,
    state: Arc<AtomicU8>,
    /// When a line was last routed to it.
    used: tokio::time::Instant,
}

impl Link {
    /// A link to `dest`, connecting at once.
    pub(crate) fn start(dest: Arc<str>, settings: &ShipSettings, shared: Arc<Shared>) -> Link {
        let (tx, rx) = mpsc::channel(settings.link_batches.max(1));
        let state = Arc::new(AtomicU8::new(CONNECTING));
        tokio::spawn(keep(
            dest,
            rx,
            state.clone(),
            settings.tls.clone(),
            settings.io_timeout,
            Backoff::new(settings.max_backoff),
            shared,
        ));
        Link {
            tx,
            state,
            used: tokio::time::Instant::now(),
        }
    }

    /// Notes that a line was routed to it.
    pub(crate) fn touch(&mut self) {
        self.used = tokio::time::Instant::now();
    }

    /// When a line was last routed to it.
    pub(crate) fn used(&self) -> tokio::time::Instant {
        self.used
    }

    /// Whether lines for it are queued (connecting or up) rather than
    /// dropped.
    pub(crate) fn accepting(&self) -> bool {
        self.state.load(Ordering::Acquire) != DOWN
    }

    /// Whether it is connected.
    pub(crate) fn is_up(&self) -> bool {
        self.state.load(Ordering::Acquire) == UP
    }

    /// Queues `batch`, or counts it dropped when the queue is full.
    pub(crate) fn send(&self, batch: Batch, shared: &Shared) {
        if let Err(e) = self.tx.try_send(batch) {
            let batch = match e {
                mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b) => b,
            };
            shared.failed(&batch, DropReason::LinkDown);
        }
    }
}

/// Capped exponential back-off: 100 ms, doubling, up to the cap.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);

    pub(crate) fn new(max: Duration) -> Self {
        Backoff {
            next: Self::FIRST.min(max),
            max,
        }
    }

    /// The wait before the next attempt.
    pub(crate) fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// After a success.
    pub(crate) fn reset(&mut self) {
        self.next = Self::FIRST.min(self.max);
    }
}

/// Why a connection ended.
enum Ended {
    /// The shipper dropped the link and its queue is empty.
    Closed,
    /// The connection failed.
    Broken(String),
}

/// The link's task: connect, serve, and after a failure count what waits
/// and try again after the back-off.
async fn keep(
    dest: Arc<str>,
    mut rx: mpsc::Receiver<Batch>,
    state: Arc<AtomicU8>,
    tls: Option<Arc<rustls::ClientConfig>>,
    io_timeout: Duration,
    mut backoff: Backoff,
    shared: Arc<Shared>,
) {
    let mut failing = false;
    let links_up = metrics::gauge!(shared.sender.links_metric());
    loop {
        match tokio::time::timeout(io_timeout, connect(&dest, tls.as_ref())).await {
            Ok(Ok(stream)) => {
                let since = tokio::time::Instant::now();
                state.store(UP, Ordering::Release);
                links_up.increment(1.0);
                shared.link_up.notify_one();
                failing = false;
                tracing::info!(log_router = %dest, "router log link up");
                let ended = serve(stream, &mut rx, io_timeout, &shared).await;
                state.store(DOWN, Ordering::Release);
                links_up.decrement(1.0);
                match ended {
                    Ended::Closed => return,
                    Ended::Broken(why) => {
                        tracing::warn!(log_router = %dest, error = %why, "router log link down; its lines are counted as dropped until it is back");
                    }
                }
                // A connection that lasted is followed by an attempt at
                // once (Logplex's drains do the same); one closed as soon
                // as it opened, by the back-off.
                if since.elapsed() >= STEADY {
                    backoff.reset();
                    fail_queued(&mut rx, &shared);
                    continue;
                }
            }
            Ok(Err(e)) => {
                state.store(DOWN, Ordering::Release);
                if !failing {
                    tracing::warn!(log_router = %dest, error = %e, "cannot connect to the log router; its lines are counted as dropped");
                }
                failing = true;
            }
            Err(_) => {
                state.store(DOWN, Ordering::Release);
                if !failing {
                    tracing::warn!(log_router = %dest, "connecting to the log router timed out; its lines are counted as dropped");
                }
                failing = true;
            }
        }
        fail_queued(&mut rx, &shared);
        if rx.is_closed() {
            return;
        }
        tokio::time::sleep(backoff.next_wait()).await;
        fail_queued(&mut rx, &shared);
        if rx.is_closed() {
            return;
        }
    }
}

/// A byte stream to a log router: TCP, or TLS over it.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Connects to `dest` (`HOST:PORT`), over TLS when `tls` is given (the
/// server name is `HOST`).
async fn connect(
    dest: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> std::io::Result<Box<dyn Stream>> {
    let tcp = TcpStream::connect(dest).await?;
    let _ = tcp.set_nodelay(true);
    let Some(config) = tls else {
        return Ok(Box::new(tcp));
    };
    let host = dest.rsplit_once(':').map_or(dest, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    Ok(Box::new(connector.connect(name, tcp).await?))
}

/// Counts every queued batch as dropped.
fn fail_queued(rx: &mut mpsc::Receiver<Batch>, shared: &Shared) {
    while let Ok(batch) = rx.try_recv() {
        shared.failed(&batch, DropReason::LinkDown);
    }
}

/// Writes queued batches to `stream` until the shipper drops the link or
/// the connection fails; a batch whose write fails is counted dropped.
/// The connection is read first on every turn: a log router never writes
/// to a syslog sender, so anything readable is its close (what it sent
/// otherwise is discarded), noticed before the next batch is written.
async fn serve(
    stream: Box<dyn Stream>,
    rx: &mut mpsc::Receiver<Batch>,
    io_timeout: Duration,
    shared: &Shared,
) -> Ended {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut scratch = [0u8; 256];
    loop {
        tokio::select! {
            biased;
            read = reader.read(&mut scratch) => match read {
                Ok(0) => return Ended::Broken("the log router closed the connection".into()),
                Ok(_) => {}
                Err(e) => return Ended::Broken(e.to_string()),
            },
            batch = rx.recv() => {
                let Some(mut batch) = batch else {
                    return Ended::Closed;
                };
                while let Ok(more) = rx.try_recv() {
                    batch.append(more);
                }
                // A write cut short may have delivered some of the batch:
                // all of it is counted dropped (the count errs high, never
                // low).
                let write = async {
                    writer.write_all(&batch.bytes).await?;
                    writer.flush().await
                };
                match tokio::time::timeout(io_timeout, write).await {
                    Ok(Ok(())) => shared.delivered(&batch),
                    Ok(Err(e)) => {
                        shared.failed(&batch, DropReason::WriteFailed);
                        return Ended::Broken(e.to_string());
                    }
                    Err(_) => {
                        shared.failed(&batch, DropReason::WriteFailed);
                        return Ended::Broken("the write timed out".into());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(700));
        let waits: Vec<u64> = (0..5).map(|_| b.next_wait().as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 700, 700]);
        b.reset();
        assert_eq!(b.next_wait(), Duration::from_millis(100));
    }
}
