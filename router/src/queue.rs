//! The per-app FIFO queue and the H11 admission bound.
//!
//! A request that finds every eligible dyno at its concurrency limit waits
//! here instead of piling onto a busy dyno. The moment a dyno frees a slot,
//! the slot is handed straight to the oldest waiter, so the queue is served
//! in arrival order and no slot is ever idle while someone waits.
//!
//! The queue's waiter list sits behind a mutex, but it is only touched on the
//! overload path: when the queue is empty (`len == 0`), choosing a dyno and
//! giving a slot back are plain atomic operations.
//!
//! Lost wake-ups are impossible because an enqueuer bumps `len` *before* its
//! last attempt to take a slot (under the lock), and a releaser gives its slot
//! back *before* it reads `len`: either the enqueuer sees the freed slot, or
//! the releaser sees the waiter and dispatches under the same lock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::balance::{self, Slot};
use crate::table::App;

/// A waiting request.
#[derive(Debug)]
struct Waiter {
    id: u64,
    tx: oneshot::Sender<Slot>,
}

/// An app's FIFO of requests waiting for a dyno slot.
#[derive(Debug, Default)]
pub struct Queue {
    /// Waiters, plus enqueuers between their reservation and their push.
    len: AtomicUsize,
    next_id: AtomicU64,
    waiters: Mutex<VecDeque<Waiter>>,
}

/// A ticket for a queued request: await the slot, or cancel on timeout.
#[derive(Debug)]
pub struct Ticket {
    id: u64,
    /// Requests ahead of this one when it joined.
    pub position: usize,
    /// Resolves with a slot when a dyno frees one.
    pub rx: oneshot::Receiver<Slot>,
}

impl Queue {
    /// Requests waiting (approximately, while enqueuers are mid-flight).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::SeqCst)
    }

    /// True when nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Waiter>> {
        // A panic while holding this lock cannot leave the deque inconsistent
        // (every critical section is a push, pop or retain), so poison is ignored.
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a slot at once if one is free, else joins the queue.
    pub fn enqueue(&self, app: &Arc<App>) -> Result<Slot, Ticket> {
        let mut waiters = self.lock();
        self.len.fetch_add(1, Ordering::SeqCst);
        if waiters.is_empty() {
            if let Some(slot) = balance::try_choose(app) {
                self.len.fetch_sub(1, Ordering::SeqCst);
                return Ok(slot);
            }
        }
        let (tx, rx) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let position = waiters.len();
        waiters.push_back(Waiter { id, tx });
        Err(Ticket { id, position, rx })
    }

    /// Removes a ticket that gave up (timeout, client gone). A slot already
    /// sent to it is released when the ticket's receiver is dropped.
    pub fn cancel(&self, ticket: &Ticket) {
        let mut waiters = self.lock();
        let before = waiters.len();
        waiters.retain(|w| w.id != ticket.id);
        if waiters.len() < before {
            self.len.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Hands free slots to the oldest waiters. Called after a slot is freed
    /// while `len > 0`.
    pub(crate) fn dispatch(&self, app: &Arc<App>) {
        let mut waiters = self.lock();
        while !waiters.is_empty() {
            let Some(slot) = balance::try_choose(app) else {
                break;
            };
            let mut slot = Some(slot);
            while let Some(w) = waiters.pop_front() {
                self.len.fetch_sub(1, Ordering::SeqCst);
                match slot.take().map(|s| w.tx.send(s)) {
                    Some(Ok(())) => break,
                    // The waiter gave up; offer the slot to the next one.
                    Some(Err(back)) => slot = Some(back),
                    None => break,
                }
            }
            if let Some(unused) = slot {
                unused.release_quietly();
                break;
            }
        }
    }
}

/// A request counted against its app's in-flight bound (the H11 counter);
/// uncounted on drop.
#[derive(Debug)]
pub struct Admission {
    app: Arc<App>,
}

impl Admission {
    /// Counts a request in, unless the app already holds `in_flight_limit`.
    pub fn try_new(app: &Arc<App>) -> Option<Self> {
        let limit = app.in_flight_limit() as u32;
        let admitted = &app.live.admitted;
        admitted
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Admission { app: app.clone() })
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.app.live.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}
