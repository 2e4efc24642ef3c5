//! Keep-alive connections to one dyno, and how new ones are made.
//!
//! Each dyno's pool keeps idle HTTP/1.1 connections in the dyno's live
//! state so they survive table swaps. A connection goes back to the pool
//! when its response body has been read to the end, and is dropped when it
//! has been idle longer than the pool's idle timeout (the dyno's server may
//! close it first; Heroku asks dynos to keep connections open for at least
//! 90 s, and so do we). A connection the dyno closed while it sat idle is
//! passed over at checkout; one it closes just as a request arrives (its
//! keep-alive timeout racing the request) sends an idempotent bodiless
//! request once more on a new connection ([`crate::upstream::round_trip`]).
//!
//! The pool is split by worker thread. A connection's socket is registered
//! with the reactor of the thread that opened it, so a request on another
//! thread that borrowed it would have every readiness event handed across
//! threads (a wake-up and a context switch each way). Each worker therefore takes and
//! returns connections in its own shard, most recently used first (as
//! nginx's upstream keep-alive does), so a burst that opened many leaves
//! the extra ones to idle out rather than keeping all of them warm in
//! rotation. A shard's lock is taken only by its own thread, unless more
//! threads than [`SHARDS`] use one pool.
//!
//! Idle connections are reaped in the background, not only when a request
//! looks for one: the first connection checked into an empty shard starts a
//! timer task (on the checking-in thread's runtime) that wakes when the
//! shard's oldest connection passes the idle timeout, drops every expired
//! or closed one, and goes back to sleep until the next one expires; it ends
//! when the shard is empty. A dyno that stops getting traffic therefore does
//! not keep its connections (and file descriptors) open.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;

pub use crate::upstream::{connect, ConnectError};

/// A connection ready to carry a request to a dyno.
pub type Sender = Box<crate::upstream::Conn>;

/// Most idle connections kept per dyno and worker thread.
const MAX_IDLE: usize = 256;

/// Shards per pool; threads past this many share shards.
pub const SHARDS: usize = 16;

#[derive(Debug)]
struct Idle {
    sender: Sender,
    since: Instant,
}

/// One thread's idle connections.
#[derive(Debug, Default)]
struct Shard {
    /// Oldest first; taken from the back (most recently used).
    idle: Vec<Idle>,
    /// True while a reaper task watches this shard.
    reaping: bool,
}

/// Idle keep-alive connections to one dyno.
#[derive(Debug)]
pub struct Pool {
    shards: Box<[Mutex<Shard>]>,
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

/// The calling thread's shard number, fixed at its first use.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    SHARD.with(|s| {
        if s.get() == usize::MAX {
            s.set(NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS);
        }
        s.get()
    })
}

impl Pool {
    fn shard(&self, index: usize) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes this thread's most recently used idle connection that is still
    /// open and younger than `max_idle` at `now`.
    pub fn checkout(&self, max_idle: Duration, now: Instant) -> Option<Sender> {
        let mut shard = self.shard(shard_index());
        while let Some(mut entry) = shard.idle.pop() {
            if now.saturating_duration_since(entry.since) < max_idle && entry.sender.is_open() {
                return Some(entry.sender);
            }
        }
        None
    }

    /// Returns a connection whose last response has been read completely
    /// (at `now`); it is dropped once idle for `max_idle` (see the module
    /// docs).
    pub fn checkin(self: &Arc<Self>, sender: Sender, max_idle: Duration, now: Instant) {
        let index = shard_index();
        let mut shard = self.shard(index);
        if shard.idle.len() >= MAX_IDLE {
            // Keep the fresher ones: the oldest idles out first anyway.
            shard.idle.remove(0);
        }
        shard.idle.push(Idle { sender, since: now });
        if !shard.reaping {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                shard.reaping = true;
                runtime.spawn(reap(Arc::downgrade(self), index, max_idle));
            }
        }
    }

    /// Idle connections held, over all threads.
    pub fn idle(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).idle.len())
            .sum()
    }
}

/// Drops shard `index`'s connections as they pass `max_idle` (or close),
/// until the shard is empty or the pool is gone.
async fn reap(pool: Weak<Pool>, index: usize, max_idle: Duration) {
    loop {
        let next = {
            let Some(pool) = pool.upgrade() else { return };
            let mut shard = pool.shard(index);
            let now = Instant::now();
            shard
                .idle
                .retain_mut(|e| now.duration_since(e.since) < max_idle && e.sender.is_open());
            match shard.idle.first() {
                Some(oldest) => oldest.since + max_idle,
                None => {
                    shard.reaping = false;
                    return;
                }
            }
        };
        tokio::time::sleep_until(next).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// An open connection to a real socket, made without awaiting (so
    /// paused time does not move), and the dyno's end of it.
    fn idle_connection(listener: &std::net::TcpListener) -> (Sender, std::net::TcpStream) {
        let ours =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (theirs, _) = listener.accept().expect("accept");
        ours.set_nonblocking(true).expect("nonblocking");
        theirs
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("timeout");
        let ours = tokio::net::TcpStream::from_std(ours).expect("register");
        (Box::new(crate::upstream::Conn::new(ours)), theirs)
    }

    fn dyno() -> std::net::TcpListener {
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind")
    }

    #[tokio::test]
    async fn a_connection_is_reused_only_by_the_thread_that_opened_it() {
        let listener = dyno();
        let pool = Arc::new(Pool::default());
        let (first, _d1) = idle_connection(&listener);
        let (second, _d2) = idle_connection(&listener);
        pool.checkin(first, Duration::from_secs(90), Instant::now());
        pool.checkin(second, Duration::from_secs(90), Instant::now());
        assert_eq!(pool.idle(), 2);
        std::thread::scope(|s| {
            s.spawn(|| {
                assert!(
                    pool.checkout(Duration::from_secs(90), Instant::now())
                        .is_none(),
                    "another thread does not borrow this thread's connections"
                );
            });
        });
        assert!(pool
            .checkout(Duration::from_secs(90), Instant::now())
            .is_some());
        assert_eq!(pool.idle(), 1);
        assert!(
            pool.checkout(Duration::ZERO, Instant::now()).is_none(),
            "connections idle past max_idle are dropped"
        );
        assert_eq!(pool.idle(), 0);
    }

    #[tokio::test]
    async fn a_connection_the_dyno_closed_or_wrote_to_while_idle_is_not_handed_out() {
        let listener = dyno();
        let pool = Arc::new(Pool::default());
        let (closed, closed_dyno) = idle_connection(&listener);
        let (chatty, mut chatty_dyno) = idle_connection(&listener);
        let (fine, _fine_dyno) = idle_connection(&listener);
        drop(closed_dyno);
        chatty_dyno
            .write_all(b"HTTP/1.1 200 OK\r\n")
            .expect("write");
        // Once the reactor has seen both become readable, they go idle.
        closed.readable().await;
        chatty.readable().await;
        pool.checkin(fine, Duration::from_secs(90), Instant::now());
        pool.checkin(chatty, Duration::from_secs(90), Instant::now());
        pool.checkin(closed, Duration::from_secs(90), Instant::now());
        let mut got = pool
            .checkout(Duration::from_secs(90), Instant::now())
            .expect("the open one");
        assert!(got.is_open());
        assert_eq!(pool.idle(), 0, "the closed and the chatty one were dropped");
        let mut buf = [0u8; 1];
        // Closed with the dyno's bytes unread: a reset, or an end.
        let end = chatty_dyno.read(&mut buf);
        assert!(
            matches!(&end, Ok(0))
                || matches!(&end, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "and closed: {end:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_are_reaped_in_the_background() {
        use tokio::time::sleep;
        const MAX_IDLE: Duration = Duration::from_secs(90);
        let listener = dyno();
        let pool = Arc::new(Pool::default());
        let (old, mut old_dyno) = idle_connection(&listener);
        pool.checkin(old, MAX_IDLE, Instant::now());
        sleep(Duration::from_secs(60)).await;
        let (young, _young_dyno) = idle_connection(&listener);
        pool.checkin(young, MAX_IDLE, Instant::now());
        sleep(Duration::from_secs(29)).await;
        assert_eq!(pool.idle(), 2, "neither has idled out yet");
        sleep(Duration::from_secs(2)).await;
        assert_eq!(pool.idle(), 1, "the older one is reaped with no checkout");
        let mut buf = [0u8; 1];
        assert_eq!(
            old_dyno.read(&mut buf).expect("read"),
            0,
            "its connection is closed"
        );
        sleep(Duration::from_secs(60)).await;
        assert_eq!(pool.idle(), 0);
        // The shard's reaper has ended; the next check-in starts another.
        let (again, _dyno) = idle_connection(&listener);
        pool.checkin(again, MAX_IDLE, Instant::now());
        sleep(MAX_IDLE + Duration::from_secs(1)).await;
        assert_eq!(pool.idle(), 0);
    }
}
