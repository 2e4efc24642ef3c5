//! End-to-end tests of the real `switchyard` binary over real sockets:
//! a newcomer's first request, `kill -9` durability, a remote router
//! following the control plane across its restart, the API key's first
//! start, the `heroku` CLI driving the control API, running out of
//! file descriptors under a 1,024 limit, the state kept in a real etcd,
//! the log router alone on etcd, and a router apart shipping its lines
//! to the log router, routers on etcd sharing each app's queue through
//! its owner, and automatic certificates from a real ACME CA.

mod support;

// The control crate's etcd launcher; this binary uses part of it.
#[allow(dead_code)]
#[path = "../../control/tests/it/etcd_server.rs"]
mod etcd_server;

// The control crate's pebble launcher and DNS responder.
#[allow(dead_code)]
#[path = "../../control/tests/it/pebble.rs"]
mod pebble;

mod acm;
mod cluster;
mod durability;
mod dyno_manager;
mod etcd_store;
mod fd_exhaustion;
mod heroku_cli;
mod log_cluster;
mod log_flow;
mod logplex_role;
mod newcomer;
mod operations;
mod queue_follows_table;
mod remote_router;
mod reset_clients;
mod router_logs;
mod router_owners;
