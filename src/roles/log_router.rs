//! `switchyard logplex`: the log router alone.
//!
//! It serves syslog (TCP, UDP, TLS) and the logplex HTTP listener (`POST
//! /logs`, `/sessions/{id}` streams), runs the drains, and answers on the
//! admin listener. Its channels, input tokens and drains come from the
//! shared store: it opens a [`control::Control`] on etcd with a logplex
//! [`control::LogBackend`] and no router, serves no API, and follows what
//! the control nodes commit (`follow_store`), so a drain added through any
//! control node starts here within one poll.
//!
//! `--store redb` is refused: nothing could write a redb file that only
//! this process opens (it has no API). One machine runs `switchyard serve`.
//!
//! With `--advertise HOST:PORT` the node registers itself in etcd as a
//! live log router (`control::members`, kind `logplex`, id `HOST:PORT`) on
//! a lease of `--member-ttl` seconds, and leaves (revokes it) on SIGTERM;
//! with `--advertise-tls HOST:PORT` it advertises its syslog TLS listener
//! too. Routers running apart send each app's router lines to the owner
//! of the app's channel among these members (`logplex::ship`).
//!
//! # A cluster of log routers
//!
//! Nodes started with `--advertise` form one cluster: each app's channel
//! has one owner among the live nodes, by rendezvous over their ids, the
//! same choice routers and control nodes make. The owner keeps the
//! channel's history, serves its log sessions and runs its drains, so a
//! drain has one outbound connection cluster-wide. A line ingested on
//! another node (syslog, `POST /logs`) is forwarded to the owner over
//! octet-counted syslog, once; what cannot be forwarded is counted
//! (`logplex_forward_dropped_lines_total`) and reported in the app's
//! stream. A node acts as owner only while its lease is surely alive (the
//! fence in `control::members`): when an owner dies, the others see its
//! record expire after `--member-ttl` and the next owner starts the drains
//! and writes one line saying the history went with the dead node.
//!
//! `/readyz` answers from the moment the listeners are bound and says
//! "store not open" / "route table not loaded" (the channel configuration)
//! until the first configuration is read from etcd.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{
    announce, begin, bind, cert_settings, flush_drains, join_servers, log_budget, open_control,
    open_etcd, syslog_tls_config, warn_unclaimed,
};
use crate::cli::{LogListenArgs, LogplexArgs};
use crate::fdlimit::Budget;
use crate::logs::ControlToLogplex;

/// Why `--store redb` is refused, as the operator reads it.
pub const REDB_REFUSED: &str = "switchyard logplex reads its channels, tokens and drains from a \
    shared store that control nodes write: give --store etcd://HOST:PORT[/prefix] (the same as \
    the control nodes'); a redb store has no API to write through here (on one machine, \
    `switchyard serve` runs logplex with the rest)";

/// `switchyard logplex`: ingest, tails and drains for the channels the
/// shared store holds; drains flushed on SIGTERM.
pub async fn logplex(args: LogplexArgs, budget: Budget) -> anyhow::Result<()> {
    let Some(etcd) = args.store.etcd() else {
        anyhow::bail!(REDB_REFUSED);
    };
    log_budget(&budget);
    let (stop, metrics, ready) = begin()?;
    ready.logs_only.store(true, Ordering::Release);
    let sockets = LogSockets::bind(&args.logs).await?;
    let admin = bind("admin", args.admin, "--admin").await?;
    warn_unclaimed();
    ready.listeners_bound.store(true, Ordering::Release);
    let s = || {
        let t = stop.clone();
        async move { t.cancelled().await }
    };
    // Answers while etcd is read: /readyz says what is still missing.
    let admin_task = tokio::spawn(crate::admin::serve(admin, metrics, ready.clone(), s()));

    let tls = cert_settings(&args.data_dir, &args.tls, &args.base_domain)?;
    let syslog_config = syslog_tls_config(&tls)?;
    let store = open_etcd(etcd).await?;
    ready.store_open.store(true, Ordering::Release);
    let grants = args.api_key.as_deref().map(logplex::GrantKey::derive);
    let logplex = new_logplex(&args.logs, &budget, grants);
    let backend: Arc<dyn control::LogBackend> = Arc::new(ControlToLogplex {
        logplex: logplex.clone(),
        http: sockets.http.local_addr()?,
    });
    let settings = control::ControlSettings {
        base_domain: args.base_domain.clone(),
        router_http_port: None,
        ..control::ControlSettings::default()
    };
    // A node of a cluster places its channels before the configuration
    // arrives (so that no drain starts here for a channel another node
    // owns), and registers once it is loaded (so that no line reaches it
    // before it knows the tokens).
    let cluster = match &args.advertise {
        Some(advertise) => Some(start_cluster(&store, advertise, &logplex, &stop).await?),
        None => None,
    };
    // Kept for the life of the role: the follower applies the control
    // nodes' commits to it, and it configures logplex with each.
    let (_control, follower) = open_control(
        store.clone(),
        settings,
        None,
        Some(backend),
        &args.store,
        &stop,
        &ready,
    )?;
    let membership = match (&args.advertise, cluster) {
        (Some(advertise), Some(cluster)) => {
            let http = sockets.http.local_addr()?.port();
            let member = join(
                &store,
                advertise,
                args.advertise_tls.as_deref(),
                http,
                args.member_ttl,
            )
            .await?;
            cluster.placement.registered(member.owner_check());
            logplex.rebalance();
            Some((member, cluster.forward))
        }
        _ => None,
    };

    let mut tasks = tokio::task::JoinSet::new();
    sockets.serve(&mut tasks, &logplex, syslog_config, &stop);
    let sampler = tokio::spawn(crate::admin::sample(None, Some(logplex.clone())));
    let failed = join_servers(tasks, &stop).await;
    sampler.abort();
    if let Some(f) = follower {
        f.abort();
    }
    // Lines on their way to peers, then the drains of the channels owned
    // here, go out before the node leaves: until it does, no other node
    // runs these drains, so each keeps one connection.
    if let Some((_, forward)) = &membership {
        flush_forward(forward).await;
    }
    flush_drains(&logplex).await;
    if let Some((member, forward)) = membership {
        // Out of the live set at once, not after the lease's TTL.
        if let Err(e) = member.leave().await {
            tracing::warn!(error = %e, "could not leave the member set; the lease will expire");
        }
        // Routers and peers send here until they see the leave (an etcd
        // watch event, milliseconds later), over connections that stay
        // open: what they sent meanwhile is read and goes out too. The next
        // owner may start its drains meanwhile, so a drain can have two
        // connections for this long.
        tokio::time::sleep(LEAVE_GRACE).await;
        flush_forward(&forward).await;
        flush_drains(&logplex).await;
    }
    let _ = admin_task.await;
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Registers this node as a live log router, reachable for syslog at
/// `advertise`, for syslog TLS at `advertise_tls`, and for log sessions on
/// the same host at `http_port` (`control::members`).
async fn join(
    store: &control::EtcdStore,
    advertise: &str,
    advertise_tls: Option<&str>,
    http_port: u16,
    ttl: u64,
) -> anyhow::Result<control::members::Registration> {
    let host = advertise.rsplit_once(':').map_or(advertise, |(h, _)| h);
    let mut addresses: std::collections::BTreeMap<String, String> = [
        ("syslog".to_string(), advertise.to_string()),
        ("http".to_string(), format!("{host}:{http_port}")),
    ]
    .into();
    if let Some(tls) = advertise_tls {
        addresses.insert("syslog-tls".into(), tls.to_string());
    }
    let info = control::members::MemberInfo { addresses };
    let member = control::members::Registration::start(
        store.client(),
        store.prefix(),
        "logplex",
        advertise,
        &info,
        Duration::from_secs(ttl),
    )
    .await
    .with_context(|| {
        format!("cannot register {advertise} as a log router in etcd (--advertise)")
    })?;
    tracing::info!(key = member.key(), "registered as a live log router");
    Ok(member)
}

/// A log router's part in its cluster before and after it registers.
struct Cluster {
    placement: Arc<crate::logs::ClusterPlacement>,
    /// Forwards lines of channels a peer owns; flushed at shutdown.
    forward: Arc<logplex::Shipper>,
}

/// Makes `logplex` one node of the cluster of live log routers: channels
/// placed by rendezvous over the members (this node owning, once it is
/// registered, under its lease's fence), lines of channels a peer owns
/// forwarded to it, and the placement redone whenever the live set changes
/// or the fence lapses or returns.
async fn start_cluster(
    store: &control::EtcdStore,
    advertise: &str,
    logplex: &Arc<logplex::Logplex>,
    stop: &CancellationToken,
) -> anyhow::Result<Cluster> {
    let members = Arc::new(
        control::members::MemberWatch::start(store.client(), store.prefix(), "logplex")
            .await
            .context("cannot watch the live log routers in etcd")?,
    );
    let placement = Arc::new(crate::logs::ClusterPlacement::new(
        advertise,
        members.clone(),
    ));
    let forward = logplex::Shipper::start(
        logplex::ShipSettings {
            host: advertise.to_string(),
            sender: logplex::Sender::LogRouter,
            ..logplex::ShipSettings::default()
        },
        Arc::new(crate::logs::PeerDirectory {
            placement: placement.clone(),
            logplex: Arc::downgrade(logplex),
        }),
    );
    logplex.join_cluster(placement.clone(), forward.clone());
    tokio::spawn(rebalance(
        logplex.clone(),
        members,
        placement.clone(),
        stop.clone(),
    ));
    Ok(Cluster { placement, forward })
}

/// How often the fence is looked at: a lapse (or return) of this node's
/// lease moves its channels within this much of it.
const FENCE_CHECK: Duration = Duration::from_millis(200);

/// Sends the lines on their way to peers (shutdown), up to 5 s.
async fn flush_forward(forward: &logplex::Shipper) {
    if !forward.flush(Duration::from_secs(5)).await {
        tracing::warn!("lines to peer log routers not all sent at shutdown (counted dropped)");
    }
}

/// How long a node that left the cluster at shutdown keeps taking lines
/// from routers and peers that have not seen it go yet, before its last
/// flush.
const LEAVE_GRACE: Duration = Duration::from_millis(500);

/// Places the channels again on each change of the live set and each
/// change of this node's fence.
async fn rebalance(
    logplex: Arc<logplex::Logplex>,
    members: Arc<control::members::MemberWatch>,
    placement: Arc<crate::logs::ClusterPlacement>,
    stop: CancellationToken,
) {
    let mut changed = members.changed();
    let mut tick = tokio::time::interval(FENCE_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut fence = placement.fence().map(|f| f.lease);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            r = changed.changed() => {
                if r.is_err() {
                    return;
                }
            }
            _ = tick.tick() => {
                let now = placement.fence().map(|f| f.lease);
                if now == fence {
                    continue;
                }
                fence = now;
            }
        }
        logplex.rebalance();
    }
}

/// The log router with its connection caps from `budget`.
pub(super) fn new_logplex(
    flags: &LogListenArgs,
    budget: &Budget,
    session_grants: Option<logplex::GrantKey>,
) -> Arc<logplex::Logplex> {
    logplex::Logplex::new(logplex::LogplexSettings {
        session_grants,
        max_stream_connections: budget.syslog,
        max_http_connections: budget.logplex_http,
        stream_idle_timeout: Duration::from_secs(flags.syslog_idle_timeout),
        inbox_linger: Duration::from_millis(flags.log_linger_ms),
        ..logplex::LogplexSettings::default()
    })
}

/// The log router's sockets, bound from the flags (or handed over, all
/// but UDP), each announced.
pub(super) struct LogSockets {
    /// `POST /logs` and `/sessions/{id}`.
    pub http: TcpListener,
    syslog_tcp: TcpListener,
    syslog_udp: UdpSocket,
    syslog_tls: TcpListener,
}

impl LogSockets {
    pub(super) async fn bind(flags: &LogListenArgs) -> anyhow::Result<LogSockets> {
        let http = bind("logplex-http", flags.logplex_http, "--logplex-http").await?;
        let syslog_tcp = bind("syslog-tcp", flags.syslog, "--syslog").await?;
        let syslog_udp = UdpSocket::bind(flags.syslog)
            .await
            .with_context(|| format!("cannot listen on {} (--syslog, UDP)", flags.syslog))?;
        announce("syslog-udp", syslog_udp.local_addr()?);
        let syslog_tls = bind("syslog-tls", flags.syslog_tls, "--syslog-tls").await?;
        Ok(LogSockets {
            http,
            syslog_tcp,
            syslog_udp,
            syslog_tls,
        })
    }

    /// Serves ingest, sessions and syslog TLS into `logplex`, as tasks of
    /// `tasks`, until `stop`.
    pub(super) fn serve(
        self,
        tasks: &mut JoinSet<std::io::Result<()>>,
        logplex: &Arc<logplex::Logplex>,
        tls: Arc<rustls::ServerConfig>,
        stop: &CancellationToken,
    ) {
        let s = || {
            let t = stop.clone();
            async move { t.cancelled().await }
        };
        tasks.spawn(logplex::serve_http(self.http, logplex.clone(), s()));
        tasks.spawn(logplex::serve_syslog_tcp(
            self.syslog_tcp,
            logplex.clone(),
            s(),
        ));
        tasks.spawn(logplex::serve_syslog_udp(
            self.syslog_udp,
            logplex.clone(),
            s(),
        ));
        tasks.spawn(logplex::serve_syslog_tls(
            self.syslog_tls,
            tls,
            logplex.clone(),
            s(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    #[tokio::test]
    async fn the_log_flags_reach_the_log_router() {
        let cli = Cli::try_parse_from([
            "switchyard",
            "logplex",
            "--log-linger-ms",
            "250",
            "--syslog-idle-timeout",
            "30",
        ])
        .expect("parses");
        let Command::Logplex(args) = cli.command else {
            panic!("not logplex")
        };
        let budget = Budget::logplex(4096);
        let logplex = new_logplex(&args.logs, &budget, None);
        let settings = logplex.settings();
        assert_eq!(settings.inbox_linger, Duration::from_millis(250));
        assert_eq!(settings.stream_idle_timeout, Duration::from_secs(30));
        assert_eq!(
            (
                settings.max_stream_connections,
                settings.max_http_connections
            ),
            (budget.syslog, budget.logplex_http)
        );
    }
}
