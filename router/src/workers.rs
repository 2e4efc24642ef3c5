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

use std::future::Future;
use std::io;
use std::net::SocketAddr;

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
    share(bind_listener(addr)?, n)
}

/// `n` handles to one listening socket (at least one): `first` and clones.
pub fn share(first: std::net::TcpListener, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let mut out = Vec::with_capacity(n.max(1));
    for _ in 1..n.max(1) {
        out.push(first.try_clone()?);
    }
    out.insert(0, first);
    Ok(out)
}

thread_local! {
    /// How many worker threads share this thread's listening socket.
    static SHARING: std::cell::Cell<usize> = const { std::cell::Cell::new(1) };
}

/// How many worker threads share the listening socket of the calling
/// thread: the count [`run_per_thread`] started, or 1 on any other thread.
pub fn sharing() -> usize {
    SHARING.get()
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
    let serve = std::sync::Arc::new(serve);
    let workers = listeners.len();
    let mut done = Vec::with_capacity(workers);
    for (i, listener) in listeners.into_iter().enumerate() {
        let serve = serve.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("{name}-{i}"))
            .spawn(move || {
                SHARING.set(workers);
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

    #[tokio::test]
    async fn each_worker_knows_how_many_share_its_listener() {
        assert_eq!(sharing(), 1, "a thread run_per_thread did not start");
        let listeners = bind_shared("127.0.0.1:0".parse().expect("addr"), 3).expect("bind");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        run_per_thread("sharing-test", listeners, move |_| {
            let record = record.clone();
            async move {
                record.lock().expect("lock").push(sharing());
                Ok(())
            }
        })
        .await
        .expect("workers");
        assert_eq!(*seen.lock().expect("lock"), vec![3, 3, 3]);
    }
}
