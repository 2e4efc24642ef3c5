//! Integration tests of the log router over real sockets (one binary to
//! save link time).

mod cluster;
mod drains;
mod hostile;
mod inbox;
mod limits;
mod sessions;
mod ship;
mod sources;
mod support;
