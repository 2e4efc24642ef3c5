//! Live state that outlives route-table snapshots: per-dyno in-flight counts
//! and quarantine deadlines, and each app's request queue.
//!
//! Everything here is atomics except the queue's waiter list, which is only
//! touched when every dyno is at its concurrency limit (the overload path).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::capacity::Queue;
use crate::pool::Pool;

/// Counters for one dyno, shared by every table that contains it.
#[derive(Debug, Default)]
pub struct DynoLive {
    in_flight: AtomicU32,
    /// Milliseconds on the router clock ([`crate::clock`]) until which the
    /// dyno is skipped; 0 when not quarantined.
    quarantined_until: AtomicU64,
    /// Idle keep-alive connections to the dyno (shared with the task that
    /// reaps them).
    pub pool: Arc<Pool>,
}

impl DynoLive {
    /// Requests currently on this dyno.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Takes a slot unconditionally.
    pub fn acquire(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// Takes a slot if fewer than `limit` are taken. Sequentially
    /// consistent, as is [`DynoLive::release`]: the queue's no-lost-wake-up
    /// rule ([`crate::capacity`]) orders these against its length.
    pub fn try_acquire(&self, limit: u32) -> bool {
        self.in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives a slot back.
    pub fn release(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// Skips this dyno for `period` from now; returns the router-clock
    /// millisecond it ends at. (The request path calls
    /// [`crate::capacity::Slot::quarantine`], which also wakes the queue then.)
    pub fn quarantine(&self, period: Duration) -> u64 {
        let until = (crate::clock::now_ms() + period.as_millis() as u64).max(1);
        self.quarantined_until.store(until, Ordering::Release);
        until
    }

    /// The router-clock millisecond the quarantine ends at, while quarantined.
    pub fn quarantined_until(&self) -> Option<u64> {
        let until = self.quarantined_until.load(Ordering::Acquire);
        (until != 0 && crate::clock::now_ms() < until).then_some(until)
    }

    /// True while quarantined.
    pub fn is_quarantined(&self) -> bool {
        self.quarantined_until().is_some()
    }
}

/// Per-app live state, shared by every table that contains the app.
#[derive(Debug, Default)]
pub struct AppLive {
    /// Requests admitted and not finished (in flight plus queued): the H11 counter.
    pub(crate) admitted: AtomicU32,
    /// Round-robin cursor.
    pub(crate) cursor: AtomicU32,
    /// FIFO of requests waiting for a dyno slot.
    pub(crate) queue: Queue,
    /// Client connections counted against the app: the H22 counter.
    clients: AtomicU32,
    /// Per-request metric handles under the app's current name.
    metrics: arc_swap::ArcSwapOption<crate::metrics::AppMetrics>,
}

impl AppLive {
    /// The app's metric handles for the name `name` (made on first use, and
    /// again after a rename).
    pub fn metrics(&self, name: &Arc<str>) -> Arc<crate::metrics::AppMetrics> {
        if let Some(m) = self.metrics.load_full() {
            if m.name() == name {
                return m;
            }
        }
        let m = Arc::new(crate::metrics::AppMetrics::new(name.clone()));
        self.metrics.store(Some(m.clone()));
        m
    }

    /// Requests admitted for this app (in flight plus queued).
    pub fn admitted(&self) -> u32 {
        self.admitted.load(Ordering::Relaxed)
    }

    /// Requests waiting in the app's queue.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Client connections counted against the app right now.
    pub fn clients(&self) -> u32 {
        self.clients.load(Ordering::Relaxed)
    }

    /// Counts one more client connection, unless `limit` are already
    /// counted (`None`: no limit). The count is released when the returned
    /// guard drops.
    pub fn open_client(self: &Arc<Self>, limit: Option<u32>) -> Option<ClientConn> {
        let limit = limit.unwrap_or(u32::MAX);
        self.clients
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()?;
        Some(ClientConn(self.clone()))
    }
}

/// One client connection counted against an app (H22) until dropped.
#[derive(Debug)]
pub struct ClientConn(Arc<AppLive>);

impl Drop for ClientConn {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::AcqRel);
    }
}
