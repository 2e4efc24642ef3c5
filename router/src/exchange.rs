//! One request's journey, from the moment a dyno answers until its body
//! ends: the facts the log line needs, the dyno slot, and the connection to
//! return to the pool.

use std::sync::Arc;

use tokio::time::Instant;

use crate::capacity::{Admission, Slot};
use crate::hcode::HCode;
use crate::logline::{RouterLine, Sock};
use crate::pool::Sender;
use crate::server::Router;

/// The facts of a request that every log line carries.
#[derive(Debug, Clone)]
pub struct Facts {
    /// App id (log channel key).
    pub app_id: Arc<str>,
    /// App name (metrics label).
    pub app_name: Arc<str>,
    /// The app's metric handles.
    pub metrics: Arc<crate::metrics::AppMetrics>,
    /// When the router accepted the request.
    pub accepted: Instant,
    /// Method.
    pub method: http::Method,
    /// Path and query.
    pub path: String,
    /// Host as sent.
    pub host: String,
    /// Request id in use.
    pub request_id: String,
    /// X-Forwarded-For sent to the dyno (or that would have been).
    pub fwd: String,
    /// `http` / `https`.
    pub protocol: &'static str,
    /// `http2` when the client spoke HTTP/2.
    pub http_version: Option<&'static str>,
    /// `tls1.2` / `tls1.3`.
    pub tls_version: Option<&'static str>,
    /// Queue position at arrival.
    pub queue: usize,
    /// Time waiting for a dyno, ms: in the queue, for a booting dyno or out
    /// a quarantine (`wait=` in the log line).
    pub wait_ms: u64,
    /// The part of `wait_ms` spent in the app's queue, which counts toward
    /// the request timeout (H12).
    pub queued_ms: u64,
    /// The router that forwarded this request here, when one did
    /// (`forwarded_by=`; [`crate::forward`]).
    pub forwarded_by: Option<Box<str>>,
    /// The owner this router forwarded the request to, when it did
    /// (`forwarded_to=`, on the lines this router writes for it).
    pub forwarded_to: Option<Arc<str>>,
    /// Accept time, epoch ms (`X-Request-Start`).
    pub start_ms: u64,
    /// The listener's port (`X-Forwarded-Port`).
    pub port: u16,
    /// This router sets the forwarding headers (it does not when another
    /// router forwarded the request and set them).
    pub sets_forwarding: bool,
}

impl Facts {
    /// The forwarding fields this router sets on the request it sends on.
    pub fn forwarding(&self) -> Option<crate::headers::Forwarding<'_>> {
        self.sets_forwarding.then(|| crate::headers::Forwarding {
            forwarded_for: &self.fwd,
            proto: self.protocol,
            port: self.port,
            start_ms: self.start_ms,
            request_id: &self.request_id,
        })
    }

    /// A log line with these facts and nothing else filled in.
    pub fn line(&self) -> RouterLine<'_> {
        RouterLine {
            method: self.method.as_str(),
            path: &self.path,
            host: &self.host,
            request_id: &self.request_id,
            fwd: &self.fwd,
            protocol: self.protocol,
            http_version: self.http_version,
            tls_version: self.tls_version,
            queue: self.queue,
            wait_ms: self.wait_ms,
            forwarded_by: self.forwarded_by.as_deref(),
            forwarded_to: self.forwarded_to.as_deref(),
            ..RouterLine::default()
        }
    }
}

/// How a proxied response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The body reached its end.
    Complete,
    /// The dyno's socket failed mid-body (H18).
    DynoBroke,
    /// The dyno went silent for the idle window (H15).
    DynoIdle,
    /// The client went away before the end (H27), or the router was
    /// shutting down (H24).
    ClientGone,
}

/// A response in flight from a dyno to a client.
#[derive(Debug)]
pub struct Exchange {
    /// Router (sink, shutdown state).
    pub router: Arc<Router>,
    /// Request facts.
    pub facts: Facts,
    /// The request's place in the app's H11 bound; given back at the end.
    pub admission: Option<Admission>,
    /// The dyno slot; released when the exchange ends.
    pub slot: Option<Slot>,
    /// The client connection's write progress (H28 vs H27).
    pub client: Arc<crate::watch::ClientWatch>,
    /// The connection, returned to the pool on a clean end; the response
    /// body puts it here when both messages ended cleanly and the dyno
    /// allows another request on it.
    pub sender: Option<Sender>,
    /// The owner the request was forwarded to, whose pool the connection
    /// goes back to; its own line is the request's line (see `finish`).
    pub peer: Option<Arc<crate::forward::Peer>>,
    /// Connect time, ms.
    pub connect_ms: u64,
    /// When the request started toward the dyno.
    pub started: Instant,
    /// Status sent to the client.
    pub status: u16,
    /// Bytes sent to the client (head + body).
    pub bytes: u64,
}

impl Exchange {
    /// Closes the exchange: pools the connection on a clean end, frees the
    /// slot and writes the log line.
    pub fn finish(mut self, end: End) {
        // One clock read for the pool's idle timer and the service time.
        let now = Instant::now();
        if let Some(peer) = self.peer.take() {
            // The owner writes the request's line; this router writes one
            // only when the owner's connection broke or went silent, which
            // the owner may never get to log.
            if let (End::Complete, Some(sender)) = (end, self.sender.take()) {
                peer.pool.checkin(sender, self.router.config.pool_idle, now);
            }
            if !matches!(end, End::DynoBroke | End::DynoIdle) {
                return;
            }
        }
        let dyno = self.slot.as_ref().map(|s| s.dyno().name.clone());
        if end == End::Complete {
            if let (Some(sender), Some(slot)) = (self.sender.take(), self.slot.as_ref()) {
                slot.dyno()
                    .live
                    .pool
                    .checkin(sender, self.router.config.pool_idle, now);
            }
        }
        self.sender = None;
        self.slot = None;
        self.admission = None;
        let (code, sock) = match end {
            End::Complete => (None, None),
            End::DynoBroke => (Some(HCode::H18), Some(Sock::Backend)),
            End::DynoIdle => (Some(HCode::H15), None),
            End::ClientGone if self.router.is_forcing() => (Some(HCode::H24), None),
            End::ClientGone if self.client.was_stalled() => (Some(HCode::H28), None),
            End::ClientGone => (Some(HCode::H27), Some(Sock::Client)),
        };
        let status = match code {
            Some(HCode::H24) => None,
            Some(HCode::H27 | HCode::H28) => Some(499),
            _ => Some(self.status),
        };
        let line = RouterLine {
            code,
            sock,
            dyno: dyno.as_deref(),
            connect_ms: Some(self.connect_ms),
            service_ms: Some(now.saturating_duration_since(self.started).as_millis() as u64),
            status,
            bytes: Some(self.bytes),
            ..self.facts.line()
        };
        self.router.emit(&self.facts, code, &line);
    }
}
