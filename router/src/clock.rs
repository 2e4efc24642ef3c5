//! The router's monotonic millisecond clock, on tokio's time so tests can
//! pause and advance it.

use std::sync::OnceLock;

use tokio::time::Instant;

static BASE: OnceLock<Instant> = OnceLock::new();

/// Milliseconds since the first call (never 0, so 0 can mean "unset").
pub fn now_ms() -> u64 {
    let base = *BASE.get_or_init(Instant::now);
    Instant::now().saturating_duration_since(base).as_millis() as u64 + 1
}
