//! Router integration tests: a real router on 127.0.0.1:0 in front of real
//! fake dynos that misbehave on purpose.

mod support;

mod acme;
mod forwarding;
mod hcodes;
mod headers;
mod keepalive;
mod ocsp;
mod proxying;
mod queueing;
mod shutdown;
mod smuggling;
mod tls;
mod upstream;
mod websocket;

#[path = "../../../tests/support/wait.rs"]
mod wait;

pub use wait::{eventually, eventually_some};
