//! The roles: `serve` (everything), `control` (the API alone), `router`
//! (a router alone) and `logplex` (the log router alone, in [`log_router`]).

mod log_router;

pub use self::log_router::logplex;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::cli::{ControlArgs, DynosArgs, EdgeArgs, RouterArgs, ServeArgs, StoreArgs};
use crate::fdlimit::Budget;
use crate::logs::{
    ControlToLogplex, RouterToLogplex, RouterToShipper, RouterToTracing, ShipDirectory,
};

/// The listener for `role`: the socket handed over for it (socket
/// activation), else `addr` bound.
fn listener(
    role: &str,
    addr: std::net::SocketAddr,
    flag: &str,
) -> anyhow::Result<std::net::TcpListener> {
    match crate::activation::take(role) {
        Some(l) => {
            l.set_nonblocking(true)
                .with_context(|| format!("cannot use the {role} socket handed over"))?;
            Ok(l)
        }
        None => router::workers::bind_listener(addr)
            .with_context(|| format!("cannot listen on {addr} ({flag})")),
    }
}

async fn bind(role: &str, addr: std::net::SocketAddr, flag: &str) -> anyhow::Result<TcpListener> {
    let l = TcpListener::from_std(listener(role, addr, flag)?)
        .with_context(|| format!("cannot listen on {addr} ({flag})"))?;
    announce(role, l.local_addr()?);
    Ok(l)
}

/// Binds a router listener, with one handle to it per worker thread.
fn bind_workers(
    role: &str,
    addr: std::net::SocketAddr,
    flag: &str,
    threads: usize,
) -> anyhow::Result<Vec<std::net::TcpListener>> {
    let first = listener(role, addr, flag)?;
    let listeners = router::workers::share(first, threads)
        .with_context(|| format!("cannot listen on {addr} ({flag})"))?;
    if let Some(first) = listeners.first() {
        announce(role, first.local_addr()?);
    }
    Ok(listeners)
}

/// Serves plain HTTP and HTTPS on the router worker threads until `stop`.
async fn run_router(
    router: Arc<router::Router>,
    http: Vec<std::net::TcpListener>,
    https: Vec<std::net::TcpListener>,
    https_config: Arc<rustls::ServerConfig>,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let plain = {
        let (router, stop) = (router.clone(), stop.clone());
        router::workers::run_per_thread("router-http", http, move |l| {
            let stop = stop.clone();
            router::serve(l, router.clone(), async move { stop.cancelled().await })
        })
    };
    let secure = router::workers::run_per_thread("router-https", https, move |l| {
        let stop = stop.clone();
        router::serve_tls(l, router.clone(), https_config.clone(), async move {
            stop.cancelled().await
        })
    });
    let (plain, secure) = tokio::join!(plain, secure);
    plain.and(secure)
}

/// The HTTPS configuration, and the task keeping the OCSP staples of its
/// certificates fresh (to abort at shutdown).
fn https_setup(
    routes: &Arc<router::Routes>,
    tls: &router::TlsSettings,
) -> anyhow::Result<(Arc<rustls::ServerConfig>, tokio::task::JoinHandle<()>)> {
    let unusable = "the default certificate is not usable (--tls-cert, --tls-key)";
    let default = router::tls::default_key(tls).context(unusable)?;
    let config =
        router::tls::server_config_with(routes.clone(), default.clone(), tls).context(unusable)?;
    let ocsp = tokio::spawn(router::ocsp::run(
        routes.clone(),
        vec![default],
        router::ocsp::OcspSettings::default(),
    ));
    Ok((config, ocsp))
}

/// Says which handed-over sockets no role of this process serves.
fn warn_unclaimed() {
    for role in crate::activation::unclaimed() {
        tracing::warn!(
            role,
            "a socket was handed over for a role this process does not run"
        );
    }
}

/// Says which caps the file-descriptor limit gave (`crate::fdlimit`).
fn log_budget(b: &Budget) {
    tracing::info!(
        limit = b.limit,
        reserved = b.reserve,
        router_clients = b.router_clients,
        syslog = b.syslog,
        logplex_http = b.logplex_http,
        "connection caps sized from the file-descriptor limit"
    );
}

/// What every role starts with: the shutdown token (SIGTERM, SIGINT), the
/// metrics recorder and the readiness flags `/readyz` reports.
fn begin() -> anyhow::Result<(
    tokio_util::sync::CancellationToken,
    crate::recorder::Handle,
    Arc<crate::admin::Readiness>,
)> {
    let stop = crate::shutdown::on_signal();
    let metrics =
        crate::admin::install_recorder().context("cannot install the metrics recorder")?;
    Ok((stop, metrics, Arc::new(crate::admin::Readiness::default())))
}

/// The stable line tests and operators read, once per listener on stdout
/// (the process log keeps a debug-level copy, so a terminal shows it once).
fn announce(role: &str, addr: std::net::SocketAddr) {
    println!("listening role={role} addr={addr}");
    tracing::debug!(role, %addr, "listening");
}

/// `switchyard serve`: control API, router and logplex in one process,
/// state in the data directory; connection caps from `budget`.
pub async fn serve(args: ServeArgs, budget: Budget) -> anyhow::Result<()> {
    log_budget(&budget);
    // A bad Procfile stops the server before anything listens.
    let procfile = match (&args.procfile, &args.app) {
        (Some(path), Some(app)) => Some((crate::procfile::read(path)?, app.clone())),
        _ => None,
    };
    let (stop, metrics, ready) = begin()?;
    let key = api_key(&args.data_dir, args.api_key.as_deref(), args.api)?;
    let store = open_store(&args.store, &args.data_dir).await?;

    let threads = args.edge.router_threads();
    let http = bind_workers("router-http", args.http, "--http", threads)?;
    let api = bind("api", args.api, "--api").await?;
    let log_sockets = log_router::LogSockets::bind(&args.logs).await?;
    let https = bind_workers("router-https", args.https, "--https", threads)?;
    let admin = bind("admin", args.admin, "--admin").await?;
    ready.store_open.store(true, Ordering::Release);

    let logplex = log_router::new_logplex(&args.logs, &budget, None);
    let routes = Arc::new(router::Routes::new(router::RouteTable::builder().build()?));
    let tls = tls_settings(&args.data_dir, &args.edge, &args.base_domain)?;
    let (https_config, ocsp) = https_setup(&routes, &tls)?;
    let syslog_config = syslog_tls_config(&tls)?;
    let router = router::Router::with_config(
        routes.clone(),
        Arc::new(RouterToLogplex(logplex.clone())),
        router_config(&args.edge, &budget),
    );
    let backend = Arc::new(ControlToLogplex {
        logplex: logplex.clone(),
        http: log_sockets.http.local_addr()?,
    });
    let settings = control::ControlSettings {
        base_domain: args.base_domain.clone(),
        router_http_port: http
            .first()
            .map(|l| l.local_addr())
            .transpose()?
            .map(|a| a.port()),
        ..control::ControlSettings::default()
    };
    let routes_for_sampling = routes.clone();
    let backend: Arc<dyn control::LogBackend> = backend;
    let (control, follower) = open_control(
        store,
        settings,
        Some(routes),
        Some(backend.clone()),
        &args.store,
        &stop,
        &ready,
    )?;
    upgrade_store(&control).await;
    let acme = spawn_acme(&control, &args.acme, &args.store, &stop);
    // The dyno manager stops its dynos on shutdown, before drains flush.
    let fleet = (args.dynos || procfile.is_some()).then(|| {
        tracing::info!("running the apps' dynos (--dynos)");
        tokio::spawn(crate::fleet::run(
            control.clone(),
            Some(backend),
            dynos::Timers::default(),
            stop.clone(),
        ))
    });
    warn_unclaimed();
    ready.listeners_bound.store(true, Ordering::Release);

    let s = || {
        let t = stop.clone();
        async move { t.cancelled().await }
    };
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(run_router(router, http, https, https_config, stop.clone()));
    log_sockets.serve(&mut tasks, &logplex, syslog_config, &stop);
    tasks.spawn(crate::admin::serve(admin, metrics, ready, s()));
    let sampler = tokio::spawn(crate::admin::sample(
        Some(routes_for_sampling),
        Some(logplex.clone()),
    ));
    if let Some((procfile, app)) = procfile {
        let (api_addr, key) = (api.local_addr()?, key.clone());
        tokio::spawn(async move {
            if let Err(e) = crate::procfile::deploy(api_addr, &key, &app, &procfile).await {
                tracing::error!(error = %e, "cannot deploy --procfile");
            }
        });
    }
    tasks.spawn(control::api::serve(api, control, key, s()));
    let failed = join_servers(tasks, &stop).await;
    sampler.abort();
    ocsp.abort();
    let _ = acme.await;
    if let Some(f) = fleet {
        let _ = f.await;
    }
    if let Some(f) = follower {
        f.abort();
    }
    flush_drains(&logplex).await;
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Waits for every server of a role to end; the first failure stops the
/// others (through `stop`) and is returned.
async fn join_servers(
    mut tasks: tokio::task::JoinSet<std::io::Result<()>>,
    stop: &tokio_util::sync::CancellationToken,
) -> Option<anyhow::Error> {
    let mut failed = None;
    while let Some(done) = tasks.join_next().await {
        let err = match done {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(anyhow::Error::from(e)),
            Err(e) => Some(anyhow::Error::from(e)),
        };
        if let Some(e) = err {
            tracing::error!(error = %e, "a server stopped; shutting down");
            stop.cancel();
            failed.get_or_insert(e);
        }
    }
    failed
}

/// Gives the drains a few seconds to deliver what they buffered.
async fn flush_drains(logplex: &logplex::Logplex) {
    if !logplex.flush(Duration::from_secs(5)).await {
        tracing::warn!("some drains could not deliver their buffered lines before shutdown");
    }
}

fn routes_revision(control: &control::Control) -> u64 {
    control.read().revision
}

/// The API key: given, or generated once and kept in the data directory
/// (printed with the heroku CLI settings the first time).
fn api_key(
    data_dir: &std::path::Path,
    given: Option<&str>,
    api: std::net::SocketAddr,
) -> anyhow::Result<String> {
    std::fs::create_dir_all(data_dir).with_context(|| {
        format!(
            "cannot create the data directory {} (--data-dir)",
            data_dir.display()
        )
    })?;
    let (key, source) = control::apikey::load_or_create(data_dir, given).with_context(|| {
        format!(
            "cannot keep the API key in {} (--data-dir)",
            data_dir.display()
        )
    })?;
    if source == control::apikey::KeySource::Generated {
        println!(
            "Generated an API key (kept in {}). Use it with the heroku CLI:",
            data_dir.join(control::apikey::KEY_FILE).display()
        );
        println!("  export HEROKU_HOST=http://{api} HEROKU_API_KEY={key}");
    }
    Ok(key)
}

/// Opens the store `--store` names: the redb file in the data directory, or
/// etcd (connected off the runtime's workers; the password is never logged).
async fn open_store(
    args: &StoreArgs,
    data_dir: &std::path::Path,
) -> anyhow::Result<Arc<dyn control::Store>> {
    match args.etcd() {
        None => {
            let path = data_dir.join("switchyard.redb");
            let store = control::RedbStore::open(&path)
                .with_context(|| format!("cannot open the store {}", path.display()))?;
            Ok(Arc::new(store))
        }
        Some(config) => Ok(open_etcd(config).await?),
    }
}

/// Connects to etcd off the runtime's workers (the password is never logged).
async fn open_etcd(config: control::EtcdConfig) -> anyhow::Result<Arc<control::EtcdStore>> {
    let what = format!("{} under {}", config.endpoints.join(","), config.prefix);
    let store = tokio::task::spawn_blocking(move || control::EtcdStore::connect(&config))
        .await?
        .with_context(|| format!("cannot use etcd at {what} (--store)"))?;
    tracing::info!(etcd = %what, "store on etcd");
    Ok(Arc::new(store))
}

/// How often a node on a shared store reads what the other nodes committed
/// when etcd's watch has said nothing (one small etcd read each time).
const STORE_POLL: Duration = Duration::from_secs(1);

/// Opens the control plane on `store`, follows the other nodes' commits when
/// the store is shared (etcd), and marks the table loaded.
fn open_control(
    store: Arc<dyn control::Store>,
    settings: control::ControlSettings,
    routes: Option<Arc<router::Routes>>,
    logs: Option<Arc<dyn control::LogBackend>>,
    kind: &StoreArgs,
    stop: &tokio_util::sync::CancellationToken,
    ready: &crate::admin::Readiness,
) -> anyhow::Result<(Arc<control::Control>, Option<tokio::task::JoinHandle<()>>)> {
    let control =
        control::Control::open(store, settings, routes, logs).context("cannot load the store")?;
    let follower = kind
        .etcd()
        .map(|config| follow_store(control.clone(), config, stop.clone()));
    tracing::info!(revision = routes_revision(&control), "control plane ready");
    ready.table_loaded.store(true, Ordering::Release);
    Ok((control, follower))
}

/// Starts the ACME manager ([`control::acme`]): it orders and renews the
/// certificates of apps with ACM on, until `stop`.
fn spawn_acme(
    control: &Arc<control::Control>,
    args: &crate::cli::AcmeArgs,
    store: &StoreArgs,
    stop: &tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let stop = stop.clone();
    tokio::spawn(control::acme::run(
        control.clone(),
        args.settings(store.etcd().is_some()),
        async move { stop.cancelled().await },
    ))
}

/// Brings a store written by an earlier version up to date
/// ([`control::upgrade`]); a failure is logged, and the next start tries
/// again.
async fn upgrade_store(control: &Arc<control::Control>) {
    match control.add_platform_tokens().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(apps = n, "gave apps without one a `heroku` log token"),
        Err(e) => {
            tracing::warn!(error = %e, "cannot add the apps' `heroku` log tokens; routers apart cannot ship those apps' lines")
        }
    }
}

/// Applies the other control nodes' commits to this node's mirror (and its
/// in-process router and logplex, under `serve`) as etcd reports them, and
/// at least every [`STORE_POLL`], until `stop`. While the store is
/// unreachable the node keeps its last state; the failure is logged once,
/// and its end once. (API requests read the store before they are answered
/// anyway: [`control::Control::refresh`].)
fn follow_store(
    control: Arc<control::Control>,
    config: control::EtcdConfig,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // etcd says when another node committed; the poll is the safety
        // net for a watch that broke without saying so.
        let (tx, mut committed) = tokio::sync::watch::channel(0);
        let watcher = tokio::spawn(control::store::watch_commits(config, tx));
        let mut tick = tokio::time::interval(STORE_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    watcher.abort();
                    return;
                }
                _ = tick.tick() => {}
                _ = committed.changed() => {}
            }
            let caught_up = control.catch_up().await;
            metrics::gauge!("switchyard_store_connected")
                .set(f64::from(u8::from(caught_up.is_ok())));
            match caught_up {
                Ok(revision) if failing => {
                    failing = false;
                    tracing::info!(revision, "the shared store answers again");
                }
                Ok(_) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "cannot read the shared store; keeping the last state");
                }
                Err(_) => {}
            }
        }
    })
}

/// `switchyard control`: the control API alone. With `--store etcd://…` it
/// keeps no state of its own; routers follow it (or etcd) for the table.
pub async fn control(args: ControlArgs) -> anyhow::Result<()> {
    let (stop, metrics, ready) = begin()?;
    let key = api_key(&args.data_dir, args.api_key.as_deref(), args.api)?;
    // The shipper's directory reads the control plane, which is opened
    // after its log backend.
    let opened = Arc::new(std::sync::OnceLock::new());
    let mut api_lines = None;
    let (store, logs): (
        Arc<dyn control::Store>,
        Option<Arc<dyn control::LogBackend>>,
    ) = match args.store.etcd() {
        Some(config) => {
            let store = open_etcd(config).await?;
            let members = Arc::new(
                control::members::MemberWatch::start(store.client(), store.prefix(), "logplex")
                    .await
                    .context("cannot watch the log routers in etcd")?,
            );
            let directory = crate::logs::ControlDirectory {
                control: opened.clone(),
                members: members.clone(),
            };
            let settings = logplex::ShipSettings {
                host: host_name(),
                sender: logplex::Sender::Control,
                ..logplex::ShipSettings::default()
            };
            let shipper = logplex::Shipper::start(settings, Arc::new(directory));
            let logs = crate::logs::ClusterLogs {
                members,
                key: logplex::GrantKey::derive(&key),
                ttl: logplex::LogplexSettings::default().session_ttl,
                shipper: shipper.clone(),
            };
            api_lines = Some(shipper);
            (store, Some(Arc::new(logs)))
        }
        None => (open_store(&args.store, &args.data_dir).await?, None),
    };
    ready.store_open.store(true, Ordering::Release);
    let api = bind("api", args.api, "--api").await?;
    let admin = bind("admin", args.admin, "--admin").await?;
    warn_unclaimed();
    ready.listeners_bound.store(true, Ordering::Release);
    let settings = control::ControlSettings {
        base_domain: args.base_domain.clone(),
        router_http_port: Some(args.router_port),
        ..control::ControlSettings::default()
    };
    let (control, follower) =
        open_control(store, settings, None, logs, &args.store, &stop, &ready)?;
    let _ = opened.set(Arc::downgrade(&control));
    upgrade_store(&control).await;
    let acme = spawn_acme(&control, &args.acme, &args.store, &stop);
    let s = || {
        let t = stop.clone();
        async move { t.cancelled().await }
    };
    let admin_task = tokio::spawn(crate::admin::serve(admin, metrics, ready, s()));
    let served = control::api::serve(api, control, key, s()).await;
    stop.cancel();
    let _ = acme.await;
    if let Some(f) = follower {
        f.abort();
    }
    if let Some(shipper) = api_lines {
        shipper.flush(Duration::from_secs(5)).await;
    }
    let _ = admin_task.await;
    served.context("control API listener failed")
}

/// `switchyard dynos`: the dyno manager alone, on the shared store. Web
/// dynos are registered there at this machine's loopback addresses, so
/// the routers that reach them are the ones on this machine. Their output
/// and life-cycle lines go to this process's log.
pub async fn dynos(args: DynosArgs) -> anyhow::Result<()> {
    let Some(etcd) = args.store.etcd() else {
        anyhow::bail!(
            "switchyard dynos reads the apps from the store the control nodes write: give \
             --store etcd://HOST:PORT[/prefix] (on one machine, `switchyard serve --dynos`)"
        );
    };
    let (stop, metrics, ready) = begin()?;
    ready.logs_only.store(true, Ordering::Release);
    let admin = bind("admin", args.admin, "--admin").await?;
    warn_unclaimed();
    ready.listeners_bound.store(true, Ordering::Release);
    let s = || {
        let t = stop.clone();
        async move { t.cancelled().await }
    };
    let admin_task = tokio::spawn(crate::admin::serve(admin, metrics, ready.clone(), s()));
    let store = open_etcd(etcd).await?;
    ready.store_open.store(true, Ordering::Release);
    let logs: Arc<dyn control::LogBackend> = Arc::new(crate::logs::DynoLinesToTracing);
    let (control, follower) = open_control(
        store,
        control::ControlSettings::default(),
        None,
        Some(logs.clone()),
        &args.store,
        &stop,
        &ready,
    )?;
    crate::fleet::run(control, Some(logs), dynos::Timers::default(), stop.clone()).await;
    if let Some(f) = follower {
        f.abort();
    }
    let _ = admin_task.await;
    Ok(())
}

/// `switchyard router`: follows a control plane's route table, or etcd
/// directly, and serves it; keeps serving the last table (from memory, or
/// from the data directory after a restart) while its source is away.
pub async fn router(args: RouterArgs, budget: Budget) -> anyhow::Result<()> {
    let source = args.source().map_err(anyhow::Error::msg)?;
    log_budget(&budget);
    let (stop, metrics, ready) = begin()?;
    ready.store_open.store(true, Ordering::Release);
    let threads = args.edge.router_threads();
    let http = bind_workers("router-http", args.http, "--http", threads)?;
    let https = bind_workers("router-https", args.https, "--https", threads)?;
    let admin = bind("admin", args.admin, "--admin").await?;
    warn_unclaimed();
    ready.listeners_bound.store(true, Ordering::Release);
    let routes = Arc::new(router::Routes::new(router::RouteTable::builder().build()?));
    let tls = tls_settings(&args.data_dir, &args.edge, &args.base_domain)?;
    let (https_config, ocsp) = https_setup(&routes, &tls)?;
    let (sink, shipper) = router_log_sink(&args, &source, &routes)?;
    let mut config = router_config(&args.edge, &budget);
    let owners = match (&args.advertise, &source) {
        (Some(advertise), control::FollowSource::Etcd(etcd)) => {
            let ring = crate::owners::Ring::with_line(advertise, args.forward_max_rate, threads);
            config.owners = Some(ring.clone());
            config.hop_limit = args.hop_limit;
            Some(tokio::spawn(crate::owners::follow(
                etcd.clone(),
                advertise.clone(),
                Duration::from_secs(args.member_ttl),
                ring,
                stop.clone(),
            )))
        }
        _ => None,
    };
    let router = router::Router::with_config(routes.clone(), sink, config);
    std::fs::create_dir_all(&args.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {} (--data-dir)",
            args.data_dir.display()
        )
    })?;
    tracing::info!(source = %source, "following the route table");
    let mut follow = match source {
        control::FollowSource::Etcd(config) => {
            control::FollowSettings::etcd(config, args.base_domain)
        }
        control::FollowSource::Control { url, api_key } => {
            control::FollowSettings::new(url, api_key, args.base_domain)
        }
    };
    follow.cache = Some(args.data_dir.join("route-table.json"));
    let status = Arc::new(control::FollowStatus::default());
    ready.follow(status.clone());
    let t = stop.clone();
    let follower = tokio::spawn(control::follow(
        follow,
        routes.clone(),
        status,
        async move { t.cancelled().await },
    ));
    let sampler = tokio::spawn(crate::admin::sample(Some(routes), None));
    let s = || {
        let t = stop.clone();
        async move { t.cancelled().await }
    };
    let admin_task = tokio::spawn(crate::admin::serve(admin, metrics, ready, s()));
    let served = run_router(router, http, https, https_config, stop.clone()).await;
    stop.cancel();
    if let Some(owners) = owners {
        // It left the live routers when shutdown began; this waits for the
        // revoke to be sent.
        let _ = tokio::time::timeout(Duration::from_secs(5), owners).await;
    }
    if let Some(shipper) = shipper {
        if !shipper.flush(Duration::from_secs(5)).await {
            tracing::warn!("some router lines could not be sent to a log router before shutdown");
        }
    }
    let _ = follower.await;
    sampler.abort();
    ocsp.abort();
    let _ = admin_task.await;
    served.context("router listener failed")
}

/// A router's log sink, and its shipper when it ships.
type RouterLogs = (Arc<dyn router::LogSink>, Option<Arc<logplex::Shipper>>);

/// Where a router apart writes its router lines: shipped to a log router
/// (`--logplex-syslog`, or the owner of each app's channel among the live
/// log routers in etcd), else its own debug log. The shipper, if any, is
/// flushed at shutdown.
fn router_log_sink(
    args: &RouterArgs,
    source: &control::FollowSource,
    routes: &Arc<router::Routes>,
) -> anyhow::Result<RouterLogs> {
    let etcd = match source {
        control::FollowSource::Etcd(config) => Some(config.clone()),
        control::FollowSource::Control { .. } => None,
    };
    if args.logplex_syslog.is_none() && etcd.is_none() {
        tracing::info!(
            "router lines go to this process's log (give --logplex-syslog to ship them)"
        );
        return Ok((Arc::new(RouterToTracing), None));
    }
    let members = Arc::new(std::sync::OnceLock::new());
    if let (None, Some(config)) = (&args.logplex_syslog, etcd) {
        tokio::spawn(watch_log_routers(config, members.clone()));
    }
    let directory = ShipDirectory {
        routes: routes.clone(),
        fixed: args.logplex_syslog.as_deref().map(Arc::from),
        members,
        address: if args.logplex_tls {
            "syslog-tls"
        } else {
            "syslog"
        },
    };
    let settings = logplex::ShipSettings {
        host: host_name(),
        tls: tls_to_log_routers(args)?,
        ..logplex::ShipSettings::default()
    };
    let shipper = logplex::Shipper::start(settings, Arc::new(directory));
    Ok((Arc::new(RouterToShipper(shipper.clone())), Some(shipper)))
}

/// The TLS client configuration for log routers (`--logplex-tls`,
/// `--logplex-ca`), or `None` for plain TCP.
fn tls_to_log_routers(args: &RouterArgs) -> anyhow::Result<Option<Arc<rustls::ClientConfig>>> {
    if !args.logplex_tls {
        return Ok(None);
    }
    let Some(ca) = &args.logplex_ca else {
        let config =
            logplex::drain::tls::client_config(&logplex::LogplexSettings::default(), false)
                .context("cannot set up TLS to log routers (--logplex-tls)")?;
        return Ok(Some(config));
    };
    let pem = std::fs::read_to_string(ca)
        .with_context(|| format!("cannot read {} (--logplex-ca)", ca.display()))?;
    let certs = router::tls::parse_chain(&pem).with_context(|| {
        format!(
            "{} holds no usable PEM certificate (--logplex-ca)",
            ca.display()
        )
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).with_context(|| {
            format!(
                "{}: not a CA certificate rustls accepts (--logplex-ca)",
                ca.display()
            )
        })?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Some(Arc::new(config)))
}

/// This machine's host name, for the HOSTNAME of shipped frames.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic() && b != b':'))
        .unwrap_or_else(|| "router".into())
}

/// Follows the live log routers in etcd into `members` (retrying until
/// etcd answers; meanwhile router lines are counted as dropped), and keeps
/// `router_log_routers` at their number.
async fn watch_log_routers(
    config: control::EtcdConfig,
    members: Arc<std::sync::OnceLock<control::members::MemberWatch>>,
) {
    let mut wait = Duration::from_millis(100);
    let watch = loop {
        match control::members::MemberWatch::connect(&config, "logplex").await {
            Ok(w) => break w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the live log routers from etcd; retrying")
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    };
    let mut changed = watch.changed();
    let gauge = metrics::gauge!("router_log_routers");
    gauge.set(watch.current().list.len() as f64);
    if members.set(watch).is_err() {
        return;
    }
    let Some(watch) = members.get() else { return };
    while changed.changed().await.is_ok() {
        gauge.set(watch.current().list.len() as f64);
    }
}

/// The HTTPS listener's TLS settings from the flags (default certificate
/// loaded, or generated once into the data directory).
fn tls_settings(
    data_dir: &std::path::Path,
    edge: &EdgeArgs,
    base_domain: &str,
) -> anyhow::Result<router::TlsSettings> {
    cert_settings(data_dir, &edge.tls, base_domain)
}

/// [`tls_settings`] from the certificate flags alone.
fn cert_settings(
    data_dir: &std::path::Path,
    tls: &crate::cli::TlsArgs,
    base_domain: &str,
) -> anyhow::Result<router::TlsSettings> {
    let (default_chain_pem, default_key_pem) = crate::tlsconf::default_cert(
        data_dir,
        tls.tls_cert.as_deref(),
        tls.tls_key.as_deref(),
        base_domain,
    )?;
    Ok(router::TlsSettings {
        default_chain_pem,
        default_key_pem,
        min_version: tls.tls_min_version,
    })
}

/// Syslog over TLS (RFC 5425) uses the default certificate.
fn syslog_tls_config(tls: &router::TlsSettings) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let key = router::tls::certified_key(&tls.default_chain_pem, &tls.default_key_pem)?;
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
        router::MinTls::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        router::MinTls::Tls13 => &[&rustls::version::TLS13],
    };
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)?
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
    Ok(Arc::new(config))
}

fn router_config(edge: &EdgeArgs, budget: &Budget) -> router::RouterConfig {
    router::RouterConfig {
        shutdown_grace: Duration::from_secs(edge.shutdown_grace),
        client_idle: Duration::from_secs(edge.client_idle),
        max_client_connections: budget.router_clients,
        ..router::RouterConfig::default()
    }
}
