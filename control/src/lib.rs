//! Switchyard's control plane: the subset of the Heroku Platform API v3 that
//! the `heroku` CLI needs, Switchyard's routing-table API, a durable store,
//! and publication of the route table and log configuration.
//!
//! Each API change is validated, committed to the [`store`] as one atomic
//! batch under a new revision (durable before the 2xx), and then published:
//! a new [`router::RouteTable`] is swapped into the in-process router, a new
//! [`logplex::LogplexConfig`] into logplex, and the `routes/` changes are
//! streamed to remote routers ([`watch`], [`mod@follow`]). The protocol —
//! revisions, resync, serving a stale table — is documented in [`publish`].
//!
//! Metrics (through the `metrics` facade; the binary's admin listener
//! exports them): `switchyard_control_revision`,
//! `switchyard_control_commits_total` and `switchyard_control_reloads_total`
//! (the mirror reloaded from the store after a conflict) on the control plane;
//! `switchyard_table_revision`, `switchyard_control_connected` (0/1) and
//! `switchyard_table_resyncs_total` on a following router;
//! `switchyard_acme_orders_total` from the ACME manager ([`acme`]).
//!
//! # Layout
//! - [`engine`]: [`Control`], the single writer, the mirror and publication.
//! - [`store`]: the [`Store`] trait and its redb, etcd and in-memory backends.
//! - [`state`]: the in-memory mirror and the write transaction.
//! - [`model`]: stored records and the key layout.
//! - [`publish`]: records → route table and logplex config; the protocol.
//! - [`watch`]: the `GET /routes/watch` stream.
//! - [`mod@follow`]: a remote router following a control plane.
//! - [`members`]: processes registered in etcd under a lease, the live set,
//!   and the owner of a key among them (rendezvous hashing, fenced).
//! - [`acme`]: the ACME manager: orders and renews ACM certificates.
//! - [`api`]: the HTTP API (one module per resource).
//! - [`upgrade`]: bringing a store written by an earlier version up to date.
//! - [`validate`]: input checks that name the field at fault.
//! - [`error`]: [`ApiError`], Heroku's error body.
//! - [`apikey`]: the API key from the environment or the data directory.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![warn(missing_docs)]

pub mod acme;
pub mod api;
pub mod apikey;
pub mod engine;
pub mod error;
pub mod follow;
pub mod members;
pub mod model;
pub mod publish;
pub mod state;
pub mod store;
pub mod upgrade;
pub mod validate;
pub mod watch;

pub use engine::{Control, ControlSettings};
pub use error::ApiError;
pub use follow::{follow, FollowSettings, FollowStatus, Source as FollowSource};
pub use publish::{AppRoute, LogBackend, SessionParams};
pub use store::{EtcdConfig, EtcdStore, MemoryStore, RedbStore, Store, StoreError};
