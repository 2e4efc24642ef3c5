//! Thread-per-core serving: one listener per worker thread, all bound to the
//! same address with `SO_REUSEPORT`, each thread running its own
//! current-thread tokio runtime. The kernel spreads new connections across
//! the listeners, and a connection then lives on one thread: its request
//! tasks, timers and upstream connection tasks never wait on another
//! thread's scheduler or timer wheel. What requests do share (the route
//! table, an app's queue, a dyno's pool) is lock-free already.
//!
//! This is nginx's worker model. The trade-off is the one nginx makes: a
//! thread busy with one heavy connection is not helped by idle siblings
//! (there is no work stealing), which for a proxy, whose per-request work is
//! small and even, costs less than the cross-thread wake-ups it saves
//! (see BENCHMARKS.md).
//!
//! `SO_REUSEPORT` on Linux only lets sockets of the same user share a port,
//! so another user cannot bind alongside and take a share of connections.

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

/// Binds one listening socket with [`LISTEN_BACKLOG`] (no `SO_REUSEPORT`:
/// a second process on the same port is an error, not a silent sharer).
pub fn bind_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// Binds `n` listening sockets (at least one) to `addr` with `SO_REUSEPORT`.
/// With port 0 the first socket picks a free port and the others join it.
///
/// `SO_REUSEPORT` would let this process share a port another process
/// already listens on, so a fixed port is first probed with a plain bind:
/// "address in use" stays an error, as it is for every other listener.
pub fn bind_reuseport(addr: SocketAddr, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
    if addr.port() != 0 {
        // Bound, never listening: no connection can land on the probe.
        let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        probe.set_reuse_address(true)?;
        probe.bind(&addr.into())?;
    }
    let mut out: Vec<std::net::TcpListener> = Vec::with_capacity(n.max(1));
    let mut at = addr;
    for _ in 0..n.max(1) {
        let socket = Socket::new(Domain::for_address(at), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&at.into())?;
        socket.listen(LISTEN_BACKLOG)?;
        let listener: std::net::TcpListener = socket.into();
        at = listener.local_addr()?;
        out.push(listener);
    }
    Ok(out)
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
    let mut done = Vec::with_capacity(listeners.len());
    for (i, listener) in listeners.into_iter().enumerate() {
        let serve = serve.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("{name}-{i}"))
            .spawn(move || {
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
    fn listeners_share_the_port_the_first_one_picked() {
        let listeners = bind_reuseport("127.0.0.1:0".parse().expect("addr"), 3).expect("bind");
        assert_eq!(listeners.len(), 3);
        let port = listeners[0].local_addr().expect("addr").port();
        assert_ne!(port, 0);
        for l in &listeners {
            assert_eq!(l.local_addr().expect("addr").port(), port);
        }
        // The port is taken now: a second group may not join it.
        let taken = listeners[0].local_addr().expect("addr");
        let err = bind_reuseport(taken, 2).expect_err("a port in use is refused");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert_eq!(
            bind_reuseport("127.0.0.1:0".parse().expect("addr"), 0)
                .expect("bind")
                .len(),
            1,
            "zero threads still binds one listener"
        );
    }
}
