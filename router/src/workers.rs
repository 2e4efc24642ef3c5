//! Thread-per-core serving: N worker threads, each running its own
//! current-thread tokio runtime, all accepting from the same listening
//! socket. A connection then lives on the thread that accepted it: its
//! request tasks, timers and upstream connection tasks never wait on another
//! thread's scheduler or timer wheel. What requests do share (the route
//! table, an app's queue, a dyno's pool) is lock-free already.
//!
//! This is nginx's worker model (one shared socket, no `reuseport`): a
//! worker takes a new connection when it gets to it, so a busy worker
//! accepts less and the load evens out. Per-thread `SO_REUSEPORT` sockets
//! were tried first; the kernel then hashes connections to threads
//! regardless of load, and a few long-lived connections (HTTP/2 clients)
//! landed unevenly enough to double p99 (BENCHMARKS.md). The trade-off of
//! the model is nginx's too: a thread busy with one heavy connection is not
//! helped by idle siblings (no work stealing), which for a proxy, whose
//! per-request work is small and even, costs less than the cross-thread
//! wake-ups it saves.
//!
//! "A busy worker accepts less" only holds for connections that arrive
//! while one worker is busy. A burst of long-lived connections (sixteen
//! HTTP/2 clients starting at once) could still land 12 to 4, and stay so.
//! So the workers of one listener also count the connections each holds
//! ([`WorkerLoads`]), and a worker holding [`DEFER_MARGIN`] or more above
//! the least loaded one waits [`DEFER_FOR`] before its next accept, which
//! leaves the connection to the sibling (every worker is woken for it).
//! If the sibling is too busy to take it, the waiting worker accepts after
//! all: a connection is delayed at most that long, never refused.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

/// The accept queue of every Switchyard listener. The standard library's
/// (and tokio's) `bind` asks for 128, which a burst of a few hundred
/// connects overflows: the kernel then drops the handshake's last ACK, the
/// client believes it is connected and its first bytes wait a second or more
/// for a SYN-ACK retransmit, or with SYN cookies are lost outright. The
/// kernel caps this at `net.core.somaxconn`.
pub const LISTEN_BACKLOG: i32 = 4096;

/// Binds one listening socket with [`LISTEN_BACKLOG`].
pub fn bind_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// Binds `addr` once and returns `n` handles (at least one) to that one
/// listening socket, one per worker thread.
pub fn bind_shared(addr: SocketAddr, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let first = bind_listener(addr)?;
    let mut out = Vec::with_capacity(n.max(1));
    for _ in 1..n.max(1) {
        out.push(first.try_clone()?);
    }
    out.insert(0, first);
    Ok(out)
}

/// A worker holding this many connections more than its least loaded
/// sibling lets the sibling take the next one.
pub const DEFER_MARGIN: usize = 2;

/// How long a worker above the margin waits before accepting anyway.
pub const DEFER_FOR: Duration = Duration::from_millis(1);

/// Connections held by each worker thread of one listener. Only the
/// accepting worker writes its own slot, once per accept and once per close.
#[derive(Debug)]
pub struct WorkerLoads {
    held: Box<[AtomicUsize]>,
}

impl WorkerLoads {
    fn new(workers: usize) -> Arc<Self> {
        Arc::new(WorkerLoads {
            held: (0..workers).map(|_| AtomicUsize::new(0)).collect(),
        })
    }

    /// Connections worker `i` holds now.
    pub fn held(&self, i: usize) -> usize {
        self.held.get(i).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// True when worker `i` holds [`DEFER_MARGIN`] or more connections than
    /// some sibling.
    fn should_defer(&self, i: usize) -> bool {
        let mine = self.held(i);
        mine >= DEFER_MARGIN
            && self
                .held
                .iter()
                .enumerate()
                .any(|(j, c)| j != i && c.load(Ordering::Relaxed) + DEFER_MARGIN <= mine)
    }
}

/// This thread's place among the workers of its listener; set by
/// [`run_per_thread`] on each worker thread, absent elsewhere.
#[derive(Debug, Clone)]
pub(crate) struct WorkerSlot {
    loads: Arc<WorkerLoads>,
    index: usize,
}

thread_local! {
    static SLOT: RefCell<Option<WorkerSlot>> = const { RefCell::new(None) };
}

/// One accepted connection counted against its worker until dropped.
#[derive(Debug)]
pub(crate) struct Held(WorkerSlot);

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(c) = self.0.loads.held.get(self.0.index) {
            c.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl WorkerSlot {
    /// The slot of the calling worker thread, if it is one.
    pub(crate) fn current() -> Option<WorkerSlot> {
        SLOT.with(|s| s.borrow().clone())
    }

    /// Waits [`DEFER_FOR`] if this worker holds too many more connections
    /// than a sibling; returns at once otherwise.
    pub(crate) async fn defer_if_busier(&self) {
        if self.loads.should_defer(self.index) {
            tokio::time::sleep(DEFER_FOR).await;
        }
    }

    /// Counts a connection this worker just accepted.
    pub(crate) fn hold(&self) -> Held {
        if let Some(c) = self.loads.held.get(self.index) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        Held(self.clone())
    }
}

/// Runs `serve` once per listener, each on its own named thread with a
/// current-thread runtime, and resolves when every one has returned (with
/// the first error, if any). `serve` usually wraps [`crate::serve`] or
/// [`crate::serve_tls`] with the caller's shutdown future.
pub async fn run_per_thread<F, Fut>(
    name: &str,
    listeners: Vec<std::net::TcpListener>,
    serve: F,
) -> io::Result<()>
where
    F: Fn(TcpListener) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<()>> + 'static,
{
    let serve = Arc::new(serve);
    let loads = WorkerLoads::new(listeners.len());
    let mut done = Vec::with_capacity(listeners.len());
    for (i, listener) in listeners.into_iter().enumerate() {
        let serve = serve.clone();
        let slot = WorkerSlot {
            loads: loads.clone(),
            index: i,
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("{name}-{i}"))
            .spawn(move || {
                SLOT.with(|s| *s.borrow_mut() = Some(slot));
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .and_then(|runtime| {
                        runtime.block_on(async move {
                            listener.set_nonblocking(true)?;
                            serve(TcpListener::from_std(listener)?).await
                        })
                    });
                let _ = tx.send(result);
            })?;
        done.push(rx);
    }
    let mut first_error = None;
    for rx in done {
        let result = rx
            .await
            .unwrap_or_else(|_| Err(io::Error::other("a router worker thread panicked")));
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_share_one_socket_and_a_taken_port_is_refused() {
        let listeners = bind_shared("127.0.0.1:0".parse().expect("addr"), 3).expect("bind");
        assert_eq!(listeners.len(), 3);
        let addr = listeners[0].local_addr().expect("addr");
        assert_ne!(addr.port(), 0);
        for l in &listeners {
            assert_eq!(l.local_addr().expect("addr"), addr);
        }
        let err = bind_shared(addr, 2).expect_err("a port in use is refused");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert_eq!(
            bind_shared("127.0.0.1:0".parse().expect("addr"), 0)
                .expect("bind")
                .len(),
            1,
            "zero threads still binds one listener"
        );
    }

    #[test]
    fn a_worker_defers_only_when_a_sibling_holds_the_margin_fewer() {
        let loads = WorkerLoads::new(3);
        let slot = |index| WorkerSlot {
            loads: loads.clone(),
            index,
        };
        assert!(!loads.should_defer(0), "all idle: nobody defers");
        let a: Vec<Held> = (0..DEFER_MARGIN).map(|_| slot(0).hold()).collect();
        assert_eq!(loads.held(0), DEFER_MARGIN);
        assert!(
            loads.should_defer(0),
            "worker 0 is the margin above 1 and 2"
        );
        assert!(!loads.should_defer(1), "the idle ones take connections");
        let _b: Vec<Held> = (0..1).map(|_| slot(1).hold()).collect();
        let _c: Vec<Held> = (0..1).map(|_| slot(2).hold()).collect();
        assert!(
            !loads.should_defer(0),
            "one above the others is within the margin"
        );
        drop(a);
        assert_eq!(loads.held(0), 0, "closed connections are released");
        assert!(!loads.should_defer(1));
        assert!(
            !WorkerLoads::new(1).should_defer(0),
            "a lone worker never waits"
        );
    }
}
