//! Accepting connections when the process is short of descriptors.
//!
//! An accept that fails with `EMFILE` (or `ENFILE`, `ENOBUFS`, `ENOMEM`)
//! leaves the connection in the kernel's queue, so the listener is readable
//! again at once: a loop that retries at once spins a core and writes a log
//! line per try (about a hundred a second was measured, with every listener
//! of the process deaf meanwhile). [`Acceptor`] pauses instead — 10 ms,
//! growing to 100 ms while accepts keep failing — and warns at most once
//! per [`WARN_EVERY`] with the count. Short pauses matter: a descriptor
//! freed elsewhere is used within 100 ms, where `axum::serve` (the control
//! API) sleeps a whole second after each failure.
//!
//! Logplex's sources have the same loop of their own
//! (`logplex::source::listener`): the crates do not depend on each other.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// First pause after a failed accept; doubles while accepts keep failing.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause between accept attempts while they fail.
const BACKOFF_MAX: Duration = Duration::from_millis(100);
/// At most one warning per this per listener, saying how many happened.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// A rate limit for a repeated warning: [`Throttle::hit`] counts one
/// occurrence and says when (and with how many) to log.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    unreported: u64,
}

impl Throttle {
    /// At most one report per `every`.
    pub fn new(every: Duration) -> Self {
        Throttle {
            every,
            last: None,
            unreported: 0,
        }
    }

    /// Counts one occurrence; `Some(n)` when a report is due, `n` being the
    /// occurrences it covers (this one included).
    pub fn hit(&mut self) -> Option<u64> {
        self.unreported += 1;
        let now = Instant::now();
        if self.last.is_some_and(|t| now < t + self.every) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }
}

/// The pauses between failing accepts: 10, 20, 40, 80, then 100 ms.
#[derive(Debug)]
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Backoff(BACKOFF_MIN)
    }

    fn next(&mut self) -> Duration {
        let now = self.0;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
        now
    }
}

/// A listener whose [`accept`](Acceptor::accept) never fails: failures are
/// counted in `switchyard_accept_errors_total{listener}`, warned about at
/// most once per [`WARN_EVERY`], and retried after a growing pause.
#[derive(Debug)]
pub struct Acceptor {
    listener: TcpListener,
    name: &'static str,
    backoff: Backoff,
    warn: Throttle,
    errors: metrics::Counter,
}

impl Acceptor {
    /// Wraps `listener`; `name` labels its metric and warnings.
    pub fn new(listener: TcpListener, name: &'static str) -> Self {
        Acceptor {
            listener,
            name,
            backoff: Backoff::new(),
            warn: Throttle::new(WARN_EVERY),
            errors: metrics::counter!("switchyard_accept_errors_total", "listener" => name),
        }
    }

    /// Sets `TCP_NODELAY` on the listener where accepted sockets inherit
    /// it (Linux), so that a new connection costs no `setsockopt` of its
    /// own; `false` where each accepted socket needs it set.
    pub fn nodelay_inherited(&self) -> bool {
        cfg!(target_os = "linux")
            && socket2::SockRef::from(&self.listener)
                .set_nodelay(true)
                .is_ok()
    }

    /// The listener's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection. Cancel-safe (for `select!` with a shutdown).
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match self.listener.accept().await {
                Ok(accepted) => {
                    self.backoff = Backoff::new();
                    return accepted;
                }
                Err(e) => {
                    self.errors.increment(1);
                    if let Some(n) = self.warn.hit() {
                        tracing::warn!(
                            listener = self.name,
                            error = %e,
                            errors = n,
                            "cannot accept connections; backing off"
                        );
                    }
                    tokio::time::sleep(self.backoff.next()).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_have_nodelay_set_on_them_or_inherited() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut acceptor = Acceptor::new(listener, "test");
        let inherited = acceptor.nodelay_inherited();
        assert_eq!(inherited, cfg!(target_os = "linux"));
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = acceptor.accept().await;
        if inherited {
            assert!(
                accepted.nodelay().expect("getsockopt"),
                "inherited from the listener"
            );
        }
    }

    #[test]
    fn failing_accepts_pause_longer_each_time_up_to_a_cap() {
        let mut b = Backoff::new();
        let ms: Vec<u128> = (0..7).map(|_| b.next().as_millis()).collect();
        assert_eq!(ms, [10, 20, 40, 80, 100, 100, 100]);
    }

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
}
