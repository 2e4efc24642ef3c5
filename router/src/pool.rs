//! Keep-alive connections to one dyno, and how new ones are made.
//!
//! Each dyno's pool is a lock-free queue of idle HTTP/1.1 connections, kept
//! in the dyno's live state so it survives table swaps. A connection goes
//! back to the pool when its response body has been read to the end, and is
//! dropped when it has been idle longer than the pool's idle timeout (the
//! dyno's server may close it first; Heroku asks dynos to keep connections
//! open for at least 90 s, and so do we).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_queue::SegQueue;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::RequestBody;

/// A connection ready to carry a request to a dyno.
pub type Sender = http1::SendRequest<RequestBody>;

/// Most idle connections kept per dyno.
const MAX_IDLE: usize = 256;

#[derive(Debug)]
struct Idle {
    sender: Sender,
    since: Instant,
}

/// Idle keep-alive connections to one dyno.
#[derive(Debug, Default)]
pub struct Pool {
    idle: SegQueue<Idle>,
    count: AtomicUsize,
}

impl Pool {
    /// Takes an idle connection that is still open and younger than `max_idle`.
    pub fn checkout(&self, max_idle: Duration) -> Option<Sender> {
        while let Some(entry) = self.idle.pop() {
            self.count.fetch_sub(1, Ordering::Relaxed);
            if !entry.sender.is_closed()
                && entry.sender.is_ready()
                && entry.since.elapsed() < max_idle
            {
                return Some(entry.sender);
            }
        }
        None
    }

    /// Returns a connection whose last response has been read completely.
    pub fn checkin(&self, sender: Sender) {
        if sender.is_closed() || self.count.load(Ordering::Relaxed) >= MAX_IDLE {
            return;
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.idle.push(Idle {
            sender,
            since: Instant::now(),
        });
    }

    /// Idle connections held.
    pub fn idle(&self) -> usize {
        self.count.load(Ordering::Relaxed)
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
