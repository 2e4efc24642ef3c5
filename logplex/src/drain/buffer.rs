//! A drain's bounded buffer and its exact loss accounting.
//!
//! # Accounting rules
//!
//! Every line the channel hands a drain is **accepted**, and from then on is
//! in exactly one place:
//!
//! - **buffered**: waiting in the buffer;
//! - **in flight**: taken by the drain's sender in a batch, not yet settled;
//! - **delivered**: the batch was written to the syslog connection (the
//!   write and flush returned) or the HTTPS endpoint answered 2xx;
//! - **dropped**: pushed out of a full buffer (drop-oldest), refused by the
//!   endpoint (HTTPS 4xx other than 429), abandoned after the last retry, or
//!   still buffered or in flight when the drain was removed.
//!
//! So at every instant `accepted = buffered + in_flight + delivered + dropped`,
//! and once the drain is idle `accepted = delivered + dropped`. Each dropped
//! line is reported once to the drain itself, in an
//! `Error L10 (output buffer overflow): N messages dropped since T.` line
//! prepended to the next batch (the sum of those `N` that were delivered is
//! **reported**; a batch lost with its L10 line puts the count back), and once
//! to the app's own stream (`heroku[logplex]`, naming the drain), at most once
//! per `loss_report_interval`. L10 lines are not themselves accepted lines.
//! Syslog deliveries are at-least-once: a batch whose write failed is sent
//! again on the next connection.
//!
//! Pushing never waits: the channel's ingest path takes the buffer's mutex
//! for a `VecDeque` push and nothing else, so a dead or slow drain cannot
//! slow ingest, tails or another drain.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::message::LogLine;

/// Lines lost and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loss {
    /// How many lines.
    pub count: u64,
    /// When the first of them was lost.
    pub since: DateTime<Utc>,
}

impl Loss {
    fn merge(slot: &mut Option<Loss>, count: u64, since: DateTime<Utc>) {
        if count == 0 {
            return;
        }
        match slot {
            Some(l) => {
                l.count += count;
                l.since = l.since.min(since);
            }
            None => *slot = Some(Loss { count, since }),
        }
    }
}

/// Counters of one drain, a consistent snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Lines accepted.
    pub accepted: u64,
    /// Lines delivered.
    pub delivered: u64,
    /// Lines dropped.
    pub dropped: u64,
    /// Lines waiting in the buffer.
    pub buffered: u64,
    /// Lines taken by the sender, not yet settled.
    pub in_flight: u64,
    /// Sum of the counts of L10 lines delivered to the drain.
    pub reported: u64,
}

/// A batch taken by a drain's sender.
#[derive(Debug)]
pub struct Batch {
    /// The lines, oldest first.
    pub lines: Vec<LogLine>,
    /// Loss to report first, in an L10 line.
    pub loss: Option<Loss>,
}

impl Batch {
    /// At most how many bytes the frames of `l10` and the lines take with
    /// `host` as HOSTNAME: an encoded batch grown line by line from a guess
    /// was reallocated and copied, for small batches once per line.
    pub fn frames_bound(&self, l10: Option<&LogLine>, host: &str) -> usize {
        let lines = self.lines.iter().map(|l| l.frame_len_bound(host));
        l10.map(|l| l.frame_len_bound(host))
            .into_iter()
            .chain(lines)
            .sum()
    }
}

#[derive(Debug, Default)]
struct Inner {
    lines: VecDeque<LogLine>,
    counts: Counts,
    drain_loss: Option<Loss>,
    app_loss: Option<Loss>,
    closed: bool,
}

/// The bounded, drop-oldest buffer between a channel and one drain.
#[derive(Debug)]
pub struct DrainBuffer {
    capacity: usize,
    inner: Mutex<Inner>,
    /// Woken when lines arrive or the buffer closes.
    ready: Notify,
    /// Woken when loss begins (for the app-stream report).
    lossy: Notify,
    /// Woken when the buffer becomes idle (nothing buffered or in flight).
    idle: Notify,
}

impl DrainBuffer {
    /// An empty buffer of `capacity` lines (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
            ready: Notify::new(),
            lossy: Notify::new(),
            idle: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves consistent counters (every
        // update is a few integer writes), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Accepts one line, dropping the oldest if full. Never waits.
    /// Returns how many lines were dropped (0 or 1), or `None` if the buffer
    /// is closed (the line is not accepted).
    pub fn push(&self, line: LogLine) -> Option<u64> {
        self.push_batch(std::slice::from_ref(&line))
    }

    /// Accepts lines in order under one lock, dropping the oldest as the
    /// buffer fills, and wakes the sender once. Never waits. Returns how
    /// many lines were dropped, or `None` if the buffer is closed (no line
    /// is accepted).
    pub fn push_batch(&self, lines: &[LogLine]) -> Option<u64> {
        let mut inner = self.lock();
        if inner.closed {
            return None;
        }
        inner.counts.accepted += lines.len() as u64;
        // Lines that would only push each other out go straight to dropped.
        let skip = lines.len().saturating_sub(self.capacity);
        let keep = &lines[skip..];
        let over = (inner.lines.len() + keep.len()).saturating_sub(self.capacity);
        inner.lines.drain(..over);
        let dropped = (skip + over) as u64;
        if dropped > 0 {
            inner.counts.dropped += dropped;
            let now = Utc::now();
            let first = inner.app_loss.is_none();
            Loss::merge(&mut inner.drain_loss, dropped, now);
            Loss::merge(&mut inner.app_loss, dropped, now);
            if first {
                self.lossy.notify_one();
            }
        }
        inner.lines.extend(keep.iter().cloned());
        inner.counts.buffered = inner.lines.len() as u64;
        drop(inner);
        self.ready.notify_one();
        Some(dropped)
    }

    /// Takes up to `max_bytes` worth of lines (at least one), with pending
    /// loss; `None` if there is nothing to send.
    pub fn take(&self, max_bytes: usize) -> Option<Batch> {
        let mut inner = self.lock();
        if inner.lines.is_empty() && inner.drain_loss.is_none() {
            return None;
        }
        let mut lines = Vec::new();
        let mut bytes = 0;
        while let Some(line) = inner.lines.front() {
            let size = line.msg().len() + 80;
            if !lines.is_empty() && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            if let Some(line) = inner.lines.pop_front() {
                lines.push(line);
            }
        }
        inner.counts.in_flight += lines.len() as u64;
        inner.counts.buffered = inner.lines.len() as u64;
        let loss = inner.drain_loss.take();
        Some(Batch { lines, loss })
    }

    /// Waits until [`take`](Self::take) has something, or the buffer closes
    /// (`None`).
    pub async fn next(&self, max_bytes: usize) -> Option<Batch> {
        loop {
            if self.lock().closed {
                return None;
            }
            if let Some(batch) = self.take(max_bytes) {
                return Some(batch);
            }
            self.ready.notified().await;
        }
    }

    /// The batch reached the drain. False if the buffer was closed in the
    /// meantime (its lines were counted as dropped then).
    pub fn delivered(&self, batch: Batch) -> bool {
        let mut inner = self.lock();
        if inner.closed {
            return false;
        }
        let n = batch.lines.len() as u64;
        inner.counts.in_flight -= n.min(inner.counts.in_flight);
        inner.counts.delivered += n;
        if let Some(loss) = batch.loss {
            inner.counts.reported += loss.count;
        }
        self.settle(&inner);
        true
    }

    /// The batch is given up on: its lines are dropped, and its L10 count
    /// goes back to be reported again. False if the buffer was closed in the
    /// meantime.
    pub fn failed(&self, batch: Batch) -> bool {
        let mut inner = self.lock();
        if inner.closed {
            return false;
        }
        let n = batch.lines.len() as u64;
        inner.counts.in_flight -= n.min(inner.counts.in_flight);
        inner.counts.dropped += n;
        let now = Utc::now();
        if let Some(loss) = batch.loss {
            Loss::merge(&mut inner.drain_loss, loss.count, loss.since);
        }
        Loss::merge(&mut inner.drain_loss, n, now);
        let first = inner.app_loss.is_none();
        Loss::merge(&mut inner.app_loss, n, now);
        if first && n > 0 {
            self.lossy.notify_one();
        }
        drop(inner);
        self.ready.notify_one();
        true
    }

    fn settle(&self, inner: &Inner) {
        if inner.lines.is_empty() && inner.counts.in_flight == 0 && inner.drain_loss.is_none() {
            self.idle.notify_waiters();
        }
    }

    /// Closes the buffer: what is buffered or in flight now counts as
    /// dropped. Returns how many lines that was.
    pub fn close(&self) -> u64 {
        let mut inner = self.lock();
        if inner.closed {
            return 0;
        }
        inner.closed = true;
        let n = inner.lines.len() as u64 + inner.counts.in_flight;
        inner.lines.clear();
        inner.counts.dropped += n;
        inner.counts.buffered = 0;
        inner.counts.in_flight = 0;
        drop(inner);
        self.ready.notify_waiters();
        self.ready.notify_one();
        self.idle.notify_waiters();
        n
    }

    /// Loss not yet told to the app's stream, taken.
    pub fn take_app_loss(&self) -> Option<Loss> {
        self.lock().app_loss.take()
    }

    /// Waits until loss begins.
    pub async fn loss_begins(&self) {
        self.lossy.notified().await;
    }

    /// A consistent snapshot of the counters.
    pub fn counts(&self) -> Counts {
        self.lock().counts
    }

    /// Whether nothing is buffered, in flight or waiting to be reported.
    pub fn is_idle(&self) -> bool {
        let inner = self.lock();
        inner.closed
            || (inner.lines.is_empty() && inner.counts.in_flight == 0 && inner.drain_loss.is_none())
    }

    /// Waits until [`is_idle`](Self::is_idle).
    pub async fn wait_idle(&self) {
        loop {
            let idle = self.idle.notified();
            if self.is_idle() {
                return;
            }
            idle.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::PRI_APP;

    fn line(i: usize) -> LogLine {
        LogLine::now(PRI_APP, "app", "web.1", &format!("line {i}"))
    }

    #[test]
    fn overflow_drops_oldest_and_counts_exactly() {
        let buf = DrainBuffer::new(3);
        for i in 0..10 {
            buf.push(line(i));
        }
        let c = buf.counts();
        assert_eq!((c.accepted, c.dropped, c.buffered), (10, 7, 3));
        let batch = buf.take(1 << 20).unwrap();
        assert_eq!(batch.lines[0].msg(), "line 7");
        assert_eq!(batch.loss.unwrap().count, 7);
        buf.delivered(batch);
        let c = buf.counts();
        assert_eq!((c.delivered, c.reported, c.in_flight), (3, 7, 0));
        assert_eq!(c.accepted, c.delivered + c.dropped);
        assert_eq!(buf.take_app_loss().unwrap().count, 7);
        assert!(buf.is_idle());
    }

    #[test]
    fn a_batch_is_taken_in_order_and_overflow_drops_the_oldest() {
        let buf = DrainBuffer::new(4);
        let first: Vec<_> = (0..3).map(line).collect();
        assert_eq!(buf.push_batch(&first), Some(0));
        // Three more: the two oldest go.
        let second: Vec<_> = (3..6).map(line).collect();
        assert_eq!(buf.push_batch(&second), Some(2));
        // A batch larger than the buffer keeps only its newest lines.
        let third: Vec<_> = (6..12).map(line).collect();
        assert_eq!(buf.push_batch(&third), Some(6));
        let c = buf.counts();
        assert_eq!((c.accepted, c.dropped, c.buffered), (12, 8, 4));
        let batch = buf.take(1 << 20).unwrap();
        let msgs: Vec<_> = batch.lines.iter().map(|l| l.msg().to_string()).collect();
        assert_eq!(msgs, ["line 8", "line 9", "line 10", "line 11"]);
        assert_eq!(batch.loss.unwrap().count, 8);
        buf.close();
        assert_eq!(buf.push_batch(&first), None, "closed: nothing accepted");
    }

    #[test]
    fn failed_batches_are_dropped_and_reported_again() {
        let buf = DrainBuffer::new(2);
        for i in 0..3 {
            buf.push(line(i));
        }
        let batch = buf.take(1 << 20).unwrap();
        assert_eq!(batch.loss.unwrap().count, 1);
        buf.failed(batch);
        let batch = buf.take(1 << 20).unwrap();
        assert!(batch.lines.is_empty());
        assert_eq!(batch.loss.unwrap().count, 3);
        buf.delivered(batch);
        let c = buf.counts();
        assert_eq!(
            (c.accepted, c.delivered, c.dropped, c.reported),
            (3, 0, 3, 3)
        );
    }

    #[test]
    fn close_drops_what_is_left() {
        let buf = DrainBuffer::new(5);
        buf.push(line(0));
        buf.push(line(1));
        let _batch = buf.take(1).unwrap();
        buf.close();
        let c = buf.counts();
        assert_eq!(
            (c.accepted, c.dropped, c.buffered, c.in_flight),
            (2, 2, 0, 0)
        );
    }
}
