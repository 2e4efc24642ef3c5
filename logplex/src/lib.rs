//! Switchyard's log router, compatible with Heroku's Logplex on the wire:
//! syslog in (TCP, TLS, UDP, HTTP `POST /logs`, and in-process emits from the
//! router and control plane), one channel per app holding the last 1500
//! lines, live tails served as log sessions (SSE or text), and drains to
//! `syslog://`, `syslog+tls://` and `https://` endpoints.
//!
//! The design choice that matters: **a slow or dead drain never slows
//! anything else.** Ingest hands each line to each drain's bounded buffer
//! without waiting; when a buffer is full the oldest line goes, is counted
//! exactly, and is reported in an L10 line to that drain and to the app's
//! own stream. For every drain, `accepted = delivered + dropped` once it is
//! idle ([`drain::buffer`] states the rules). Measured with
//! `PARTS=logplex bash benches/load/run.sh` (BENCHMARKS.md, "Logplex
//! throughput"): 1.7–1.9 M lines/s from TCP syslog into one syslog drain
//! and 5.1–5.3 M lines/s delivered to ten, 2.1–2.6× rsyslog in the same
//! runs (release build, 2 quiet cores shared with the sender and the
//! receiver); what a sender pushes faster than a drain can take is dropped
//! and reported, never pushed back.
//!
//! # Wiring
//! - [`Logplex::new`] with [`LogplexSettings`] (inside the tokio runtime
//!   drains should run on), then [`Logplex::configure`] with every published
//!   [`LogplexConfig`]; the `serve_*` functions take bound sockets and a
//!   shutdown future; [`Logplex::flush`] at shutdown.
//! - The router writes with [`Logplex::enqueue`] (`"heroku", "router",
//!   line`: queued per worker thread, published in batches), the control
//!   plane with [`Logplex::emit`] (`"heroku", "api", text`, at once).
//! - A session created with [`Logplex::create_session`] is served by
//!   [`serve_http`] at `/sessions/{id}`: its URL is
//!   `http://<logplex HTTP address>/sessions/{id}`.
//! - Metrics (`metrics` crate): `logplex_frames_{received,malformed,unknown_token}_total`
//!   by `transport`; `logplex_drain_{accepted,delivered,dropped,reported}_lines_total`
//!   by `drain` and `transport`; `logplex_connections_{open,refused_total,idle_closed_total}`
//!   by `transport` (`tcp`, `tls`, `http`); `switchyard_accept_errors_total` by `listener`.
//!
//! # A cluster of log routers
//! [`Logplex::join_cluster`] makes this log router one node of several:
//! a [`Placement`] names each channel's owner, which alone keeps its
//! history, serves its tails and runs its drains (so a drain has one
//! outbound connection cluster-wide); a line ingested for a channel a peer
//! owns is forwarded to it by a [`Shipper`] ([`Sender::LogRouter`]) as a
//! whole frame marked [`message::FORWARDED_HOST`], never forwarded twice.
//! [`Logplex::rebalance`] applies a change of placement: drains start on
//! the new owner (held [`LogplexSettings::handover_delay`] unless the
//! previous owner is dead) and retire on the old one after delivering what
//! they can in half that time; the stream gets one line saying where the
//! earlier history is, and tails on the old owner end with one saying
//! where the channel went. The binary places channels by rendezvous over
//! the live members in etcd, under the lease fence (`control::members`).
//!
//! # Layout
//! - [`config`]: the channel/token/drain configuration the control plane publishes.
//! - [`settings`]: limits and timers ([`LogplexSettings`]).
//! - [`frame`]: sans-I/O RFC 6587 framing (octet counting or newline, per frame) and logplex-1 bodies.
//! - [`message`]: one log line: syslog parsing, session and drain formats, L-code texts.
//! - [`history`]: the ring of recent lines.
//! - [`channel`]: one app's history, tails and drains.
//! - [`session`]: log sessions and their SSE / text bodies.
//! - [`drain`]: drain tasks, the bounded buffer and its accounting, syslog and HTTPS senders.
//! - [`source`]: TCP, TLS, UDP and HTTP listeners.
//! - [`inbox`]: per-thread queues of in-process lines, published in batches.
//! - [`hub`]: [`Logplex`], the shared state and the one ingest path, and
//!   the cluster's [`Placement`] of channels.
//! - [`ship`]: a router running apart sends its lines to the log router
//!   that owns each app's channel, counting and reporting what it drops;
//!   a log router of a cluster forwards to its peers the same way.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![warn(missing_docs)]

pub mod channel;
pub mod config;
pub mod drain;
pub mod frame;
pub mod grant;
pub mod history;
pub mod hub;
pub mod inbox;
pub mod message;
pub mod session;
pub mod settings;
pub mod ship;
pub mod source;

pub use config::{ChannelSpec, DrainSpec, LogplexConfig, TokenSpec};
pub use grant::GrantKey;
pub use hub::{
    ConnectionStats, DrainStats, IngestError, IngestStats, Logplex, Owner, Placement, Transport,
};
pub use message::LogLine;
pub use session::SessionParams;
pub use settings::LogplexSettings;
pub use ship::{Directory, Sender, ShipSettings, Shipper};
pub use source::http::serve_http;
pub use source::tcp::serve_syslog_tcp;
pub use source::tls::serve_syslog_tls;
pub use source::udp::serve_syslog_udp;

/// Entry points for the fuzz targets (`fuzz/`, outside the workspace).
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::frame::fuzzing::{body as logplex_body, stream as syslog_stream};
    pub use crate::message::fuzzing::parse as syslog_message;
}
