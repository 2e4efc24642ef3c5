//! The roles: `serve` (everything) and `router` (a router alone).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{TcpListener, UdpSocket};

use crate::cli::{RouterArgs, ServeArgs};
use crate::logs::{ControlToLogplex, RouterToLogplex, RouterToTracing};

async fn bind(role: &str, addr: std::net::SocketAddr, flag: &str) -> anyhow::Result<TcpListener> {
    let l = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({flag})"))?;
    announce(role, l.local_addr()?);
    Ok(l)
}

/// The stable line tests and operators read.
fn announce(role: &str, addr: std::net::SocketAddr) {
    println!("listening role={role} addr={addr}");
    tracing::info!(role, %addr, "listening");
}

/// `switchyard serve`: control API, router and logplex in one process,
/// state in the data directory.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let stop = crate::shutdown::on_signal();
    std::fs::create_dir_all(&args.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {} (--data-dir)",
            args.data_dir.display()
        )
    })?;
    let (key, source) = control::apikey::load_or_create(&args.data_dir, args.api_key.as_deref())
        .with_context(|| {
            format!(
                "cannot keep the API key in {} (--data-dir)",
                args.data_dir.display()
            )
        })?;
    if source == control::apikey::KeySource::Generated {
        println!(
            "Generated an API key (kept in {}). Use it with the heroku CLI:",
            args.data_dir.join(control::apikey::KEY_FILE).display()
        );
        println!(
            "  export HEROKU_HOST=http://{} HEROKU_API_KEY={key}",
            args.api
        );
    }
    let store_path = args.data_dir.join("switchyard.redb");
    let store = control::RedbStore::open(&store_path)
        .with_context(|| format!("cannot open the store {}", store_path.display()))?;

    let http = bind("router-http", args.http, "--http").await?;
    let api = bind("api", args.api, "--api").await?;
    let logplex_http = bind("logplex-http", args.logplex_http, "--logplex-http").await?;
    let syslog_tcp = bind("syslog-tcp", args.syslog, "--syslog").await?;
    let syslog_udp = UdpSocket::bind(args.syslog)
        .await
        .with_context(|| format!("cannot listen on {} (--syslog, UDP)", args.syslog))?;
    announce("syslog-udp", syslog_udp.local_addr()?);
    // HTTPS, syslog TLS and admin are accepted here and wired by their own work.
    tracing::debug!(https = %args.https, syslog_tls = %args.syslog_tls, admin = %args.admin, "not served yet");

    let logplex = logplex::Logplex::new(logplex::LogplexSettings::default());
    let routes = Arc::new(router::Routes::new(router::RouteTable::builder().build()?));
    let router = router::Router::new(routes.clone(), Arc::new(RouterToLogplex(logplex.clone())));
    let backend = Arc::new(ControlToLogplex {
        logplex: logplex.clone(),
        http: logplex_http.local_addr()?,
    });
    let settings = control::ControlSettings {
        base_domain: args.base_domain.clone(),
        router_http_port: Some(http.local_addr()?.port()),
        ..control::ControlSettings::default()
    };
    let control = control::Control::open(Arc::new(store), settings, Some(routes), Some(backend))
        .context("cannot load the store")?;
    tracing::info!(revision = routes_revision(&control), "control plane ready");

    let s = || {
        let t = stop.clone();
        async move { t.cancelled().await }
    };
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(router::serve(http, router, s()));
    tasks.spawn(control::api::serve(api, control, key, s()));
    tasks.spawn(logplex::serve_http(logplex_http, logplex.clone(), s()));
    tasks.spawn(logplex::serve_syslog_tcp(syslog_tcp, logplex.clone(), s()));
    tasks.spawn(logplex::serve_syslog_udp(syslog_udp, logplex.clone(), s()));
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
    logplex.flush(Duration::from_secs(5)).await;
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn routes_revision(control: &control::Control) -> u64 {
    control.read().revision
}

/// `switchyard router`: follows a control plane's route table and serves
/// it; keeps serving the last table while the control plane is away.
pub async fn router(args: RouterArgs) -> anyhow::Result<()> {
    let stop = crate::shutdown::on_signal();
    let http = bind("router-http", args.http, "--http").await?;
    tracing::debug!(https = %args.https, admin = %args.admin, "not served yet");
    let routes = Arc::new(router::Routes::new(router::RouteTable::builder().build()?));
    let router = router::Router::new(routes.clone(), Arc::new(RouterToTracing));
    std::fs::create_dir_all(&args.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {} (--data-dir)",
            args.data_dir.display()
        )
    })?;
    let mut follow = control::FollowSettings::new(args.control, args.api_key, args.base_domain);
    follow.cache = Some(args.data_dir.join("route-table.json"));
    let status = Arc::new(control::FollowStatus::default());
    let t = stop.clone();
    let follower = tokio::spawn(control::follow(follow, routes, status, async move {
        t.cancelled().await
    }));
    let t = stop.clone();
    let served = router::serve(http, router, async move { t.cancelled().await }).await;
    stop.cancel();
    let _ = follower.await;
    served.context("router listener failed")
}
