//! Socket activation: listening sockets handed to the process instead of
//! bound by it.
//!
//! systemd (`ListenStream=` with `FileDescriptorName=`), or any parent that
//! follows its protocol, passes `LISTEN_FDS` sockets starting at descriptor 3
//! (`LISTEN_FDS_FIRST_FD` moves the start, as `systemfd` does), named in
//! `LISTEN_FDNAMES` after the role that serves them: `router-http`,
//! `router-https`, `api`, `logplex-http`, `syslog-tcp`, `syslog-tls` or
//! `admin`. A role with a socket of its name serves it and ignores its
//! address flag; the others bind as usual.
//!
//! Why: the socket outlives the process. While Switchyard restarts (an
//! upgrade, a crash, `kill -9`), connections to it wait in the socket's
//! accept queue instead of being refused, and no other process can take
//! the port in between.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Mutex, OnceLock};

/// The roles a socket may be named after.
pub const ROLES: &[&str] = &[
    "router-http",
    "router-https",
    "api",
    "logplex-http",
    "syslog-tcp",
    "syslog-tls",
    "admin",
];

/// Sockets handed over and not yet taken by their role.
static INHERITED: OnceLock<Mutex<HashMap<String, TcpListener>>> = OnceLock::new();

/// Why the handed-over sockets cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ActivationError {
    /// A socket without a name, or more sockets than names.
    #[error("socket {0} passed in LISTEN_FDS has no name in LISTEN_FDNAMES (name each after its role: {roles})", roles = ROLES.join(", "))]
    Unnamed(usize),
    /// A name that is not a role.
    #[error("LISTEN_FDNAMES names a socket {0:?}, which is no role (one of: {roles})", roles = ROLES.join(", "))]
    UnknownRole(String),
    /// Two sockets for one role.
    #[error("LISTEN_FDNAMES names two sockets {0:?}")]
    Duplicate(String),
    /// A descriptor that is not a listening TCP socket.
    #[error("socket {index} ({name}) passed in LISTEN_FDS is not a TCP listener: {error}")]
    NotTcp {
        /// Its position in `LISTEN_FDS`.
        index: usize,
        /// Its name.
        name: String,
        /// What was wrong.
        error: String,
    },
}

/// Which role each of the handed-over sockets belongs to, from
/// `LISTEN_FDNAMES` (colon-separated, one name per socket).
pub fn assign(count: usize, names: Option<&str>) -> Result<Vec<String>, ActivationError> {
    let names: Vec<&str> = names.map(|n| n.split(':').collect()).unwrap_or_default();
    let mut out: Vec<String> = Vec::with_capacity(count);
    for index in 0..count {
        let name = *names
            .get(index)
            .filter(|n| !n.is_empty())
            .ok_or(ActivationError::Unnamed(index))?;
        if !ROLES.contains(&name) {
            return Err(ActivationError::UnknownRole(name.to_string()));
        }
        if out.iter().any(|n| n == name) {
            return Err(ActivationError::Duplicate(name.to_string()));
        }
        out.push(name.to_string());
    }
    Ok(out)
}

/// Takes the sockets the environment hands over. Call once, first thing in
/// `main`, before any thread starts: it clears `LISTEN_FDS` and
/// `LISTEN_PID` so no child process inherits the claim. Returns how many
/// sockets were handed over.
pub fn init() -> Result<usize, ActivationError> {
    let names = std::env::var("LISTEN_FDNAMES").ok();
    let mut fds = listenfd::ListenFd::from_env();
    let roles = assign(fds.len(), names.as_deref())?;
    let mut sockets = HashMap::with_capacity(roles.len());
    for (index, name) in roles.into_iter().enumerate() {
        let listener = match fds.take_tcp_listener(index) {
            Ok(Some(l)) => l,
            Ok(None) => {
                return Err(ActivationError::NotTcp {
                    index,
                    name,
                    error: "already taken".into(),
                })
            }
            Err(e) => {
                return Err(ActivationError::NotTcp {
                    index,
                    name,
                    error: e.to_string(),
                })
            }
        };
        sockets.insert(name, listener);
    }
    let count = sockets.len();
    let _ = INHERITED.set(Mutex::new(sockets));
    Ok(count)
}

/// The socket handed over for `role`, if any (once).
pub fn take(role: &str) -> Option<TcpListener> {
    INHERITED
        .get()?
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(role)
}

/// Roles that were handed a socket this process does not serve.
pub fn unclaimed() -> Vec<String> {
    INHERITED
        .get()
        .map(|m| {
            let mut left: Vec<String> = m
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .keys()
                .cloned()
                .collect();
            left.sort();
            left
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_socket_needs_one_known_role_of_its_own() {
        assert_eq!(assign(0, None), Ok(vec![]));
        assert_eq!(
            assign(2, Some("api:router-http")),
            Ok(vec!["api".to_string(), "router-http".to_string()])
        );
        assert_eq!(assign(1, None), Err(ActivationError::Unnamed(0)));
        assert_eq!(assign(2, Some("api")), Err(ActivationError::Unnamed(1)));
        assert_eq!(assign(1, Some(":api")), Err(ActivationError::Unnamed(0)));
        assert_eq!(
            assign(1, Some("http")),
            Err(ActivationError::UnknownRole("http".into()))
        );
        assert_eq!(
            assign(2, Some("api:api")),
            Err(ActivationError::Duplicate("api".into()))
        );
    }
}
