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
            .enqueue(app_id, "heroku", "router", line, ended.into_std());
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

    fn create_session(&self, app_id: &str, p: control::SessionParams) -> Option<String> {
        let id = self.logplex.create_session(
            app_id,
            logplex::SessionParams {
                lines: p.lines,
                tail: p.tail,
                source: p.source,
                dyno: p.dyno,
            },
        )?;
        Some(format!("http://{}/sessions/{}", self.http, id))
    }
}
