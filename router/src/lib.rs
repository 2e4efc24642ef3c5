//! Switchyard's data plane: puts a request for `myapp.example.com` onto the
//! right dyno quickly, fairly, and with Heroku's router semantics.
//!
//! A request is accepted by [`serve`], its `Host` is looked up in the current
//! [`RouteTable`] snapshot (one atomic load, no lock), a web dyno is chosen by
//! in-flight count (or the request waits in the app's FIFO queue), and the
//! request is proxied over a pooled HTTP/1.1 connection ([`upstream`]). Every request ends in
//! one [`RouterLine`] sent to a [`LogSink`].
//!
//! # Layout
//! - [`accept`]: accepting with back-off when descriptors run out.
//! - [`table`]: the route-table snapshot, host matching, publication.
//! - [`settings`]: per-app timers, limits, balancing mode and features.
//! - [`live`]: per-dyno and per-app counters that survive table swaps.
//! - [`capacity`]: dyno slots, the per-app FIFO queue and its dispatch, and
//!   the H11 admission bound.
//! - [`balance`]: dyno choice policy (least-outstanding, random, round-robin).
//! - [`affinity`]: the `http-session-affinity` cookie.
//! - [`hcode`]: Heroku's H-codes, their statuses, levels and pages.
//! - [`logline`]: the router log line and the log-sink trait.
//! - [`server`]: listeners, the accept loop, graceful shutdown.
//! - [`connection`]: one client connection: HTTP/1 in sessions that end
//!   whenever it goes idle, so an idle connection holds no HTTP state.
//! - [`proxy`]: the request path, in phases, from routing to streaming the
//!   response.
//! - [`failure`]: typed failures of the request path and the one function
//!   that maps them to H-codes.
//! - [`reply`]: the responses the router writes itself.
//! - [`exchange`]: a response in flight, and the log line it ends with.
//! - [`body`]: streamed request and response bodies and their timers.
//! - [`pool`]: keep-alive connections to dynos.
//! - [`upstream`]: the HTTP/1.1 client that speaks to dynos, driven in the
//!   request's own task, and its sans-I/O codec.
//! - [`forward`]: app-owner routing: forwarding a request to the router
//!   that holds its app's queue.
//! - [`headers`]: Heroku's header rules.
//! - [`pages`]: error, maintenance and "no such app" pages.
//! - [`splice`]: the byte pipe behind upgrades.
//! - [`validate`]: Heroku's request limits and request-smuggling defences.
//! - [`watch`]: the client side of the idle window (H28 after the first byte).
//! - [`tls`]: TLS termination, SNI certificates from the table, HTTPS listeners.
//! - [`workers`]: thread-per-core serving, every worker on one shared listener.
//! - [`metrics`]: what the router records for Prometheus.
//! - [`clock`]: the monotonic millisecond clock for quarantine.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![warn(missing_docs)]

pub mod accept;
pub mod affinity;
pub mod balance;
pub mod body;
pub mod capacity;
pub mod clock;
pub mod connection;
pub mod exchange;
pub mod failure;
pub mod forward;
pub mod hcode;
pub mod headers;
pub mod live;
pub mod logline;
pub mod metrics;
pub mod ocsp;
pub mod pages;
pub mod pool;
pub mod proxy;
pub mod reply;
pub mod server;
pub mod settings;
pub mod splice;
pub mod table;
pub mod tls;
pub mod upstream;
pub mod validate;
pub mod watch;
pub mod workers;

#[doc(hidden)]
pub mod fuzzing;

pub use hcode::HCode;
pub use logline::{LogSink, MemorySink, NullSink, RouterLine};
pub use server::{serve, serve_with, ConnInfo, Router, RouterConfig};
pub use settings::{AppSettings, Balance, Limits, Timers};
pub use table::{
    App, AppSpec, Apps, DynoSpec, DynoState, LogToken, RouteTable, RouteTableBuilder, Routes,
    TableError, TableUpdate,
};
pub use tls::{serve_tls, CertSpec, MinTls, TlsSettings};
