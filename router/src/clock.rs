//! The router's monotonic millisecond clock, on tokio's time so tests can
//! pause and advance it.

use std::sync::OnceLock;

use tokio::time::Instant;

static BASE: OnceLock<Instant> = OnceLock::new();

/// Milliseconds since the first call (never 0, so 0 can mean "unset").
pub fn now_ms() -> u64 {
    ms_at(Instant::now())
}

/// The router-clock millisecond of `at`, for a caller that has already
/// read the clock (each read is a `clock_gettime`, about 20 ns).
pub fn ms_at(at: Instant) -> u64 {
    let base = *BASE.get_or_init(|| at);
    at.saturating_duration_since(base).as_millis() as u64 + 1
}

/// The tokio instant at router-clock millisecond `ms`.
pub fn instant_at(ms: u64) -> Instant {
    let base = *BASE.get_or_init(Instant::now);
    base + std::time::Duration::from_millis(ms.saturating_sub(1))
}

/// A timer kept from one request to the next on a client connection.
///
/// Registering a fresh timer with the runtime's timer wheel, and taking
/// it out again when the response comes first, cost about a thousand
/// instructions a request. A timer that is already registered and moved
/// to a later deadline is only marked (the wheel moves it if and when the
/// old deadline comes), and each request's deadline is later than the
/// last one's. HTTP/1 requests on a connection run one at a time and take
/// turns with the one timer; a concurrent HTTP/2 stream that finds it
/// taken makes its own.
#[derive(Debug, Default)]
pub struct TimerSlot(std::sync::Mutex<Option<std::pin::Pin<Box<tokio::time::Sleep>>>>);

impl TimerSlot {
    /// The connection's timer (or a new one), set to fire at `deadline`.
    pub fn take(&self, deadline: Instant) -> std::pin::Pin<Box<tokio::time::Sleep>> {
        let kept = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        match kept {
            Some(mut timer) => {
                timer.as_mut().reset(deadline);
                timer
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        }
    }

    /// Gives a timer back for the next request.
    pub fn put(&self, timer: std::pin::Pin<Box<tokio::time::Sleep>>) {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(timer);
        }
    }
}

/// Milliseconds since the Unix epoch (wall clock), for `X-Request-Start`.
pub fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_kept_timer_fires_at_each_new_deadline_later_or_earlier() {
        let slot = TimerSlot::default();
        let start = Instant::now();
        // A request that got its answer in time leaves the timer armed.
        let timer = slot.take(start + Duration::from_secs(30));
        slot.put(timer);
        // The next one, with a later deadline, fires at its own.
        let mut timer = slot.take(start + Duration::from_secs(40));
        timer.as_mut().await;
        assert_eq!(start.elapsed(), Duration::from_secs(40));
        slot.put(timer);
        // And one with an earlier deadline than an armed timer's.
        let armed = slot.take(Instant::now() + Duration::from_secs(60));
        slot.put(armed);
        let at = Instant::now();
        let mut timer = slot.take(at + Duration::from_secs(5));
        timer.as_mut().await;
        assert_eq!(at.elapsed(), Duration::from_secs(5));
        // Two at once (HTTP/2 streams): the second makes its own.
        let first = slot.take(at + Duration::from_secs(1));
        let second = slot.take(at + Duration::from_secs(2));
        slot.put(first);
        slot.put(second);
        assert!(slot.0.lock().expect("lock").is_some(), "one is kept");
    }
}
