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

/// The tokio instant at router-clock millisecond `ms`.
pub fn instant_at(ms: u64) -> Instant {
    let base = *BASE.get_or_init(Instant::now);
    base + std::time::Duration::from_millis(ms.saturating_sub(1))
}

/// Milliseconds since the Unix epoch (wall clock), for `X-Request-Start`.
pub fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
