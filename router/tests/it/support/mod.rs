//! Scenario builders: fake dynos, a router under test, a raw HTTP client.

pub mod client;
pub mod dyno;
pub mod pki;
pub mod switchyard;

pub use client::{get, h2_get, raw};
pub use dyno::{Behaviour, Dyno};
pub use switchyard::{normalize, Switchyard};
