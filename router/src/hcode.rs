//! Heroku's router error codes, as one exhaustive enum.
//!
//! Each variant knows the status the client gets, the `desc` text of the log
//! line, the log level (`at=`) and which page the router serves. This is the
//! table users look up when they read `code=H12` in their logs.
//!
//! | code | status | at | desc | when |
//! |---|---|---|---|---|
//! | H10 | 503 | error | App crashed | every web dyno is crashed |
//! | H11 | 503 | error | Backlog too deep | in-flight + queued requests reached the app's bound |
//! | H12 | 503 | error | Request timeout | no first response byte within the request timeout (queue wait included) |
//! | H13 | 503 | error | Connection closed without response | the dyno closed before sending a byte |
//! | H14 | 503 | error | No web processes running | the app has no web dyno that is up or starting |
//! | H15 | 503 | error | Idle connection | the dyno went silent for the idle window mid-response |
//! | H17 | 503 | error | Poorly formatted HTTP response | the dyno's response did not parse |
//! | H18 | 503 | error | Server Request Interrupted | the dyno's socket died mid-response (`sock=backend`) |
//! | H19 | 503 | error | Backend connection timeout | connects timed out on every attempt |
//! | H20 | 503 | error | App boot timeout | no web dyno came up within the boot timeout |
//! | H21 | 503 | error | Backend connection refused | connects were refused on every attempt |
//! | H22 | 503 | error | Connection limit reached | too many client connections for the app |
//! | H24 | — | error | Forced close | the router shut down mid-request |
//! | H25 | 502 | error | HTTP restriction | the dyno's response was unsafe (e.g. conflicting lengths) |
//! | H26 | 400/417 | error | Request Error | the client's request could not be delivered |
//! | H27 | 499 | warning | Client Request Interrupted | the client went away (`sock=client`) |
//! | H28 | 499 | warning | Client Connection Idle | the client went silent for the idle window |
//! | H80 | 503 | info | Maintenance mode | the app is in maintenance |
//! | H99 | 503 | error | Platform error | the router itself failed: every up dyno stayed quarantined, or a request forwarded between routers reached the hop limit (`cause="router hop limit"`) |
//!
//! A forwarding loop gets H99, not a code of its own: it is the platform's
//! fault, never the app's, which is what H99 tells an app owner reading
//! their logs, and tools that know Heroku's codes already treat it so.

use http::StatusCode;

/// `at=` level of a router line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `at=info`.
    Info,
    /// `at=warning`.
    Warning,
    /// `at=error`.
    Error,
}

impl Level {
    /// The `at=` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// Which page the router serves with a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// The application-error page (or the app's `ERROR_PAGE_URL`).
    Error,
    /// The maintenance page (or the app's `MAINTENANCE_PAGE_URL`).
    Maintenance,
    /// A short plain-text reason (client errors).
    Plain,
    /// Nothing: the client is gone or the connection is cut.
    None,
}

/// A Heroku router error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HCode {
    /// App crashed.
    H10,
    /// Backlog too deep.
    H11,
    /// Request timeout.
    H12,
    /// Connection closed without response.
    H13,
    /// No web processes running.
    H14,
    /// Idle connection.
    H15,
    /// Poorly formatted HTTP response.
    H17,
    /// Server Request Interrupted.
    H18,
    /// Backend connection timeout.
    H19,
    /// App boot timeout.
    H20,
    /// Backend connection refused.
    H21,
    /// Connection limit reached.
    H22,
    /// Forced close.
    H24,
    /// HTTP restriction.
    H25,
    /// Request Error (bad request).
    H26,
    /// Client Request Interrupted.
    H27,
    /// Client Connection Idle.
    H28,
    /// Maintenance mode.
    H80,
    /// Platform error: the router itself failed (all up dynos
    /// quarantined; a request past the routers' hop limit, see
    /// [`crate::forward`]).
    H99,
}

impl HCode {
    /// Every code, in order.
    pub const ALL: [HCode; 19] = [
        HCode::H10,
        HCode::H11,
        HCode::H12,
        HCode::H13,
        HCode::H14,
        HCode::H15,
        HCode::H17,
        HCode::H18,
        HCode::H19,
        HCode::H20,
        HCode::H21,
        HCode::H22,
        HCode::H24,
        HCode::H25,
        HCode::H26,
        HCode::H27,
        HCode::H28,
        HCode::H80,
        HCode::H99,
    ];

    /// `H12`.
    pub fn as_str(self) -> &'static str {
        match self {
            HCode::H10 => "H10",
            HCode::H11 => "H11",
            HCode::H12 => "H12",
            HCode::H13 => "H13",
            HCode::H14 => "H14",
            HCode::H15 => "H15",
            HCode::H17 => "H17",
            HCode::H18 => "H18",
            HCode::H19 => "H19",
            HCode::H20 => "H20",
            HCode::H21 => "H21",
            HCode::H22 => "H22",
            HCode::H24 => "H24",
            HCode::H25 => "H25",
            HCode::H26 => "H26",
            HCode::H27 => "H27",
            HCode::H28 => "H28",
            HCode::H80 => "H80",
            HCode::H99 => "H99",
        }
    }

    /// The `desc="…"` text, as Heroku writes it.
    pub fn desc(self) -> &'static str {
        match self {
            HCode::H10 => "App crashed",
            HCode::H11 => "Backlog too deep",
            HCode::H12 => "Request timeout",
            HCode::H13 => "Connection closed without response",
            HCode::H14 => "No web processes running",
            HCode::H15 => "Idle connection",
            HCode::H17 => "Poorly formatted HTTP response",
            HCode::H18 => "Server Request Interrupted",
            HCode::H19 => "Backend connection timeout",
            HCode::H20 => "App boot timeout",
            HCode::H21 => "Backend connection refused",
            HCode::H22 => "Connection limit reached",
            HCode::H24 => "Forced close",
            HCode::H25 => "HTTP restriction",
            HCode::H26 => "Request Error",
            HCode::H27 => "Client Request Interrupted",
            HCode::H28 => "Client Connection Idle",
            HCode::H80 => "Maintenance mode",
            HCode::H99 => "Platform error",
        }
    }

    /// The `at=` level.
    pub fn level(self) -> Level {
        match self {
            HCode::H27 | HCode::H28 => Level::Warning,
            HCode::H80 => Level::Info,
            _ => Level::Error,
        }
    }

    /// The status sent to (or, for 499 and H24, logged for) the client.
    /// H24 has none: the connection is cut.
    pub fn status(self) -> Option<StatusCode> {
        Some(match self {
            HCode::H24 => return None,
            HCode::H25 => StatusCode::BAD_GATEWAY,
            HCode::H26 => StatusCode::BAD_REQUEST,
            HCode::H27 | HCode::H28 => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            _ => StatusCode::SERVICE_UNAVAILABLE,
        })
    }

    /// The page served with the code.
    pub fn page(self) -> Page {
        match self {
            HCode::H80 => Page::Maintenance,
            HCode::H26 => Page::Plain,
            HCode::H24 | HCode::H27 | HCode::H28 => Page::None,
            _ => Page::Error,
        }
    }
}

impl std::fmt::Display for HCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_consistent() {
        for code in HCode::ALL {
            assert_eq!(&code.to_string(), code.as_str());
            assert!(!code.desc().is_empty());
            match code {
                HCode::H24 => assert_eq!(code.status(), None),
                HCode::H27 | HCode::H28 => {
                    assert_eq!(code.status().map(|s| s.as_u16()), Some(499));
                    assert_eq!(code.level(), Level::Warning);
                }
                HCode::H25 => assert_eq!(code.status(), Some(StatusCode::BAD_GATEWAY)),
                HCode::H26 => assert_eq!(code.status(), Some(StatusCode::BAD_REQUEST)),
                _ => assert_eq!(code.status(), Some(StatusCode::SERVICE_UNAVAILABLE)),
            }
        }
        assert_eq!(HCode::H80.level(), Level::Info);
        assert_eq!(HCode::H80.page(), Page::Maintenance);
    }
}
