//! Switchyard's log router (work in progress).

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![warn(missing_docs)]

pub mod config;

pub use config::{ChannelSpec, DrainSpec, LogplexConfig, TokenSpec};
