//! End-to-end tests of the real `switchyard` binary over real sockets:
//! a newcomer's first request, `kill -9` durability, a remote router
//! following the control plane across its restart, the API key's first
//! start, and the `heroku` CLI driving the control API.

mod support;

mod durability;
mod heroku_cli;
mod log_flow;
mod newcomer;
mod operations;
mod remote_router;
mod reset_clients;
