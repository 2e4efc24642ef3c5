//! The inbox: in-process lines from hot paths (the router's worker
//! threads), queued per thread and published in batches.
//!
//! A router line used to take the channel's mutex (shared by every worker),
//! allocate, and wake each tail and drain on the request path. Now
//! [`Inbox::push`] appends the line's bytes to the calling thread's own
//! *lane* (a mutex only that thread and the ingest task ever take; reused
//! buffers, no allocation once warm), and one ingest task publishes every
//! lane's lines in a batch: one channel lock, one wake-up per tail and per
//! drain per batch.
//!
//! When lines go:
//! - the first line into an empty lane wakes the ingest task, which waits
//!   [`LogplexSettings::inbox_linger`] for more and then takes every lane:
//!   a lone line is published within the linger, never left waiting for a
//!   batch to fill;
//! - a lane reaching [`LogplexSettings::inbox_batch_lines`] cuts the wait
//!   short;
//! - [`Logplex::flush`](crate::Logplex::flush) takes every lane at once
//!   (shutdown).
//!
//! Order: a thread's lines keep their order, so an app's lines from one
//! worker reach its channel in the order the requests ended. A lane holds at
//! most [`LogplexSettings::inbox_lane_lines`]; a line past that (the ingest
//! task has fallen that far behind) is not queued but counted, by app, and
//! the count is published in the app's stream as an L10 line with the next
//! batch and kept in [`IngestStats::inbox_dropped`](crate::IngestStats).
//!
//! [`LogplexSettings::inbox_linger`]: crate::LogplexSettings::inbox_linger
//! [`LogplexSettings::inbox_batch_lines`]: crate::LogplexSettings::inbox_batch_lines
//! [`LogplexSettings::inbox_lane_lines`]: crate::LogplexSettings::inbox_lane_lines

use std::cell::RefCell;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

/// One queued line: where its app id and message are in the lane's text.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    app: Range<usize>,
    msg: Range<usize>,
    /// `heroku`, `app`, …
    pub(crate) source: &'static str,
    /// `router`, `web.1`, …
    pub(crate) process: &'static str,
    /// When the line happened (for a router line: when the request ended).
    pub(crate) at: Instant,
    /// The message holds no carriage return or line feed.
    pub(crate) flat: bool,
}

/// A line to queue, as [`Logplex::enqueue`](crate::Logplex::enqueue)
/// takes it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Queued<'a> {
    pub(crate) app_id: &'a str,
    pub(crate) source: &'static str,
    pub(crate) process: &'static str,
    pub(crate) msg: &'a str,
    pub(crate) at: Instant,
    /// `msg` holds no carriage return or line feed.
    pub(crate) flat: bool,
}

impl<'a> Queued<'a> {
    /// A line not known to be flat.
    pub(crate) fn new(
        app_id: &'a str,
        source: &'static str,
        process: &'static str,
        msg: &'a str,
        at: Instant,
    ) -> Self {
        Queued {
            app_id,
            source,
            process,
            msg,
            at,
            flat: false,
        }
    }
}

/// Lines a bound turned away, by app.
#[derive(Debug, Clone)]
pub(crate) struct Dropped {
    pub(crate) app_id: String,
    pub(crate) count: u64,
    pub(crate) since: DateTime<Utc>,
}

/// The lines of one lane, as taken by the ingest task. Its buffers go back
/// and forth between the lane and the ingest task, so they are allocated
/// once and reused.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// Every line's app id and message, back to back.
    text: String,
    entries: Vec<Entry>,
    dropped: Vec<Dropped>,
}

impl Pending {
    /// The queued lines, oldest first, with their app id and message.
    pub(crate) fn lines(&self) -> impl Iterator<Item = (&str, &str, &Entry)> {
        self.entries
            .iter()
            .map(|e| (&self.text[e.app.clone()], &self.text[e.msg.clone()], e))
    }

    /// How many lines are queued.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Lines turned away since the last take.
    pub(crate) fn dropped(&self) -> &[Dropped] {
        &self.dropped
    }

    /// No line queued and none turned away.
    fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.dropped.is_empty()
    }

    fn clear(&mut self) {
        self.text.clear();
        self.entries.clear();
        self.dropped.clear();
    }

    fn drop_line(&mut self, app_id: &str) {
        match self.dropped.iter_mut().find(|d| d.app_id == app_id) {
            Some(d) => d.count += 1,
            None => self.dropped.push(Dropped {
                app_id: app_id.to_string(),
                count: 1,
                since: Utc::now(),
            }),
        }
    }
}

/// One thread's queue. Locked by its thread per line and by the ingest task
/// per batch: never by two worker threads.
#[derive(Debug, Default)]
struct Lane {
    pending: Mutex<Pending>,
}

impl Lane {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // Every critical section leaves the buffers consistent.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Tells inboxes apart in a thread's list of lanes.
static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's lane in each inbox it has written to (usually one).
    static LANES: RefCell<Vec<(usize, Arc<Lane>)>> = const { RefCell::new(Vec::new()) };
}

/// What a lane tells the ingest task.
#[derive(Debug, Default)]
pub(crate) struct Signals {
    /// A lane went from empty to not.
    pub(crate) arrived: Notify,
    /// A lane reached `batch_lines`.
    pub(crate) full: Notify,
}

/// The queues of every thread that writes through this inbox.
#[derive(Debug)]
pub(crate) struct Inbox {
    id: usize,
    /// Every lane, for the ingest task; locked when a thread writes its
    /// first line and once per batch.
    lanes: Mutex<Vec<Arc<Lane>>>,
    /// The buffers a take swaps into a lane; held while a batch is taken
    /// and published, so two takes (the task and a flush) cannot reorder a
    /// lane's lines.
    spare: Mutex<Pending>,
    /// What wakes the ingest task.
    signals: Arc<Signals>,
    batch_lines: usize,
    lane_lines: usize,
}

impl Inbox {
    /// An inbox whose lanes wake the ingest task at `batch_lines` and hold
    /// at most `lane_lines`.
    pub(crate) fn new(batch_lines: usize, lane_lines: usize) -> Self {
        Inbox {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            lanes: Mutex::new(Vec::new()),
            spare: Mutex::new(Pending::default()),
            signals: Arc::default(),
            batch_lines: batch_lines.max(1),
            lane_lines: lane_lines.max(batch_lines).max(1),
        }
    }

    /// What wakes the ingest task, for the task to wait on.
    pub(crate) fn signals(&self) -> Arc<Signals> {
        self.signals.clone()
    }

    /// Queues a line on the calling thread's lane. False if this thread
    /// cannot have a lane (it is exiting): publish the line directly then.
    pub(crate) fn push(&self, line: Queued<'_>) -> bool {
        LANES
            .try_with(|lanes| {
                let Ok(mut lanes) = lanes.try_borrow_mut() else {
                    return false;
                };
                let index = match lanes.iter().position(|(id, _)| *id == self.id) {
                    Some(i) => i,
                    None => {
                        let lane = Arc::new(Lane::default());
                        self.lanes
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(lane.clone());
                        lanes.push((self.id, lane));
                        lanes.len() - 1
                    }
                };
                self.push_on(&lanes[index].1, line);
                true
            })
            .unwrap_or(false)
    }

    fn push_on(&self, lane: &Lane, line: Queued<'_>) {
        let Queued {
            app_id,
            source,
            process,
            msg,
            at,
            flat,
        } = line;
        let mut p = lane.lock();
        let queued = p.entries.len();
        if queued >= self.lane_lines {
            p.drop_line(app_id);
            return;
        }
        let app_at = p.text.len();
        p.text.push_str(app_id);
        let msg_at = p.text.len();
        p.text.push_str(msg);
        let end = p.text.len();
        p.entries.push(Entry {
            app: app_at..msg_at,
            msg: msg_at..end,
            source,
            process,
            at,
            flat,
        });
        drop(p);
        if queued == 0 {
            self.signals.arrived.notify_one();
        }
        if queued + 1 == self.batch_lines {
            self.signals.full.notify_one();
        }
    }

    /// Takes every lane's lines, lane by lane, and hands each lane's to
    /// `publish`. Lanes of threads that have ended are forgotten once
    /// empty.
    pub(crate) fn take(&self, mut publish: impl FnMut(&Pending)) {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        let lanes: Vec<Arc<Lane>> = {
            let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
            // Only the registry holds it: its thread is gone.
            lanes.retain(|l| Arc::strong_count(l) > 1 || !l.lock().is_empty());
            lanes.clone()
        };
        for lane in lanes {
            {
                let mut p = lane.lock();
                if p.is_empty() {
                    continue;
                }
                std::mem::swap(&mut *p, &mut *spare);
            }
            publish(&spare);
            spare.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router_line<'a>(app_id: &'a str, msg: &'a str, at: Instant) -> Queued<'a> {
        Queued::new(app_id, "heroku", "router", msg, at)
    }

    fn taken(inbox: &Inbox) -> Vec<(String, String)> {
        let mut out = Vec::new();
        inbox.take(|p| {
            out.extend(
                p.lines()
                    .map(|(app, msg, _)| (app.to_string(), msg.to_string())),
            )
        });
        out
    }

    #[test]
    fn a_lane_keeps_its_order_and_its_buffers() {
        let inbox = Inbox::new(4, 8);
        let now = Instant::now();
        for i in 0..3 {
            assert!(inbox.push(router_line("app-a", &format!("line {i}"), now)));
        }
        assert_eq!(
            taken(&inbox),
            [
                ("app-a".to_string(), "line 0".to_string()),
                ("app-a".to_string(), "line 1".to_string()),
                ("app-a".to_string(), "line 2".to_string()),
            ]
        );
        assert!(taken(&inbox).is_empty(), "taken once");
    }

    #[test]
    fn past_the_bound_lines_are_counted_by_app() {
        let inbox = Inbox::new(2, 3);
        let now = Instant::now();
        for i in 0..5 {
            inbox.push(router_line("app-a", &format!("a{i}"), now));
        }
        inbox.push(router_line("app-b", "b0", now));
        let mut dropped = Vec::new();
        let mut kept = 0;
        inbox.take(|p| {
            kept += p.lines().count();
            dropped.extend(p.dropped().iter().map(|d| (d.app_id.clone(), d.count)));
        });
        assert_eq!(kept, 3);
        assert_eq!(
            dropped,
            [("app-a".to_string(), 2), ("app-b".to_string(), 1)]
        );
    }
}
