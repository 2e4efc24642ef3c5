//! The file-descriptor limit, and the connection caps sized from it.
//!
//! At start the soft `RLIMIT_NOFILE` is raised to the hard limit (any
//! process may; distributions often start services at a soft 1,024 under a
//! hard limit of 500k or more) and both are logged. The connection caps are
//! then cut from what the process may open, so that no one kind of peer can
//! take every descriptor: started at 1,024 with 1,100 silent syslog
//! connections held against it, Switchyard used to run out, and the
//! router, the control API and `/healthz` all stopped answering.
//!
//! The split, of a limit `L`:
//!
//! | share | of | why |
//! |---|---|---|
//! | reserve | `max(L/16, min(256, L/4))` | never capped here: control API and admin connections, drain connections, listeners, the store, the runtime's own descriptors |
//! | syslog TCP + TLS connections | ¼ of the rest, at most 10 000 | one descriptor each |
//! | logplex HTTP connections | ⅛ of the rest, at most 10 000 | one descriptor each (`POST /logs`, session streams) |
//! | router client connections | ⅝ of the rest, halved | one descriptor for the client and one for the dyno-side connection it drives |
//!
//! With `L = 1024`: 256 reserved, 192 syslog, 96 logplex HTTP, 240 router
//! clients. A `router` role has no logplex: its clients get half of all but
//! the reserve. A `logplex` role has no router: syslog gets half of the
//! rest and logplex HTTP a quarter, each at most 10 000.

/// The caps, from [`Budget::serve`] or [`Budget::router`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The soft limit the caps were cut from.
    pub limit: u64,
    /// Descriptors no cap may take.
    pub reserve: u64,
    /// Syslog TCP and TLS connections together.
    pub syslog: usize,
    /// Logplex HTTP connections.
    pub logplex_http: usize,
    /// Router client connections, over every listener and worker.
    pub router_clients: usize,
}

/// The ceiling of each logplex share: what logplex allowed before its caps
/// followed the limit, and a bound on the memory held by idle senders.
const LOGPLEX_CEILING: u64 = 10_000;

fn reserve(limit: u64) -> u64 {
    (limit / 16).max(256.min(limit / 4))
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl Budget {
    /// The caps of `switchyard serve` (router, logplex and control API).
    pub fn serve(limit: u64) -> Budget {
        let reserve = reserve(limit);
        let rest = limit - reserve;
        Budget {
            limit,
            reserve,
            syslog: to_usize((rest / 4).min(LOGPLEX_CEILING)),
            logplex_http: to_usize((rest / 8).min(LOGPLEX_CEILING)),
            router_clients: to_usize(rest / 8 * 5 / 2),
        }
    }

    /// The caps of `switchyard router` (no logplex in the process).
    pub fn router(limit: u64) -> Budget {
        let reserve = reserve(limit);
        Budget {
            limit,
            reserve,
            syslog: 0,
            logplex_http: 0,
            router_clients: to_usize((limit - reserve) / 2),
        }
    }

    /// The caps of `switchyard logplex` (no router in the process).
    pub fn logplex(limit: u64) -> Budget {
        let reserve = reserve(limit);
        let rest = limit - reserve;
        Budget {
            limit,
            reserve,
            syslog: to_usize((rest / 2).min(LOGPLEX_CEILING)),
            logplex_http: to_usize((rest / 4).min(LOGPLEX_CEILING)),
            router_clients: 0,
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, logs both, and
/// returns the soft limit now in force.
pub fn raise() -> u64 {
    use rlimit::Resource;
    let before = match Resource::NOFILE.get() {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the file-descriptor limit; assuming 1024");
            return 1024;
        }
    };
    let (soft_was, hard) = before;
    let soft = match rlimit::increase_nofile_limit(hard) {
        Ok(soft) => soft,
        Err(e) => {
            tracing::warn!(error = %e, soft = soft_was, hard, "cannot raise the soft file-descriptor limit");
            soft_was
        }
    };
    tracing::info!(
        soft,
        hard,
        soft_was,
        "file-descriptor limit (RLIMIT_NOFILE)"
    );
    soft
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_of_1024_leaves_a_quarter_for_the_api_and_healthz() {
        let b = Budget::serve(1024);
        assert_eq!(
            (b.reserve, b.syslog, b.logplex_http, b.router_clients),
            (256, 192, 96, 240)
        );
        let capped = b.syslog + b.logplex_http + 2 * b.router_clients;
        assert_eq!(capped as u64 + b.reserve, 1024);
    }

    #[test]
    fn every_limit_keeps_its_reserve_and_logplex_stays_under_its_ceiling() {
        for limit in [64, 256, 1024, 4096, 20_000, 65_536, 1 << 20, u64::MAX / 2] {
            let b = Budget::serve(limit);
            let capped = b.syslog as u64 + b.logplex_http as u64 + 2 * b.router_clients as u64;
            assert!(capped + b.reserve <= limit, "{b:?}");
            assert!(
                b.reserve >= limit / 16 && b.reserve >= 16.min(limit / 4),
                "{b:?}"
            );
            assert!(b.syslog <= 10_000 && b.logplex_http <= 10_000, "{b:?}");
            assert!(b.router_clients > 0, "{b:?}");
            let r = Budget::router(limit);
            assert!(2 * r.router_clients as u64 + r.reserve <= limit, "{r:?}");
            let l = Budget::logplex(limit);
            assert!(
                (l.syslog + l.logplex_http) as u64 + l.reserve <= limit,
                "{l:?}"
            );
            assert!(l.syslog <= 10_000 && l.logplex_http <= 10_000, "{l:?}");
        }
        assert_eq!(Budget::serve(1 << 20).syslog, 10_000);
    }
}
