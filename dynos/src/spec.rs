//! What a dyno runs, and the timers of its life cycle, as data.

use std::path::PathBuf;
use std::time::Duration;

/// One dyno: `web.1` running `command` in `dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynoSpec {
    /// `web.1`, `worker.2`: also `DYNO` in its environment.
    pub name: String,
    /// The command line, run by `sh -c` as a Procfile's is.
    pub command: String,
    /// Working directory.
    pub dir: PathBuf,
    /// The app's config vars (and anything else to set), in order.
    pub env: Vec<(String, String)>,
    /// `PORT` for a web dyno: it is up once this port accepts connections.
    /// `None` for other process types (up as soon as started).
    pub port: Option<u16>,
}

impl DynoSpec {
    /// The process type: `web` for `web.1`.
    pub fn process_type(&self) -> &str {
        self.name.split('.').next().unwrap_or(&self.name)
    }
}

/// The life-cycle timers (Heroku's by [`Default`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// A web process must bind `PORT` within this of launch (R10).
    pub boot_timeout: Duration,
    /// After SIGTERM, how long before SIGKILL (R12).
    pub stop_grace: Duration,
    /// How often the port is tried while booting.
    pub probe_interval: Duration,
    /// First cool-off after repeated crashes (the first crash restarts at once).
    pub backoff_first: Duration,
    /// The longest cool-off.
    pub backoff_max: Duration,
    /// Up for this long, a dyno's next crash counts as its first again.
    pub backoff_reset: Duration,
    /// Restart every dyno after this long (plus up to 15 % at random),
    /// as Heroku's daily cycling does; `None` never.
    pub cycle: Option<Duration>,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            boot_timeout: Duration::from_secs(60),
            stop_grace: Duration::from_secs(30),
            probe_interval: Duration::from_millis(100),
            backoff_first: Duration::from_secs(20),
            backoff_max: Duration::from_secs(20 * 60),
            backoff_reset: Duration::from_secs(10 * 60),
            cycle: Some(Duration::from_secs(24 * 60 * 60)),
        }
    }
}
