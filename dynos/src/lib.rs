//! Switchyard's dyno manager: runs an app's processes the way Heroku's
//! does, for a fleet on one machine (external fleets keep registering their
//! dynos through the routing-table API).
//!
//! This crate is the part below the control plane: one supervised process
//! per dyno. [`supervise`] starts a dyno's command with `PORT`, `DYNO` and
//! the app's config vars, reports its life cycle as [`Event`]s (starting,
//! up once its port accepts a connection, crashed, down), restarts it after
//! a crash with Heroku's growing cool-off ([`Backoff`]), kills a web process
//! that never binds its port (R10), and stops it with SIGTERM then SIGKILL
//! (R12). Each line the process writes to stdout or stderr is handed to a
//! [`Sink`] as it is read. [`Event::heroku_line`] is the line Heroku
//! writes into the app's stream for each event.
//!
//! # Layout
//! - [`spec`]: what to run ([`DynoSpec`]) and the timers ([`Timers`]).
//! - [`backoff`]: crash restarts' cool-off.
//! - [`event`]: life-cycle events and their log lines.
//! - [`supervisor`]: one dyno's process, from start to stop.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![warn(missing_docs)]

pub mod backoff;
pub mod event;
pub mod spec;
pub mod supervisor;

pub use backoff::Backoff;
pub use event::{Event, State};
pub use spec::{DynoSpec, Timers};
pub use supervisor::{supervise, Control, Sink};
