//! Adapters between the crates: the router's log sink and the control
//! plane's log backend, both over the in-process logplex.

use std::net::SocketAddr;
use std::sync::Arc;

/// Router lines go into the app's channel as `heroku[router]`.
pub struct RouterToLogplex(pub Arc<logplex::Logplex>);

impl router::LogSink for RouterToLogplex {
    fn router_line(&self, app_id: &str, line: &str) {
        self.router_line_at(app_id, line, tokio::time::Instant::now());
    }

    /// Queued on the worker's own lane and published with its next batch
    /// (`logplex::inbox`), stamped with the time the request ended.
    fn router_line_at(&self, app_id: &str, line: &str, ended: tokio::time::Instant) {
        self.0
            .enqueue_flat(app_id, "heroku", "router", line, ended.into_std());
    }
}

/// Router lines of a router running apart, shipped to the log router that
/// owns each app's channel ([`logplex::ship`]).
pub struct RouterToShipper(pub Arc<logplex::Shipper>);

impl router::LogSink for RouterToShipper {
    fn router_line(&self, app_id: &str, line: &str) {
        self.router_line_at(app_id, line, tokio::time::Instant::now());
    }

    /// Queued on the worker's own lane, stamped with the time the request
    /// ended.
    fn router_line_at(&self, app_id: &str, line: &str, ended: tokio::time::Instant) {
        self.0.enqueue(app_id, line, ended.into_std());
    }
}

/// Where a router apart ships an app's lines: with the app's `heroku`
/// token from the route table, to `--logplex-syslog` when given, else to
/// the owner of the app's channel among the live log routers in etcd
/// (rendezvous over `control::members`, kind `logplex`, each advertising
/// its syslog TCP address, and its TLS one with `--advertise-tls`). An
/// owner without the address asked for has none: its apps' lines are
/// counted dropped.
pub struct ShipDirectory {
    /// The table the router serves (its apps carry their tokens).
    pub routes: Arc<router::Routes>,
    /// `--logplex-syslog`: one log router for every app.
    pub fixed: Option<Arc<str>>,
    /// The live log routers, once etcd has answered.
    pub members: Arc<std::sync::OnceLock<control::members::MemberWatch>>,
    /// Which of a member's addresses to send to: `syslog`, or
    /// `syslog-tls` with `--logplex-tls`.
    pub address: &'static str,
}

impl logplex::Directory for ShipDirectory {
    fn token(&self, app_id: &str) -> Option<Arc<str>> {
        let table = self.routes.load();
        let app = table.app_by_id(app_id)?;
        app.log_token.as_ref().map(|t| t.expose().clone())
    }

    fn destination(&self, app_id: &str) -> Option<Arc<str>> {
        if let Some(fixed) = &self.fixed {
            return Some(fixed.clone());
        }
        let members = self.members.get()?.current();
        let owner = members.owner(app_id)?;
        owner
            .info
            .addresses
            .get(self.address)
            .map(|a| a.as_str().into())
    }
}

/// Router lines of a router running alone: to our own log at debug level.
pub struct RouterToTracing;

impl router::LogSink for RouterToTracing {
    fn router_line(&self, app_id: &str, line: &str) {
        tracing::debug!(app_id, "{line}");
    }
}

/// The control plane's view of logplex; session URLs point at the logplex
/// HTTP listener this process bound.
pub struct ControlToLogplex {
    /// The log router.
    pub logplex: Arc<logplex::Logplex>,
    /// Where `GET /sessions/{id}` is served.
    pub http: SocketAddr,
}

impl control::LogBackend for ControlToLogplex {
    fn configure(&self, config: logplex::LogplexConfig) {
        self.logplex.configure(config);
    }

    fn emit(&self, app_id: &str, source: &str, process: &str, message: &str) {
        self.logplex.emit(app_id, source, process, message);
    }

    fn create_session(&self, app_id: &str, p: control::SessionParams) -> Result<String, String> {
        let id = self
            .logplex
            .create_session(
                app_id,
                logplex::SessionParams {
                    lines: p.lines,
                    tail: p.tail,
                    source: p.source,
                    dyno: p.dyno,
                },
            )
            .ok_or("The app's log channel is not ready yet; try again.")?;
        Ok(format!("http://{}/sessions/{}", self.http, id))
    }
}

/// A control node running apart on etcd: log sessions are signed grants
/// ([`logplex::grant`]) for the live log router that owns the app
/// (rendezvous over the `logplex` members, as routers pick where to send an
/// app's lines), served by that node without it having been told.
pub struct ClusterLogs {
    /// The live log routers.
    pub members: Arc<control::members::MemberWatch>,
    /// Signs grants; the log routers hold the same key (the shared API key).
    pub key: logplex::GrantKey,
    /// How long a grant may wait for its first `GET`.
    pub ttl: std::time::Duration,
    /// Ships this node's `heroku[api]` lines to the log router that owns
    /// each app (the routers' shipper, with [`ControlDirectory`]).
    pub shipper: Arc<logplex::Shipper>,
}

/// Where a control node's `heroku[api]` lines go: the app's `heroku`
/// token from the node's own copy of the store, and the log router that
/// owns the app among the live members.
pub struct ControlDirectory {
    /// The control plane, once open (the log backend is made before it).
    pub control: Arc<std::sync::OnceLock<std::sync::Weak<control::Control>>>,
    /// The live log routers.
    pub members: Arc<control::members::MemberWatch>,
}

impl logplex::Directory for ControlDirectory {
    fn token(&self, app_id: &str) -> Option<Arc<str>> {
        let control = self.control.get()?.upgrade()?;
        let state = control.read();
        state
            .list::<control::model::TokenRecord>(&control::model::key::under("tokens", app_id))
            .into_iter()
            .find(|t| t.name == control::publish::PLATFORM_TOKEN)
            .map(|t| t.token.into())
    }

    fn destination(&self, app_id: &str) -> Option<Arc<str>> {
        let members = self.members.current();
        let owner = members.owner(app_id)?;
        owner
            .info
            .addresses
            .get("syslog")
            .map(|a| a.as_str().into())
    }
}

impl control::LogBackend for ClusterLogs {
    /// The log routers read their configuration from the store themselves.
    fn configure(&self, _config: logplex::LogplexConfig) {}

    /// `heroku[api]` lines go to the log router that owns the app, as
    /// router lines do; with none live they are counted as dropped and
    /// reported (L10) once one is (`router_log_lines_dropped_total`). The
    /// audit list, `GET /audit`, keeps every change regardless.
    fn emit(&self, app_id: &str, source: &str, process: &str, message: &str) {
        if source == "heroku" && process == "api" {
            self.shipper
                .enqueue_as(app_id, "api", message, std::time::Instant::now());
        } else {
            tracing::debug!(app_id, source, process, "{message}");
        }
    }

    fn create_session(&self, app_id: &str, p: control::SessionParams) -> Result<String, String> {
        let members = self.members.current();
        let owner = members.owner(app_id).ok_or(
            "No log router is live on this cluster's store: start `switchyard logplex \
             --store … --advertise HOST:PORT` (with the control nodes' API key) and try again.",
        )?;
        let http = owner.info.addresses.get("http").ok_or_else(|| {
            format!(
                "The log router {} that serves this app advertises no HTTP address.",
                owner.id
            )
        })?;
        let params = logplex::SessionParams {
            lines: p.lines,
            tail: p.tail,
            source: p.source,
            dyno: p.dyno,
        };
        let expires = logplex::grant::unix_now() + self.ttl.as_secs();
        Ok(format!(
            "http://{http}/sessions/{}",
            self.key.sign(app_id, &params, expires)
        ))
    }
}

/// The dyno manager running apart (`switchyard dynos`): its dynos' lines go
/// to its own log; it configures no log router.
pub struct DynoLinesToTracing;

impl control::LogBackend for DynoLinesToTracing {
    fn configure(&self, _config: logplex::LogplexConfig) {}

    fn emit(&self, app_id: &str, source: &str, process: &str, message: &str) {
        tracing::info!(app_id, "{source}[{process}]: {message}");
    }

    fn create_session(&self, _app_id: &str, _p: control::SessionParams) -> Result<String, String> {
        Err("The dyno manager serves no log sessions.".into())
    }
}

/// Which log router of the cluster owns each channel, as this node sees it:
/// rendezvous over the live `logplex` members, this node acting as owner
/// only under the fence rule (`control::members`) once it has registered.
/// Before that it is in no live set, so every channel is a peer's (or
/// nobody's).
pub struct ClusterPlacement {
    /// This node's member id (its advertised syslog address).
    me: String,
    /// This node's registration, once made.
    check: std::sync::OnceLock<control::members::OwnerCheck>,
    /// The live log routers.
    members: Arc<control::members::MemberWatch>,
}

impl ClusterPlacement {
    /// A placement over `members` for node `me`, not registered yet.
    pub fn new(me: &str, members: Arc<control::members::MemberWatch>) -> Self {
        ClusterPlacement {
            me: me.to_string(),
            check: std::sync::OnceLock::new(),
            members,
        }
    }

    /// This node is registered (the first call counts).
    pub fn registered(&self, check: control::members::OwnerCheck) {
        let _ = self.check.set(check);
    }

    /// This node's fence while it holds.
    pub fn fence(&self) -> Option<control::members::Fence> {
        self.check.get()?.fence()
    }

    /// The syslog address of the live owner of `app_id` when it is not
    /// this node.
    fn peer_address(&self, app_id: &str) -> Option<Arc<str>> {
        let members = self.members.current();
        let owner = members.owner(app_id).filter(|m| m.id != self.me)?;
        owner
            .info
            .addresses
            .get("syslog")
            .map(|a| a.as_str().into())
    }
}

impl logplex::Placement for ClusterPlacement {
    fn node(&self) -> &str {
        &self.me
    }

    fn owner(&self, app_id: &str) -> logplex::Owner {
        let members = self.members.current();
        match members.owner(app_id) {
            None => logplex::Owner::Nobody,
            Some(m) if m.id == self.me => {
                let acts = self
                    .check
                    .get()
                    .is_some_and(|c| c.acts_as_owner(app_id, &members));
                if acts {
                    logplex::Owner::Here
                } else {
                    logplex::Owner::Nobody
                }
            }
            Some(m) => logplex::Owner::Peer(m.id.clone()),
        }
    }

    fn is_live(&self, id: &str) -> bool {
        self.members.current().get(id).is_some()
    }
}

/// Where a log router forwards the lines of channels a peer owns: that
/// peer's syslog TCP address; loss reports go with the app's `heroku`
/// token.
pub struct PeerDirectory {
    /// Who owns what.
    pub placement: Arc<ClusterPlacement>,
    /// The log router, for tokens.
    pub logplex: std::sync::Weak<logplex::Logplex>,
}

impl logplex::Directory for PeerDirectory {
    fn token(&self, app_id: &str) -> Option<Arc<str>> {
        self.logplex.upgrade()?.platform_token(app_id)
    }

    fn destination(&self, app_id: &str) -> Option<Arc<str>> {
        self.placement.peer_address(app_id)
    }

    fn take_back(&self, _app_id: &str, frame: &str) -> bool {
        self.logplex
            .upgrade()
            .is_some_and(|logplex| logplex.take_back(frame))
    }
}
