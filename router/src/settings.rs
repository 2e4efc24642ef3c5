//! Per-app settings carried in the route table: timers, limits, balancing,
//! maintenance and features. Timers are data: one layer in the proxy enforces
//! them and turns each expiry into its H-code.

use std::time::Duration;

/// Heroku's timers, each configurable per app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// TCP connect to a dyno, per attempt (5 s; H19 when attempts run out).
    pub connect: Duration,
    /// First response byte after the request was fully sent (30 s; H12).
    /// Time spent in the app's queue counts toward it.
    pub first_byte: Duration,
    /// Rolling idle window after the first byte, either direction (55 s;
    /// H15 dyno side, H28 client side).
    pub idle: Duration,
    /// How long a request waits for a starting dyno to come up (75 s; H20).
    pub boot: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(30),
            idle: Duration::from_secs(55),
            boot: Duration::from_secs(75),
        }
    }
}

/// How the router picks among an app's idle-enough web dynos.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// Power of two choices over in-flight counts (exact for few dynos),
    /// with the per-dyno concurrency limit and FIFO queue. The default.
    #[default]
    LeastOutstanding,
    /// Uniformly random, as Heroku routes (for comparison).
    Random,
    /// Rotating, as nginx's default upstream does (for comparison).
    RoundRobin,
}

impl Balance {
    /// API spelling: `least-outstanding`, `random`, `round-robin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::LeastOutstanding => "least-outstanding",
            Balance::Random => "random",
            Balance::RoundRobin => "round-robin",
        }
    }

    /// Parses the API spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "least-outstanding" => Balance::LeastOutstanding,
            "random" => Balance::Random,
            "round-robin" => Balance::RoundRobin,
            _ => return None,
        })
    }
}

/// Request-size limits (Heroku's values by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest request line in bytes (8192).
    pub request_line: usize,
    /// Longest header value in bytes (8192).
    pub header_value: usize,
    /// Longest header name in bytes (1000).
    pub header_name: usize,
    /// Most headers in one request (1000).
    pub headers: usize,
    /// Largest request body in bytes; `None` for no limit (Heroku has none).
    pub max_body: Option<u64>,
    /// Client connections this router keeps open for the app at once; the
    /// next connection's first request gets H22 (503) and is closed. A
    /// connection counts from its first request to the app until it closes.
    /// `None` for no limit. Heroku's threshold is unpublished; the default
    /// (10 000) is a few tens of MiB of router memory per app.
    pub max_client_connections: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_line: 8192,
            header_value: 8192,
            header_name: 1000,
            headers: 1000,
            max_body: None,
            max_client_connections: Some(10_000),
        }
    }
}

/// Everything the router needs to know about an app besides its dynos.
#[derive(Debug, Clone, PartialEq)]
pub struct AppSettings {
    /// Timers (Heroku's defaults).
    pub timers: Timers,
    /// Requests one dyno may hold at once before new ones queue (50).
    pub max_dyno_concurrency: u32,
    /// In-flight plus queued bound (H11 beyond); `None` = 200 × web dynos.
    pub max_in_flight: Option<u32>,
    /// Balancing mode.
    pub balance: Balance,
    /// Maintenance mode: every request gets H80 and the maintenance page.
    pub maintenance: bool,
    /// `http-session-affinity` feature.
    pub session_affinity: bool,
    /// Custom error page (`ERROR_PAGE_URL`).
    pub error_page_url: Option<String>,
    /// Custom maintenance page (`MAINTENANCE_PAGE_URL`).
    pub maintenance_page_url: Option<String>,
    /// Redirect plain-HTTP requests to HTTPS (308).
    pub force_https: bool,
    /// `Strict-Transport-Security` max-age in seconds for HTTPS responses.
    pub hsts_max_age: Option<u64>,
    /// Request-size limits.
    pub limits: Limits,
}

impl Default for AppSettings {
    fn default() -> Self {
        AppSettings {
            timers: Timers::default(),
            max_dyno_concurrency: 50,
            max_in_flight: None,
            balance: Balance::default(),
            maintenance: false,
            session_affinity: false,
            error_page_url: None,
            maintenance_page_url: None,
            force_https: false,
            hsts_max_age: None,
            limits: Limits::default(),
        }
    }
}
