//! Contract tests of the control plane over real HTTP on 127.0.0.1: every
//! endpoint's happy path, bad input and missing auth; publication into the
//! router and logplex; the store; the watch stream and a following router.

mod support;

mod acm;
mod apps;
mod auth;
mod cancel;
mod certs;
mod config;
mod domains;
mod dynos;
mod etcd;
mod etcd_server;
mod follow;
mod follow_etcd;
mod logs;
mod members;
mod pebble;
mod procfile;
mod publication;
mod race;
mod robustness;
mod store;
mod tcp_proxy;
mod watch;
