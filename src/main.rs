//! The `switchyard` binary: parses the command line once, sets up tracing,
//! and runs a role until SIGTERM or SIGINT.
//!
//! - `switchyard serve`: control API + router + logplex in one process.
//! - `switchyard control [--store etcd://…]`: the control API alone.
//! - `switchyard router --control URL --api-key K`: a router following a
//!   control plane's route table.
//! - `switchyard logplex --store etcd://…`: the log router alone, its
//!   channels, tokens and drains read from etcd.
//!
//! Listeners may be handed over instead of bound (systemd socket
//! activation, see `activation`). Every listener is announced on stdout as
//! `listening role=<role> addr=<ip:port>` (stable; tests parse it, so
//! `--http 127.0.0.1:0` works).

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

mod activation;
mod admin;
mod cli;
mod fdlimit;
mod fleet;
mod logs;
mod owners;
mod procfile;
mod recorder;
mod roles;
mod shutdown;
mod tlsconf;

use clap::Parser;

/// mimalloc: the request path's many small, short-lived allocations cost a
/// third of what they cost in glibc malloc (BENCHMARKS.md, "Profile").
/// Word-aligned requests take its plain path (`allocator`).
#[global_allocator]
static ALLOCATOR: allocator::Allocator = allocator::Allocator;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    // Before any thread: it clears the activation variables.
    let activated = activation::init();
    init_tracing(cli.log_format);
    match activated {
        Ok(0) => {}
        Ok(n) => tracing::info!(sockets = n, "listeners handed over (socket activation)"),
        Err(e) => {
            eprintln!("switchyard: {e}");
            return std::process::ExitCode::FAILURE;
        }
    }
    let nofile = fdlimit::raise();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchyard: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            cli::Command::Serve(args) => roles::serve(args, fdlimit::Budget::serve(nofile)).await,
            cli::Command::Control(args) => roles::control(args).await,
            cli::Command::Router(args) => {
                roles::router(args, fdlimit::Budget::router(nofile)).await
            }
            cli::Command::Logplex(args) => {
                roles::logplex(args, fdlimit::Budget::logplex(nofile)).await
            }
            cli::Command::Dynos(args) => roles::dynos(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: cli::LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("SWITCHYARD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        cli::LogFormat::Text => builder.init(),
        cli::LogFormat::Json => builder.json().init(),
    }
}
