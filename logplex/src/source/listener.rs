//! The accept side of every stream source: [`Acceptor`] takes connections
//! off a listener and backs off when the process runs out of descriptors,
//! and [`Gate`] bounds how many connections a source holds open.
//!
//! Why both: an accept that fails with `EMFILE` leaves the connection in
//! the kernel's queue, so the listener is at once readable again; a loop
//! that retries at once spins a core and writes a log line per try (about
//! a hundred a second was measured). The gate keeps syslog senders from
//! taking the descriptors the control API, `/healthz` and the router need
//! in the first place. (The router has the same accept loop,
//! `router::accept`; the crates do not depend on each other.)

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::hub::{Logplex, Transport};

/// Accepts on `listener` until `shutdown` resolves, admitting each
/// connection through `transport`'s [`Gate`] and running `serve` on it in
/// its own task; a connection past the cap is closed at once (warned about
/// at most once per [`WARN_EVERY`], with the count).
pub(crate) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    logplex: &Logplex,
    transport: Transport,
    shutdown: impl Future<Output = ()> + Send,
    serve: F,
) -> io::Result<()>
where
    F: Fn(TcpStream, SocketAddr, Place) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let gate = logplex
        .gate(transport)
        .cloned()
        .ok_or_else(|| io::Error::other("no connection gate for this transport"))?;
    let mut acceptor = Acceptor::new(listener, transport);
    let mut refusals = Throttle::new(WARN_EVERY);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = acceptor.accept() => accepted,
        };
        let Some(place) = gate.admit() else {
            if let Some(n) = refusals.hit() {
                tracing::warn!(
                    transport = transport.as_str(),
                    %peer,
                    refused = n,
                    "logplex connections refused: the connection limit is reached"
                );
            }
            continue;
        };
        tokio::spawn(serve(stream, peer, place));
    }
}

/// First pause after a failed accept; doubles while accepts keep failing.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause between accept attempts while they fail.
const BACKOFF_MAX: Duration = Duration::from_millis(100);
/// At most one warning per this per listener (accept errors, refusals); the
/// warning says how many happened since the last one.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(10);

/// A rate limit for a repeated warning: [`Throttle::hit`] counts one
/// occurrence and says when (and with how many) to log.
#[derive(Debug)]
pub(crate) struct Throttle {
    every: Duration,
    last: Option<Instant>,
    unreported: u64,
}

impl Throttle {
    pub(crate) fn new(every: Duration) -> Self {
        Throttle {
            every,
            last: None,
            unreported: 0,
        }
    }

    /// Counts one occurrence; `Some(n)` when a warning is due, `n` being the
    /// occurrences it covers (this one included).
    pub(crate) fn hit(&mut self) -> Option<u64> {
        self.unreported += 1;
        let now = Instant::now();
        if self.last.is_some_and(|t| now < t + self.every) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }
}

/// The `listener` label of a source (the names the binary announces).
fn listener_name(transport: Transport) -> &'static str {
    match transport {
        Transport::Tcp => "syslog-tcp",
        Transport::Tls => "syslog-tls",
        Transport::Http => "logplex-http",
        Transport::Udp | Transport::InProcess => "logplex",
    }
}

/// A listener whose [`accept`](Acceptor::accept) never returns an error:
/// failures (out of descriptors, out of memory, a connection reset while
/// queued) are counted in `switchyard_accept_errors_total{listener}`, warned about at
/// most once per [`WARN_EVERY`], and retried after a pause of 10 ms that
/// grows to 100 ms while they go on.
#[derive(Debug)]
pub(crate) struct Acceptor {
    listener: TcpListener,
    transport: Transport,
    backoff: Backoff,
    warn: Throttle,
    errors: metrics::Counter,
}

impl Acceptor {
    pub(crate) fn new(listener: TcpListener, transport: Transport) -> Self {
        Acceptor {
            listener,
            transport,
            backoff: Backoff::default(),
            warn: Throttle::new(WARN_EVERY),
            errors: metrics::counter!("switchyard_accept_errors_total", "listener" => listener_name(transport)),
        }
    }

    /// The next connection. Cancel-safe (for `select!` with a shutdown).
    pub(crate) async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match self.listener.accept().await {
                Ok(accepted) => {
                    self.backoff = Backoff::default();
                    return accepted;
                }
                Err(e) => self.failed(&e).await,
            }
        }
    }

    async fn failed(&mut self, e: &io::Error) {
        self.errors.increment(1);
        if let Some(n) = self.warn.hit() {
            tracing::warn!(
                transport = self.transport.as_str(),
                error = %e,
                errors = n,
                "logplex cannot accept connections; backing off"
            );
        }
        tokio::time::sleep(self.backoff.next()).await;
    }
}

/// The pauses between failing accepts: 10, 20, 40, 80, then 100 ms.
#[derive(Debug)]
pub(crate) struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(BACKOFF_MIN)
    }
}

impl Backoff {
    /// The pause to take now; the next one is longer, up to the cap.
    pub(crate) fn next(&mut self) -> Duration {
        let now = self.0;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
        now
    }
}

/// The connection cap of one pool of listeners (syslog TCP and TLS share
/// one; `POST /logs` has its own) and the counts of one transport on it.
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    slots: Arc<Semaphore>,
    counts: Arc<Counts>,
}

/// Connection counters of one transport, read by
/// [`Logplex::connection_stats`](crate::Logplex::connection_stats).
#[derive(Debug)]
pub(crate) struct Counts {
    pub(crate) open: AtomicUsize,
    pub(crate) refused: AtomicU64,
    pub(crate) idle_closed: AtomicU64,
    open_gauge: metrics::Gauge,
    refused_total: metrics::Counter,
    idle_closed_total: metrics::Counter,
}

impl Counts {
    pub(crate) fn new(transport: Transport) -> Self {
        let t = transport.as_str();
        Counts {
            open: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            idle_closed: AtomicU64::new(0),
            open_gauge: metrics::gauge!("logplex_connections_open", "transport" => t),
            refused_total: metrics::counter!("logplex_connections_refused_total", "transport" => t),
            idle_closed_total: metrics::counter!("logplex_connections_idle_closed_total", "transport" => t),
        }
    }

    /// A connection closed because it sent nothing for the idle timeout.
    pub(crate) fn idle_closed(&self) {
        self.idle_closed.fetch_add(1, Ordering::Relaxed);
        self.idle_closed_total.increment(1);
    }
}

/// An admitted connection's place; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct Place {
    _permit: OwnedSemaphorePermit,
    counts: Arc<Counts>,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.counts.open.fetch_sub(1, Ordering::Relaxed);
        self.counts.open_gauge.decrement(1.0);
    }
}

impl Gate {
    pub(crate) fn new(slots: Arc<Semaphore>, counts: Arc<Counts>) -> Self {
        Gate { slots, counts }
    }

    /// The counts of this gate's transport.
    pub(crate) fn counts(&self) -> &Arc<Counts> {
        &self.counts
    }

    /// A place for an accepted connection, or `None` when the pool is full:
    /// the caller drops the connection, which closes it, and the refusal is
    /// counted (`logplex_connections_refused_total`).
    pub(crate) fn admit(&self) -> Option<Place> {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            self.counts.refused.fetch_add(1, Ordering::Relaxed);
            self.counts.refused_total.increment(1);
            return None;
        };
        self.counts.open.fetch_add(1, Ordering::Relaxed);
        self.counts.open_gauge.increment(1.0);
        Some(Place {
            _permit: permit,
            counts: self.counts.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_throttle_reports_once_per_interval_with_the_count() {
        let mut t = Throttle::new(Duration::from_secs(10));
        assert_eq!(t.hit(), Some(1), "the first occurrence is reported at once");
        for _ in 0..99 {
            assert_eq!(t.hit(), None);
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(t.hit(), Some(100), "the next report covers all since");
        assert_eq!(t.hit(), None);
    }

    #[test]
    fn failing_accepts_pause_longer_each_time_up_to_a_cap() {
        let mut b = Backoff::default();
        let ms: Vec<u128> = (0..7).map(|_| b.next().as_millis()).collect();
        assert_eq!(ms, [10, 20, 40, 80, 100, 100, 100]);
    }

    #[tokio::test]
    async fn a_full_gate_refuses_and_a_dropped_place_is_free_again() {
        let counts = Arc::new(Counts::new(Transport::Tcp));
        let gate = Gate::new(Arc::new(Semaphore::new(2)), counts.clone());
        let a = gate.admit().expect("first");
        let _b = gate.admit().expect("second");
        assert!(gate.admit().is_none(), "a third is refused");
        assert_eq!(counts.open.load(Ordering::Relaxed), 2);
        assert_eq!(counts.refused.load(Ordering::Relaxed), 1);
        drop(a);
        assert_eq!(counts.open.load(Ordering::Relaxed), 1);
        assert!(gate.admit().is_some(), "the freed place is taken again");
    }
}
