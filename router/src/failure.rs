//! Why a request failed before its dyno's response started: small typed
//! errors, each tagged with the side it came from and whether the router may
//! retry it, and the one function, [`rescue`], that turns a failure into its
//! H-code, status and log fields (linkerd's error "rescue"; Pingora's typed
//! errors with a side and a retry flag).
//!
//! The request path ([`crate::proxy`]) never picks an H-code itself: each of
//! its phases returns a [`Failed`], and the edge maps it here.

use crate::hcode::HCode;
use crate::logline::Sock;

/// Where a failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client: its request, its connection, its pace.
    Client,
    /// The dyno: its connection or its response.
    Dyno,
    /// The router's own state: the app's settings, dynos, limits, shutdown.
    Router,
}

/// A request that could not be carried to a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// The app's cap on client connections is reached.
    TooManyConnections,
    /// The request breaks a limit or a request-smuggling rule (a 4xx
    /// `status`, with `cause` in the log line and the body).
    BadRequest {
        /// The status the client gets.
        status: u16,
        /// What was wrong.
        cause: &'static str,
    },
    /// A chunked request body did not parse.
    BadChunk,
    /// The request body passed the app's size limit.
    BodyTooLarge,
    /// The app is in maintenance mode.
    Maintenance,
    /// In-flight plus queued requests reached the app's bound.
    QueueFull,
    /// The app has no web dyno that is up or starting.
    NoWebDynos,
    /// Every web dyno is crashed.
    AllCrashed,
    /// No web dyno came up within the boot timeout.
    BootTimeout,
    /// Every up dyno stayed quarantined for the boot timeout.
    Quarantined,
    /// No dyno slot came free within the request timeout.
    QueueTimeout,
    /// The router shut down (grace over) before the response started.
    ShuttingDown,
    /// Connecting to the dyno took longer than the connect timeout.
    ConnectTimeout,
    /// The dyno refused or reset the connection.
    ConnectRefused,
    /// No first response byte within the request timeout.
    FirstByteTimeout,
    /// The client stopped sending its body for the idle window.
    ClientIdle,
    /// The client went away before the response started.
    ClientGone,
    /// The dyno closed the connection without a response.
    BackendClosed,
    /// The dyno's response did not parse.
    BadResponse,
    /// The dyno's response parsed but is unsafe to pass on (conflicting or
    /// invalid lengths, an oversized head).
    UnsafeResponse,
    /// The request was forwarded between routers as many times as the hop
    /// limit allows and this router would forward it again (their views of
    /// who owns the app disagree; [`crate::forward`]).
    HopLimit,
}

impl Failed {
    /// Where it came from.
    pub fn side(self) -> Side {
        use Failed::*;
        match self {
            TooManyConnections
            | BadRequest { .. }
            | BadChunk
            | BodyTooLarge
            | ClientIdle
            | ClientGone => Side::Client,
            ConnectTimeout | ConnectRefused | FirstByteTimeout | BackendClosed | BadResponse
            | UnsafeResponse => Side::Dyno,
            Maintenance | QueueFull | NoWebDynos | AllCrashed | BootTimeout | Quarantined
            | QueueTimeout | ShuttingDown | HopLimit => Side::Router,
        }
    }

    /// True when another dyno may be tried: only connection set-up is ever
    /// retried, because nothing of the request has been sent yet.
    pub fn retryable(self) -> bool {
        matches!(self, Failed::ConnectTimeout | Failed::ConnectRefused)
    }

    /// The failure behind a dyno-side error from hyper before any response
    /// byte (the client's own faults are told apart by the request body).
    pub fn from_dyno_error(e: &crate::upstream::Error) -> Failed {
        use crate::upstream::{codec::Malformed, Error};
        match e {
            Error::Malformed(Malformed::Unsafe(_)) => Failed::UnsafeResponse,
            Error::Malformed(Malformed::Head(_)) => Failed::BadResponse,
            Error::Closed(_) | Error::Body(_) => Failed::BackendClosed,
        }
    }
}

/// What the router does about a failure: log it with `code`, answer
/// `status` (none when the connection is cut), mark the side that broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rescue {
    /// The H-code of the log line (and the page served).
    pub code: HCode,
    /// The status sent and logged; `None` when none is sent.
    pub status: Option<u16>,
    /// `sock=` in the log line.
    pub sock: Option<Sock>,
    /// Why, for client errors (log line and plain body).
    pub cause: Option<&'static str>,
    /// Close the client's HTTP/1 connection after answering: what is left
    /// of it cannot be trusted to be the next request.
    pub close: bool,
}

/// Maps a failure to its H-code and what goes with it. The only place an
/// H-code is chosen for a request that got no response from its dyno.
pub fn rescue(failed: Failed) -> Rescue {
    use Failed::*;
    let code = match failed {
        TooManyConnections => HCode::H22,
        BadRequest { .. } | BadChunk | BodyTooLarge => HCode::H26,
        Maintenance => HCode::H80,
        QueueFull => HCode::H11,
        NoWebDynos => HCode::H14,
        AllCrashed => HCode::H10,
        BootTimeout => HCode::H20,
        Quarantined => HCode::H99,
        QueueTimeout | FirstByteTimeout => HCode::H12,
        ShuttingDown => HCode::H24,
        ConnectTimeout => HCode::H19,
        ConnectRefused => HCode::H21,
        ClientIdle => HCode::H28,
        ClientGone => HCode::H27,
        BackendClosed => HCode::H13,
        BadResponse => HCode::H17,
        UnsafeResponse => HCode::H25,
        HopLimit => HCode::H99,
    };
    let status = match failed {
        BadRequest { status, .. } => Some(status),
        BodyTooLarge => Some(413),
        ShuttingDown => None,
        _ => code.status().map(|s| s.as_u16()),
    };
    let cause = match failed {
        BadRequest { cause, .. } => Some(cause),
        BadChunk => Some("bad chunk"),
        BodyTooLarge => Some("request body too large"),
        HopLimit => Some("router hop limit"),
        _ => None,
    };
    Rescue {
        code,
        status,
        sock: (failed == ClientGone).then_some(Sock::Client),
        cause,
        close: matches!(failed, TooManyConnections | BadRequest { .. }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connection_set_up_is_retried_and_it_is_the_dyno_side() {
        for f in [Failed::ConnectTimeout, Failed::ConnectRefused] {
            assert!(f.retryable());
            assert_eq!(f.side(), Side::Dyno);
        }
        assert!(!Failed::FirstByteTimeout.retryable());
        assert!(!Failed::BackendClosed.retryable());
        assert_eq!(Failed::ClientGone.side(), Side::Client);
        assert_eq!(Failed::QueueFull.side(), Side::Router);
    }

    #[test]
    fn rescue_picks_status_sock_cause_and_close() {
        let bad = rescue(Failed::BadRequest {
            status: 417,
            cause: "bad expect",
        });
        assert_eq!(
            (bad.code, bad.status, bad.cause, bad.close),
            (HCode::H26, Some(417), Some("bad expect"), true)
        );
        let big = rescue(Failed::BodyTooLarge);
        assert_eq!(
            (big.code, big.status, big.close),
            (HCode::H26, Some(413), false)
        );
        let gone = rescue(Failed::ClientGone);
        assert_eq!((gone.code, gone.sock), (HCode::H27, Some(Sock::Client)));
        assert_eq!(rescue(Failed::ShuttingDown).status, None);
        assert_eq!(rescue(Failed::UnsafeResponse).status, Some(502));
        assert!(rescue(Failed::TooManyConnections).close);
    }
}
