//! Keep-alive connections to one dyno, and how new ones are made.
//!
//! Each dyno's pool keeps idle HTTP/1.1 connections in the dyno's live
//! state so they survive table swaps. A connection goes back to the pool
//! when its response body has been read to the end, and is dropped when it
//! has been idle longer than the pool's idle timeout (the dyno's server may
//! close it first; Heroku asks dynos to keep connections open for at least
//! 90 s, and so do we).
//!
//! The pool is split by worker thread. A connection's I/O task runs on the
//! runtime of the thread that opened it, so a request on another thread
//! that borrowed it would hand every read and write across threads (a
//! wake-up and a context switch each way). Each worker therefore takes and
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
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::RequestBody;

/// A connection ready to carry a request to a dyno.
pub type Sender = http1::SendRequest<RequestBody>;

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
    /// open and younger than `max_idle`.
    pub fn checkout(&self, max_idle: Duration) -> Option<Sender> {
        let mut shard = self.shard(shard_index());
        while let Some(entry) = shard.idle.pop() {
            if !entry.sender.is_closed()
                && entry.sender.is_ready()
                && entry.since.elapsed() < max_idle
            {
                return Some(entry.sender);
            }
        }
        None
    }

    /// Returns a connection whose last response has been read completely;
    /// it is dropped once idle for `max_idle` (see the module docs).
    pub fn checkin(self: &Arc<Self>, sender: Sender, max_idle: Duration) {
        if sender.is_closed() {
            return;
        }
        let index = shard_index();
        let mut shard = self.shard(index);
        if shard.idle.len() >= MAX_IDLE {
            // Keep the fresher ones: the oldest idles out first anyway.
            shard.idle.remove(0);
        }
        shard.idle.push(Idle {
            sender,
            since: Instant::now(),
        });
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
                .retain(|e| now.duration_since(e.since) < max_idle && !e.sender.is_closed());
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

/// Why a connection could not be set up. Only these are ever retried.
#[derive(Debug)]
pub enum ConnectError {
    /// The connect did not finish within the connect timeout (H19).
    Timeout,
    /// The dyno refused or reset the connection (H21).
    Refused(io::Error),
}

/// Opens a new HTTP/1.1 connection to `addr` within `timeout`.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Sender, ConnectError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(ConnectError::Timeout),
        Ok(Err(e)) => return Err(ConnectError::Refused(e)),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ConnectError::Refused(io::Error::other(e)))?;
    tokio::spawn(async move {
        // Errors surface on the request future; nothing to do here.
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_is_reused_only_by_the_thread_that_opened_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        // A dyno that accepts and holds its connections open.
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let pool = Arc::new(Pool::default());
        let mut first = connect(addr, Duration::from_secs(5))
            .await
            .expect("connect");
        let mut second = connect(addr, Duration::from_secs(5))
            .await
            .expect("connect");
        first.ready().await.expect("open");
        second.ready().await.expect("open");
        pool.checkin(first, Duration::from_secs(90));
        pool.checkin(second, Duration::from_secs(90));
        assert_eq!(pool.idle(), 2);
        std::thread::scope(|s| {
            s.spawn(|| {
                assert!(
                    pool.checkout(Duration::from_secs(90)).is_none(),
                    "another thread does not borrow this thread's connections"
                );
            });
        });
        assert!(pool.checkout(Duration::from_secs(90)).is_some());
        assert_eq!(pool.idle(), 1);
        assert!(
            pool.checkout(Duration::ZERO).is_none(),
            "connections idle past max_idle are dropped"
        );
        assert_eq!(pool.idle(), 0);
    }

    /// A ready connection over an in-memory pipe, and the dyno's end of it.
    async fn idle_connection() -> (Sender, tokio::io::DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(1024);
        let (mut sender, conn) = http1::handshake(TokioIo::new(ours))
            .await
            .expect("handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        sender.ready().await.expect("ready");
        (sender, theirs)
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_are_reaped_in_the_background() {
        use tokio::io::AsyncReadExt;
        use tokio::time::sleep;
        const MAX_IDLE: Duration = Duration::from_secs(90);
        let pool = Arc::new(Pool::default());
        let (old, mut old_dyno) = idle_connection().await;
        pool.checkin(old, MAX_IDLE);
        sleep(Duration::from_secs(60)).await;
        let (young, _young_dyno) = idle_connection().await;
        pool.checkin(young, MAX_IDLE);
        sleep(Duration::from_secs(29)).await;
        assert_eq!(pool.idle(), 2, "neither has idled out yet");
        sleep(Duration::from_secs(2)).await;
        assert_eq!(pool.idle(), 1, "the older one is reaped with no checkout");
        let mut buf = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(1), old_dyno.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0))), "its connection is closed");
        sleep(Duration::from_secs(60)).await;
        assert_eq!(pool.idle(), 0);
        // The shard's reaper has ended; the next check-in starts another.
        let (again, _dyno) = idle_connection().await;
        pool.checkin(again, MAX_IDLE);
        sleep(MAX_IDLE + Duration::from_secs(1)).await;
        assert_eq!(pool.idle(), 0);
    }
}
