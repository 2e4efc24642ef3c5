//! The command line, typed once: clap derive with a `SWITCHYARD_*`
//! environment fallback for every flag. Parsing is a pure function of the
//! arguments and an environment lookup, so it is tested without touching
//! the process environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Switchyard: Heroku's router, Logplex and platform API as one binary.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about)]
pub struct Cli {
    /// Log output format on stderr.
    #[arg(long, env = "SWITCHYARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// How tracing output is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The roles.
// Parsed once at start and moved into its role: the size gap between the
// variants costs nothing, and boxing would only add noise to every match.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run everything in one process: control API, router and logplex.
    Serve(ServeArgs),
    /// Run the control API alone (stateless with `--store etcd://…`: run as
    /// many as you like behind any load balancer).
    Control(ControlArgs),
    /// Run a router alone, following a control plane's route table.
    Router(RouterArgs),
    /// Run the log router alone: syslog (TCP, UDP, TLS) and `POST /logs`
    /// ingest, log-session streams and drains, with its channels, tokens
    /// and drains read from a shared store (`--store etcd://…`; on one
    /// machine `switchyard serve` runs logplex with the rest).
    Logplex(LogplexArgs),
    /// Run the dyno manager alone: the processes of every app with a
    /// Procfile, as many as its formation asks, their state written to the
    /// shared store (`--store etcd://…`) where routers follow it.
    Dynos(DynosArgs),
}

/// Flags of `switchyard dynos`.
#[derive(Debug, Args)]
pub struct DynosArgs {
    /// Where the apps, Procfiles and formations live: `etcd://…` (the
    /// control nodes' store).
    #[command(flatten)]
    pub store: StoreArgs,
    /// Admin listener (`/metrics`, `/healthz`, `/readyz`).
    #[arg(long, env = "SWITCHYARD_ADMIN", default_value = "127.0.0.1:9464", value_parser = parse_addr)]
    pub admin: SocketAddr,
}

/// Flags of `switchyard serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Router HTTP listener.
    #[arg(long, env = "SWITCHYARD_HTTP", default_value = "127.0.0.1:8080", value_parser = parse_addr)]
    pub http: SocketAddr,
    /// Router HTTPS listener.
    #[arg(long, env = "SWITCHYARD_HTTPS", default_value = "127.0.0.1:8443", value_parser = parse_addr)]
    pub https: SocketAddr,
    /// Control API listener (Heroku API subset + routing-table API).
    #[arg(long, env = "SWITCHYARD_API", default_value = "127.0.0.1:5000", value_parser = parse_addr)]
    pub api: SocketAddr,
    /// Logplex's listeners.
    #[command(flatten)]
    pub logs: LogListenArgs,
    /// Admin listener (`/metrics`, `/healthz`).
    #[arg(long, env = "SWITCHYARD_ADMIN", default_value = "127.0.0.1:9464", value_parser = parse_addr)]
    pub admin: SocketAddr,
    /// Data directory: the store, the generated API key and certificate.
    #[arg(long, env = "SWITCHYARD_DATA_DIR", default_value = "./.switchyard")]
    pub data_dir: PathBuf,
    /// Apps answer on `<app>.<base-domain>`.
    #[arg(long, env = "SWITCHYARD_BASE_DOMAIN", default_value = "localhost", value_parser = parse_domain)]
    pub base_domain: String,
    /// The API key clients must present; generated and kept in the data
    /// directory when unset.
    #[arg(long, env = "SWITCHYARD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Where the state lives.
    #[command(flatten)]
    pub store: StoreArgs,
    /// TLS and shutdown.
    #[command(flatten)]
    pub edge: EdgeArgs,
    /// Automated certificate management (ACME).
    #[command(flatten)]
    pub acme: AcmeArgs,
    /// Run the apps' processes: each app with a Procfile
    /// (`PUT /apps/{app}/procfile`) gets as many dynos of each type as its
    /// formation asks (`heroku ps:scale web=2`).
    #[arg(long, env = "SWITCHYARD_DYNOS")]
    pub dynos: bool,
    /// A Procfile to run at once (implies `--dynos`): app `--app` is
    /// created if needed and given it, its directory as the dynos'.
    #[arg(long, env = "SWITCHYARD_PROCFILE", requires = "app")]
    pub procfile: Option<PathBuf>,
    /// The app `--procfile` is for.
    #[arg(long, env = "SWITCHYARD_APP", requires = "procfile", value_parser = parse_app_name)]
    pub app: Option<String>,
}

fn parse_app_name(s: &str) -> Result<String, String> {
    control::validate::app_name(s)
        .map(|()| s.to_string())
        .map_err(|e| e.to_string())
}

/// Flags of `switchyard control`.
#[derive(Debug, Args)]
pub struct ControlArgs {
    /// Control API listener (Heroku API subset + routing-table API).
    #[arg(long, env = "SWITCHYARD_API", default_value = "127.0.0.1:5000", value_parser = parse_addr)]
    pub api: SocketAddr,
    /// Admin listener (`/metrics`, `/healthz`).
    #[arg(long, env = "SWITCHYARD_ADMIN", default_value = "127.0.0.1:9464", value_parser = parse_addr)]
    pub admin: SocketAddr,
    /// Data directory: the redb store and the generated API key.
    #[arg(long, env = "SWITCHYARD_DATA_DIR", default_value = "./.switchyard")]
    pub data_dir: PathBuf,
    /// Apps answer on `<app>.<base-domain>`.
    #[arg(long, env = "SWITCHYARD_BASE_DOMAIN", default_value = "localhost", value_parser = parse_domain)]
    pub base_domain: String,
    /// The routers' public HTTP port, for each app's `web_url`.
    #[arg(long, env = "SWITCHYARD_ROUTER_PORT", default_value_t = 80)]
    pub router_port: u16,
    /// The API key clients must present; generated and kept in the data
    /// directory when unset (give the same key to every control node).
    #[arg(long, env = "SWITCHYARD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Where the state lives.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Automated certificate management (ACME).
    #[command(flatten)]
    pub acme: AcmeArgs,
}

/// Which store holds the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// The redb file in the data directory (one node).
    Redb,
    /// etcd v3: members and key prefix (TLS and auth come from [`StoreArgs`]).
    Etcd(control::EtcdConfig),
}

/// `--store` and how to reach etcd.
#[derive(Args)]
pub struct StoreArgs {
    /// `redb` (a file in the data directory) or
    /// `etcd://HOST:PORT[,HOST:PORT…][/prefix]` (default prefix /switchyard).
    #[arg(long = "store", env = "SWITCHYARD_STORE", default_value = "redb", value_parser = parse_store)]
    pub kind: StoreKind,
    /// CA certificate (PEM) that signed etcd's; connects with TLS.
    #[arg(long, env = "SWITCHYARD_ETCD_CACERT")]
    pub etcd_cacert: Option<PathBuf>,
    /// Client certificate (PEM) for etcd; connects with TLS.
    #[arg(long, env = "SWITCHYARD_ETCD_CERT", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    /// Private key (PEM) of `--etcd-cert`.
    #[arg(long, env = "SWITCHYARD_ETCD_KEY", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    /// etcd user name.
    #[arg(long, env = "SWITCHYARD_ETCD_USER", requires = "etcd_password")]
    pub etcd_user: Option<String>,
    /// etcd password of `--etcd-user` (never logged).
    #[arg(
        long,
        env = "SWITCHYARD_ETCD_PASSWORD",
        hide_env_values = true,
        requires = "etcd_user"
    )]
    pub etcd_password: Option<String>,
}

impl std::fmt::Debug for StoreArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password stays out of every print; `etcd()` has the same rule.
        f.debug_struct("StoreArgs")
            .field("kind", &self.kind)
            .field("etcd_cacert", &self.etcd_cacert)
            .field("etcd_cert", &self.etcd_cert)
            .field("etcd_key", &self.etcd_key)
            .field("etcd_user", &self.etcd_user)
            .finish_non_exhaustive()
    }
}

impl StoreArgs {
    /// The etcd configuration with TLS and auth, or `None` for redb.
    pub fn etcd(&self) -> Option<control::EtcdConfig> {
        let StoreKind::Etcd(config) = &self.kind else {
            return None;
        };
        let mut config = config.clone();
        config.ca_cert = self.etcd_cacert.clone();
        config.client_cert = self.etcd_cert.clone().zip(self.etcd_key.clone());
        config.user = self.etcd_user.clone().zip(self.etcd_password.clone());
        Some(config)
    }
}

fn parse_store(s: &str) -> Result<StoreKind, String> {
    match s.trim() {
        "redb" => Ok(StoreKind::Redb),
        s if s.starts_with("etcd://") => control::EtcdConfig::parse_url(s).map(StoreKind::Etcd),
        _ => Err(format!(
            "{s:?}: expected redb or etcd://HOST:PORT[,HOST:PORT…][/prefix]"
        )),
    }
}

/// Automated certificate management: where certificates are ordered.
#[derive(Debug, Args)]
pub struct AcmeArgs {
    /// The ACME CA's directory URL (Let's Encrypt production by default).
    #[arg(long, env = "SWITCHYARD_ACME_DIRECTORY", default_value = control::acme::LETS_ENCRYPT, value_parser = parse_directory)]
    pub acme_directory: String,
    /// Order from Let's Encrypt's staging CA instead (untrusted
    /// certificates, generous rate limits: for trying ACM out).
    #[arg(
        long,
        env = "SWITCHYARD_ACME_STAGING",
        conflicts_with = "acme_directory"
    )]
    pub acme_staging: bool,
    /// A root certificate (PEM file) to trust for the ACME server's HTTPS
    /// instead of the web PKI (a test CA such as pebble).
    #[arg(long, env = "SWITCHYARD_ACME_CA_ROOT")]
    pub acme_ca_root: Option<PathBuf>,
    /// Seconds to wait after a failed order before the next; doubles per
    /// failed attempt.
    #[arg(long, env = "SWITCHYARD_ACME_RETRY_SECS", default_value_t = 60)]
    pub acme_retry_secs: u64,
    /// Failed orders in a row before a domain is `failed` (until
    /// `heroku certs:auto:refresh`).
    #[arg(long, env = "SWITCHYARD_ACME_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub acme_attempts: u32,
}

impl AcmeArgs {
    /// The ACME manager's settings. With a shared store (`shared`),
    /// routers elsewhere follow it, and get a moment to pick up a
    /// challenge before the CA looks.
    pub fn settings(&self, shared: bool) -> control::acme::AcmeSettings {
        control::acme::AcmeSettings {
            directory: if self.acme_staging {
                control::acme::LETS_ENCRYPT_STAGING.into()
            } else {
                self.acme_directory.clone()
            },
            ca_root: self.acme_ca_root.clone(),
            retry_after: std::time::Duration::from_secs(self.acme_retry_secs),
            max_attempts: self.acme_attempts,
            propagation: if shared {
                std::time::Duration::from_secs(2)
            } else {
                std::time::Duration::ZERO
            },
            ..control::acme::AcmeSettings::default()
        }
    }
}

/// The default certificate and TLS version, for HTTPS and syslog TLS.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// Default certificate chain (PEM) for HTTPS and syslog TLS; a
    /// self-signed one is generated into the data directory when unset.
    #[arg(long, env = "SWITCHYARD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of `--tls-cert`.
    #[arg(long, env = "SWITCHYARD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Lowest TLS version accepted: `1.2` or `1.3`.
    #[arg(long, env = "SWITCHYARD_TLS_MIN_VERSION", default_value = "1.2", value_parser = parse_tls_version)]
    pub tls_min_version: router::MinTls,
}

/// TLS and lifecycle flags shared by the roles that run a router.
#[derive(Debug, Args)]
pub struct EdgeArgs {
    /// The default certificate.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Seconds in-flight requests get to finish after SIGTERM before they
    /// are cut (H24).
    #[arg(long, env = "SWITCHYARD_SHUTDOWN_GRACE", default_value_t = 25)]
    pub shutdown_grace: u64,
    /// Seconds a client connection may sit with no request in flight and no
    /// bytes moving before it is closed (HTTP/2 keep-alive, mostly). Keep it
    /// above the idle timeout of any load balancer in front.
    #[arg(long, env = "SWITCHYARD_CLIENT_IDLE", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub client_idle: u64,
    /// Router worker threads: each runs its own runtime and accepts on its
    /// share of the listeners (nginx's worker model). 0: one per CPU.
    #[arg(long, env = "SWITCHYARD_ROUTER_THREADS", default_value_t = 0)]
    pub router_threads: usize,
}

impl EdgeArgs {
    /// Router worker threads to run (`--router-threads`, 0 = one per CPU).
    pub fn router_threads(&self) -> usize {
        match self.router_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

fn parse_tls_version(s: &str) -> Result<router::MinTls, String> {
    router::MinTls::parse(s).ok_or_else(|| format!("expected 1.2 or 1.3, got {s:?}"))
}

/// Flags of `switchyard router`.
#[derive(Debug, Args)]
pub struct RouterArgs {
    /// Control plane URL to follow, e.g. `http://127.0.0.1:5000` (or follow
    /// etcd directly with `--store etcd://…`).
    #[arg(long, env = "SWITCHYARD_CONTROL", value_parser = parse_url)]
    pub control: Option<String>,
    /// The control plane's API key (with `--control`).
    #[arg(long, env = "SWITCHYARD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Where the table comes from when not from a control plane:
    /// `--store etcd://HOST:PORT[,…][/prefix]` follows etcd directly.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Router HTTP listener.
    #[arg(long, env = "SWITCHYARD_HTTP", default_value = "127.0.0.1:8080", value_parser = parse_addr)]
    pub http: SocketAddr,
    /// Router HTTPS listener.
    #[arg(long, env = "SWITCHYARD_HTTPS", default_value = "127.0.0.1:8443", value_parser = parse_addr)]
    pub https: SocketAddr,
    /// Admin listener (`/metrics`, `/healthz`).
    #[arg(long, env = "SWITCHYARD_ADMIN", default_value = "127.0.0.1:9464", value_parser = parse_addr)]
    pub admin: SocketAddr,
    /// Apps answer on `<app>.<base-domain>`.
    #[arg(long, env = "SWITCHYARD_BASE_DOMAIN", default_value = "localhost", value_parser = parse_domain)]
    pub base_domain: String,
    /// Data directory: the last route table is kept here
    /// (`route-table.json`) so a restart serves it before the control plane answers.
    #[arg(long, env = "SWITCHYARD_DATA_DIR", default_value = "./.switchyard")]
    pub data_dir: PathBuf,
    /// Send router lines to this log router's syslog TCP listener
    /// (`HOST:PORT`) instead of the owner of each app's channel among the
    /// live log routers in etcd (with `--store etcd://…`). Without either,
    /// router lines go to this process's own log at debug level.
    #[arg(long, env = "SWITCHYARD_LOGPLEX_SYSLOG", value_parser = parse_advertise)]
    pub logplex_syslog: Option<String>,
    /// Send router lines over syslog TLS (RFC 5425): to `--logplex-syslog`,
    /// which then names a TLS listener, or to the `--advertise-tls` address
    /// of each log router in etcd.
    #[arg(long, env = "SWITCHYARD_LOGPLEX_TLS")]
    pub logplex_tls: bool,
    /// PEM file of the CA (or self-signed certificate) the log routers'
    /// TLS certificates are checked against (`--logplex-tls`); default: the
    /// Web PKI roots.
    #[arg(long, env = "SWITCHYARD_LOGPLEX_CA")]
    pub logplex_ca: Option<PathBuf>,
    /// The plain HTTP address other routers reach this one on
    /// (`HOST:PORT`, with `--store etcd://…`). When given, the router
    /// registers in etcd under `<prefix>/members/router/<HOST:PORT>` on a
    /// lease of `--member-ttl`, and each app's requests are routed by one
    /// live router, its owner (rendezvous over the live routers): the
    /// others forward them there, so the app has one queue.
    #[arg(long = "advertise", env = "SWITCHYARD_ROUTER_ADVERTISE", value_parser = parse_advertise)]
    pub advertise: Option<String>,
    /// Seconds the router's membership lease outlives its last keep-alive
    /// (with `--advertise`): how long a dead owner's apps wait to move.
    #[arg(long, env = "SWITCHYARD_MEMBER_TTL", default_value_t = 5, value_parser = clap::value_parser!(u64).range(2..=60))]
    pub member_ttl: u64,
    /// How many times a request may be forwarded between routers (with
    /// `--advertise`); one that would be forwarded again gets H99.
    #[arg(long, env = "SWITCHYARD_HOP_LIMIT", default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=8))]
    pub hop_limit: u8,
    /// The big-app line (with `--advertise`): an app of more requests a
    /// second than this, over all routers, is routed by each router on its
    /// own queue instead of through its owner (an owner carries one app's
    /// traffic only up to what one router carries; BENCHMARKS.md, "Many
    /// routers"). Each worker thread estimates the rate from its own share.
    /// 0: always through the owner.
    #[arg(long, env = "SWITCHYARD_FORWARD_MAX_RATE", default_value_t = 5000)]
    pub forward_max_rate: u64,
    /// TLS and shutdown.
    #[command(flatten)]
    pub edge: EdgeArgs,
}

impl RouterArgs {
    /// What the router follows: a control plane (`--control` and
    /// `--api-key`) or etcd (`--store etcd://…`), exactly one.
    pub fn source(&self) -> Result<control::FollowSource, String> {
        match (&self.control, self.store.etcd()) {
            (_, None) if self.advertise.is_some() => Err(
                "--advertise needs --store etcd://…: routers find each other in etcd".into(),
            ),
            (Some(_), Some(_)) => Err(
                "give either --control URL or --store etcd://…, not both: a router follows one source"
                    .into(),
            ),
            (Some(url), None) => match &self.api_key {
                Some(key) => Ok(control::FollowSource::Control {
                    url: url.clone(),
                    api_key: key.clone(),
                }),
                None => Err("--control needs the control plane's --api-key".into()),
            },
            (None, Some(config)) => Ok(control::FollowSource::Etcd(config)),
            (None, None) => Err(
                "a router follows a control plane (--control URL --api-key KEY) or etcd \
                 (--store etcd://HOST:PORT[/prefix]); a redb store belongs to one \
                 `switchyard serve` or `switchyard control` process"
                    .into(),
            ),
        }
    }
}

/// Logplex's listeners, in `serve` and `logplex`.
#[derive(Debug, Args)]
pub struct LogListenArgs {
    /// Logplex HTTP listener (`POST /logs`, log-session streams).
    #[arg(
        long,
        env = "SWITCHYARD_LOGPLEX_HTTP",
        default_value = "127.0.0.1:8601", value_parser = parse_addr)]
    pub logplex_http: SocketAddr,
    /// Syslog TCP and UDP listener.
    #[arg(long, env = "SWITCHYARD_SYSLOG", default_value = "127.0.0.1:6001", value_parser = parse_addr)]
    pub syslog: SocketAddr,
    /// Syslog TLS listener.
    #[arg(long, env = "SWITCHYARD_SYSLOG_TLS", default_value = "127.0.0.1:6514", value_parser = parse_addr)]
    pub syslog_tls: SocketAddr,
    /// Seconds a syslog TCP or TLS connection may send nothing before it is
    /// closed (Logplex closes idle connections after 240 s).
    #[arg(long, env = "SWITCHYARD_SYSLOG_IDLE_TIMEOUT", default_value_t = 240, value_parser = clap::value_parser!(u64).range(1..))]
    pub syslog_idle_timeout: u64,
    /// Most milliseconds a router line waits to join a batch before live
    /// tails and drains are handed it. A batch is handed on sooner once it
    /// holds 256 lines, so under load this changes nothing; under light
    /// load a longer wait means fewer, larger batches and less CPU a line.
    #[arg(long, env = "SWITCHYARD_LOG_LINGER_MS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub log_linger_ms: u64,
}

/// Flags of `switchyard logplex`.
#[derive(Debug, Args)]
pub struct LogplexArgs {
    /// Logplex's listeners.
    #[command(flatten)]
    pub logs: LogListenArgs,
    /// Admin listener (`/metrics`, `/healthz`, `/readyz`).
    #[arg(long, env = "SWITCHYARD_ADMIN", default_value = "127.0.0.1:9464", value_parser = parse_addr)]
    pub admin: SocketAddr,
    /// Data directory: the generated syslog TLS certificate.
    #[arg(long, env = "SWITCHYARD_DATA_DIR", default_value = "./.switchyard")]
    pub data_dir: PathBuf,
    /// The name the generated certificate is issued for.
    #[arg(long, env = "SWITCHYARD_BASE_DOMAIN", default_value = "localhost", value_parser = parse_domain)]
    pub base_domain: String,
    /// The syslog address other nodes and routers reach this node on
    /// (`HOST:PORT`). When given, the node registers in etcd under
    /// `<prefix>/members/logplex/<HOST:PORT>` on a lease of
    /// `--member-ttl`, and leaves on SIGTERM.
    #[arg(long, env = "SWITCHYARD_ADVERTISE", value_parser = parse_advertise)]
    pub advertise: Option<String>,
    /// The syslog TLS address others reach this node on (`HOST:PORT`,
    /// with `--advertise`): routers started with `--logplex-tls` send
    /// there.
    #[arg(long, env = "SWITCHYARD_ADVERTISE_TLS", value_parser = parse_advertise, requires = "advertise")]
    pub advertise_tls: Option<String>,
    /// Seconds the membership lease outlives this process's last
    /// keep-alive (kept alive every third of it).
    #[arg(long, env = "SWITCHYARD_MEMBER_TTL", default_value_t = 5, value_parser = clap::value_parser!(u64).range(2..=60))]
    pub member_ttl: u64,
    /// Where the configuration lives: `etcd://…` (a process without an
    /// API has no way to write a redb store of its own).
    #[command(flatten)]
    pub store: StoreArgs,
    /// The syslog TLS certificate.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// The API key the control nodes share: log sessions they sign for
    /// this node (`heroku logs` through a control node running apart) open
    /// here. Without it, only sessions made in this process open.
    #[arg(long, env = "SWITCHYARD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("expected IP:PORT, e.g. 127.0.0.1:8080, got {s:?}"))
}

fn parse_advertise(s: &str) -> Result<String, String> {
    let s = s.trim();
    match s.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty()
                && !host.contains('/')
                && port.parse::<u16>().is_ok_and(|p| p != 0) =>
        {
            Ok(s.to_string())
        }
        _ => Err(format!(
            "expected HOST:PORT others can reach, e.g. 10.0.0.7:6001, got {s:?}"
        )),
    }
}

fn parse_domain(s: &str) -> Result<String, String> {
    let d = s.trim().trim_matches('.').to_ascii_lowercase();
    let ok = !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(d)
    } else {
        Err(format!(
            "{s:?} is not a domain name (expected e.g. localhost or apps.example.com)"
        ))
    }
}

fn parse_url(s: &str) -> Result<String, String> {
    match url::Url::parse(s) {
        Ok(u) if u.scheme() == "http" && u.host_str().is_some() => {
            Ok(s.trim_end_matches('/').to_string())
        }
        _ => Err(format!(
            "{s:?} is not an http:// URL (expected e.g. http://127.0.0.1:5000)"
        )),
    }
}

fn parse_directory(s: &str) -> Result<String, String> {
    match url::Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "https" | "http") && u.host_str().is_some() => {
            Ok(s.to_string())
        }
        _ => Err(format!(
            "{s:?} is not an ACME directory URL (expected e.g. https://localhost:14000/dir)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("switchyard").chain(args.iter().copied()))
    }

    #[test]
    fn serve_defaults_match_the_design() {
        let Command::Serve(s) = parse(&["serve"]).expect("parses").command else {
            panic!("not serve")
        };
        assert_eq!(s.http.to_string(), "127.0.0.1:8080");
        assert_eq!(s.api.to_string(), "127.0.0.1:5000");
        assert_eq!(s.logs.logplex_http.to_string(), "127.0.0.1:8601");
        assert_eq!(s.logs.syslog.to_string(), "127.0.0.1:6001");
        assert_eq!(s.logs.syslog_idle_timeout, 240);
        assert_eq!(s.logs.log_linger_ms, 10);
        assert_eq!(s.base_domain, "localhost");
        let err = parse(&["serve", "--log-linger-ms", "0"])
            .expect_err("a batch must be allowed to wait")
            .to_string();
        assert!(err.contains("--log-linger-ms"), "{err}");
    }

    #[test]
    fn logplex_defaults_match_serve_and_take_etcd() {
        let Command::Logplex(l) = parse(&["logplex", "--store", "etcd://10.0.0.1:2379/edge"])
            .expect("parses")
            .command
        else {
            panic!("not logplex")
        };
        assert_eq!(l.logs.logplex_http.to_string(), "127.0.0.1:8601");
        assert_eq!(l.logs.syslog.to_string(), "127.0.0.1:6001");
        assert_eq!(l.logs.syslog_tls.to_string(), "127.0.0.1:6514");
        assert_eq!(l.admin.to_string(), "127.0.0.1:9464");
        assert_eq!(l.logs.syslog_idle_timeout, 240);
        assert_eq!(l.store.etcd().expect("etcd").prefix, "/edge");
        let Command::Logplex(l) = parse(&["logplex"]).expect("parses").command else {
            panic!("not logplex")
        };
        assert!(
            l.store.etcd().is_none(),
            "redb by default: refused when run"
        );
        assert_eq!((l.advertise, l.member_ttl), (None, 5));
        let err = parse(&["logplex", "--advertise", "nowhere"])
            .expect_err("bad advertise")
            .to_string();
        assert!(err.contains("--advertise"), "{err}");
        let err = parse(&["logplex", "--member-ttl", "1"])
            .expect_err("below etcd's shortest lease")
            .to_string();
        assert!(err.contains("--member-ttl"), "{err}");
    }

    #[test]
    fn bad_values_name_the_flag() {
        let err = parse(&["serve", "--http", "nope"])
            .expect_err("bad address")
            .to_string();
        assert!(err.contains("--http"), "{err}");
        let err = parse(&["router", "--control", "ftp://x", "--api-key", "k"])
            .expect_err("bad url")
            .to_string();
        assert!(err.contains("--control"), "{err}");
        let err = parse(&["serve", "--base-domain", "a..b"])
            .expect_err("bad domain")
            .to_string();
        assert!(err.contains("--base-domain"), "{err}");
        let err = parse(&["control", "--store", "etcd://a"])
            .expect_err("bad store")
            .to_string();
        assert!(err.contains("--store"), "{err}");
        let err = parse(&["serve", "--etcd-user", "u"])
            .expect_err("user without password")
            .to_string();
        assert!(err.contains("--etcd-password"), "{err}");
    }

    #[test]
    fn a_router_advertises_only_on_etcd() {
        let router = |args: &[&str]| match parse(args).expect("parses").command {
            Command::Router(r) => r,
            _ => panic!("not router"),
        };
        let r = router(&[
            "router",
            "--store",
            "etcd://127.0.0.1:2379",
            "--advertise",
            "10.0.0.7:8080",
        ]);
        assert_eq!(r.advertise.as_deref(), Some("10.0.0.7:8080"));
        assert_eq!(
            (r.member_ttl, r.hop_limit, r.forward_max_rate),
            (5, 2, 5000)
        );
        assert!(r.source().is_ok());
        let r = router(&[
            "router",
            "--control",
            "http://c:5000",
            "--api-key",
            "k",
            "--advertise",
            "10.0.0.7:8080",
        ]);
        let err = r.source().expect_err("advertise without etcd");
        assert!(err.contains("--advertise"), "{err}");
        let err = parse(&["router", "--hop-limit", "0"])
            .expect_err("no hop at all")
            .to_string();
        assert!(err.contains("--hop-limit"), "{err}");
    }

    #[test]
    fn acme_defaults_to_lets_encrypt_and_staging_is_a_switch() {
        let Command::Serve(s) = parse(&["serve"]).expect("parses").command else {
            panic!("not serve")
        };
        assert_eq!(
            s.acme.settings(false).directory,
            control::acme::LETS_ENCRYPT
        );
        let Command::Serve(s) = parse(&["serve", "--acme-staging"]).expect("parses").command else {
            panic!("not serve")
        };
        assert_eq!(
            s.acme.settings(false).directory,
            control::acme::LETS_ENCRYPT_STAGING
        );
        let err = parse(&["control", "--acme-directory", "nope"])
            .expect_err("bad url")
            .to_string();
        assert!(err.contains("--acme-directory"), "{err}");
        let err = parse(&["serve", "--acme-attempts", "0"])
            .expect_err("no attempts")
            .to_string();
        assert!(err.contains("--acme-attempts"), "{err}");
    }

    #[test]
    fn the_store_is_redb_unless_etcd_is_named() {
        let Command::Serve(s) = parse(&["serve"]).expect("parses").command else {
            panic!("not serve")
        };
        assert_eq!(s.store.kind, StoreKind::Redb);
        assert!(s.store.etcd().is_none());
        let Command::Control(c) = parse(&[
            "control",
            "--store",
            "etcd://10.0.0.1:2379,10.0.0.2:2379/edge",
            "--etcd-cacert",
            "ca.pem",
            "--etcd-user",
            "sy",
            "--etcd-password",
            "secret",
        ])
        .expect("parses")
        .command
        else {
            panic!("not control")
        };
        let etcd = c.store.etcd().expect("etcd");
        assert_eq!(etcd.endpoints, ["10.0.0.1:2379", "10.0.0.2:2379"]);
        assert_eq!(etcd.prefix, "/edge");
        assert_eq!(etcd.ca_cert, Some(PathBuf::from("ca.pem")));
        assert_eq!(etcd.user, Some(("sy".into(), "secret".into())));
        assert!(
            !format!("{etcd:?} {c:?}").contains("secret"),
            "the password never shows in a debug print"
        );
    }
}
