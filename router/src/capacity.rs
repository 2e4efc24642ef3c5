//! Capacity: per-dyno request slots, the app's FIFO queue and the H11
//! admission bound.
//!
//! A request first counts against its app's in-flight bound ([`Admission`],
//! H11 when full), then takes a [`Slot`] on a dyno with spare concurrency. When
//! every eligible dyno is at `max_dyno_concurrency` it joins the app's FIFO
//! ([`claim`] returns a [`Ticket`]) instead of piling onto a busy dyno.
//!
//! # Dispatch: when a waiter is woken
//! The queue hands a slot to its oldest waiter whenever one may have become
//! free, and this module is the only place that decides it:
//! - a slot is released ([`Slot`]'s `Drop`);
//! - a table is published (`Queue::published`, called by
//!   [`crate::Routes::publish`] for every app and by [`crate::Routes::update`]
//!   for the apps the change names): new dynos, dynos that came up, a raised
//!   limit. The queue remembers the newest app snapshot it was shown, and
//!   every dispatch chooses among *that* snapshot's dynos, so a request queued
//!   before a deploy is served by the new dynos, not the ones it saw;
//! - a quarantine expires ([`Slot::quarantine`] arms a timer for the moment);
//! - a waiter gives up (its [`Ticket`] is dropped: timeout, client gone): it
//!   leaves the deque at once, and a slot handed to it in the meantime goes
//!   on to the next waiter, so an abandoned ticket never holds one.
//!
//! # No lost wake-up
//! When the queue is empty (`len == 0`), taking and giving back a slot are
//! single atomic operations on the dyno's counter: no lock is shared across
//! requests. Everything else happens under the queue's mutex, and `len`
//! mirrors the deque's length. An enqueuer bumps `len` *before* its last
//! attempt to take a slot; a releaser gives its slot back *before* it reads
//! `len` (both sequentially consistent). So either the enqueuer sees the
//! freed slot, or the releaser sees the waiter and dispatches under the lock.
//! A publication records the new snapshot and dispatches under the same lock,
//! so an enqueuer either is in the deque when it dispatches, or sees the new
//! snapshot itself.
//!
//! An update shows the new table only to the queues of the apps it changed:
//! an unchanged app keeps its `Arc<App>` in the new table, so the snapshot
//! its queue holds (`latest`) is still the newest, and nothing can have
//! become free that a release or a quarantine expiry did not already
//! dispatch.
//!
//! Cost: a whole-table publication takes every app's (uncontended) queue
//! lock once; an update only the changed apps' (a one-app change at 100 000
//! apps is visible in well under a millisecond, `examples/table_scale.rs`).
//! The request path measures the same instructions per request as before
//! this module (callgrind, `benches/load/instructions.sh`).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::balance;
use crate::table::{App, Dyno, DynoState};

/// A held request slot on one dyno. Dropping it gives the slot back and, if
/// requests are queued, hands it (or another free one) to the oldest.
#[derive(Debug)]
pub struct Slot {
    /// The snapshot the slot was taken from (its dyno may since have left
    /// the table; the count is given back all the same).
    app: Arc<App>,
    /// The dyno's index in `app.web`.
    index: usize,
    /// False once given back without dispatch (by the queue, under its lock).
    armed: bool,
}

impl Slot {
    /// The dyno holding the slot.
    pub fn dyno(&self) -> &Dyno {
        &self.app.web[self.index]
    }

    /// The app snapshot the slot was taken from.
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Skips this slot's dyno for `period` (a refused or timed-out connect),
    /// and wakes the app's queue the moment the quarantine ends.
    pub fn quarantine(&self, period: Duration) {
        let until = self.dyno().live.quarantine(period);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let app = self.app.clone();
            runtime.spawn(async move {
                tokio::time::sleep_until(crate::clock::instant_at(until)).await;
                if !app.live.queue.is_empty() {
                    app.live.queue.dispatch(&app);
                }
            });
        }
    }

    /// Gives the slot back without dispatching (the queue does this itself
    /// while it holds its lock).
    fn release_quietly(mut self) {
        self.armed = false;
        self.dyno().live.release();
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.armed {
            self.app.web[self.index].live.release();
            let queue = &self.app.live.queue;
            if !queue.is_empty() {
                queue.dispatch(&self.app);
            }
        }
    }
}

/// Takes a slot on an eligible dyno with spare concurrency, per the app's
/// balancing mode. `None` when every eligible dyno is full (or none exists).
/// Does not look at the queue: [`claim`] is the request path's entry.
pub fn try_choose(app: &Arc<App>) -> Option<Slot> {
    balance::choose(app).map(|index| Slot {
        app: app.clone(),
        index,
        armed: true,
    })
}

/// Takes a slot on the dyno named `name` if it is eligible and has spare
/// concurrency (session affinity).
pub fn try_take(app: &Arc<App>, name: &str) -> Option<Slot> {
    balance::take_named(app, name).map(|index| Slot {
        app: app.clone(),
        index,
        armed: true,
    })
}

/// A slot for a request now, on the dyno named `prefer` if it has room,
/// else per the balancing mode; or, when every eligible dyno is full or
/// others already wait, a place at the back of the app's queue.
pub fn claim(app: &Arc<App>, prefer: Option<&str>) -> Result<Slot, Ticket> {
    if app.live.queue.is_empty() {
        if let Some(slot) = prefer.and_then(|name| try_take(app, name)) {
            return Ok(slot);
        }
        if let Some(slot) = try_choose(app) {
            return Ok(slot);
        }
    }
    app.live.queue.enqueue(app)
}

/// The moment the earliest quarantine among the app's up dynos ends, if
/// any is quarantined.
pub fn next_quarantine_end(app: &App) -> Option<tokio::time::Instant> {
    app.web
        .iter()
        .filter(|d| d.state == DynoState::Up)
        .filter_map(|d| d.live.quarantined_until())
        .min()
        .map(crate::clock::instant_at)
}

/// A waiting request.
#[derive(Debug)]
struct Waiter {
    /// Matches its [`Ticket`], which removes it when dropped.
    id: u64,
    /// Where its slot goes; closed once the ticket is dropped.
    tx: oneshot::Sender<Slot>,
}

/// The queue's locked part.
#[derive(Debug, Default)]
struct Waiting {
    /// Oldest first.
    waiters: VecDeque<Waiter>,
    /// The newest published snapshot of the app: dispatch chooses among its
    /// dynos. Weak, because the app owns the queue; dead once the app has
    /// left the table and no request holds that snapshot (then the
    /// caller's snapshot is used).
    latest: Weak<App>,
}

impl Waiting {
    fn current(&self, fallback: &Arc<App>) -> Arc<App> {
        self.latest.upgrade().unwrap_or_else(|| fallback.clone())
    }
}

/// An app's FIFO of requests waiting for a dyno slot.
#[derive(Debug, Default)]
pub struct Queue {
    /// Mirrors `waiting.waiters.len()`, for the lock-free empty check.
    len: AtomicUsize,
    /// Ticket ids, unique per queue.
    next_id: AtomicU64,
    /// The waiters and the newest snapshot; taken only when the queue is
    /// not empty, by publication, and when a quarantine ends.
    waiting: Mutex<Waiting>,
}

impl Queue {
    /// Requests waiting.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::SeqCst)
    }

    /// True when nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Waiting> {
        // Every critical section is a push, pop, removal or pointer store,
        // none of which can leave the deque inconsistent: poison is ignored.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a slot at once if one is free and nobody waits, else joins the
    /// back of the queue.
    fn enqueue(&self, app: &Arc<App>) -> Result<Slot, Ticket> {
        let mut waiting = self.lock();
        self.len.fetch_add(1, Ordering::SeqCst);
        if waiting.waiters.is_empty() {
            if let Some(slot) = try_choose(&waiting.current(app)) {
                self.len.fetch_sub(1, Ordering::SeqCst);
                return Ok(slot);
            }
        }
        let (tx, rx) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let position = waiting.waiters.len();
        waiting.waiters.push_back(Waiter { id, tx });
        Err(Ticket {
            app: app.clone(),
            id,
            position,
            rx,
        })
    }

    /// Records `app` as the newest snapshot of its app and hands any slot its
    /// dynos have free to waiters. Called for every app of a table as it is
    /// published.
    pub(crate) fn published(&self, app: &Arc<App>) {
        let mut waiting = self.lock();
        waiting.latest = Arc::downgrade(app);
        self.dispatch_locked(&mut waiting, app);
    }

    /// Hands free slots to the oldest waiters.
    pub(crate) fn dispatch(&self, fallback: &Arc<App>) {
        let mut waiting = self.lock();
        let app = waiting.current(fallback);
        self.dispatch_locked(&mut waiting, &app);
    }

    fn dispatch_locked(&self, waiting: &mut Waiting, app: &Arc<App>) {
        while !waiting.waiters.is_empty() {
            let Some(mut slot) = try_choose(app) else {
                return;
            };
            loop {
                let Some(w) = waiting.waiters.pop_front() else {
                    // Nobody left to take it.
                    slot.release_quietly();
                    return;
                };
                self.len.fetch_sub(1, Ordering::SeqCst);
                match w.tx.send(slot) {
                    Ok(()) => break,
                    // Its ticket is gone: offer the slot to the next one.
                    Err(back) => slot = back,
                }
            }
        }
    }

    /// Takes ticket `id` out of the deque if it is still there.
    fn remove(&self, id: u64) {
        let mut waiting = self.lock();
        if let Some(i) = waiting.waiters.iter().position(|w| w.id == id) {
            waiting.waiters.remove(i);
            self.len.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// A queued request's place. Await it for the slot; drop it to leave the
/// queue (at once, and a slot already handed to it goes to the next waiter).
#[derive(Debug)]
pub struct Ticket {
    /// The snapshot the request queued on (keeps its queue alive).
    app: Arc<App>,
    /// Its waiter's id in the deque.
    id: u64,
    /// Requests ahead of this one when it joined.
    pub position: usize,
    /// The slot, once dispatched to this ticket.
    rx: oneshot::Receiver<Slot>,
}

impl Ticket {
    /// A slot handed over but not yet awaited (e.g. just as a timer fired).
    pub fn try_take(&mut self) -> Option<Slot> {
        self.rx.try_recv().ok()
    }
}

impl Future for Ticket {
    /// The slot, or `None` if the queue can no longer serve the ticket.
    type Output = Option<Slot>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Slot>> {
        Pin::new(&mut self.rx).poll(cx).map(Result::ok)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.app.live.queue.remove(self.id);
        // Outside the lock: a slot sent before the removal is given back,
        // and its drop dispatches it to the next waiter.
        self.rx.close();
        drop(self.rx.try_recv());
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
        admitted(app)
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Admission { app: app.clone() })
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        admitted(&self.app).fetch_sub(1, Ordering::AcqRel);
    }
}

fn admitted(app: &App) -> &AtomicU32 {
    &app.live.admitted
}

#[cfg(test)]
mod tests;
