//! A channel: one app's history, live tails and drains.
//!
//! Publishing a batch takes the channel's mutex once for the history pushes
//! and the tails' queues (each tail's own mutex, its session woken once per
//! batch), then hands the batch to each drain's buffer (its own mutex, one
//! wake-up, never waiting). History snapshot and tail registration happen
//! under the same mutex, so a session sees every line exactly once.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::Utc;

use crate::config::DrainSpec;
use crate::drain::{Drain, DrainBuffer, Loss};
use crate::history::History;
use crate::hub::Owner;
use crate::message::LogLine;
use crate::settings::LogplexSettings;

/// What a tail and its session share: the lines not yet written, the
/// count of lines the tail could not take (L11), and the session's waker.
/// Locked by the channel's publisher once per batch and by the session once
/// per chunk it writes, never by anyone else.
#[derive(Debug, Default)]
struct Queue {
    lines: VecDeque<LogLine>,
    loss: Option<Loss>,
    /// The session's task, woken once per batch that brought it something.
    waker: Option<Waker>,
    /// The session is gone: the channel forgets the tail at its next batch.
    closed: bool,
    /// The channel is gone: the session ends once it has written the rest.
    ended: bool,
}

type Shared = Arc<Mutex<Queue>>;

fn lock(q: &Shared) -> MutexGuard<'_, Queue> {
    // Every critical section leaves the queue consistent.
    q.lock().unwrap_or_else(|e| e.into_inner())
}

/// The session's end of a live tail.
#[derive(Debug)]
pub struct LiveTail {
    queue: Shared,
}

impl LiveTail {
    /// Moves up to `max` waiting lines into `out` and returns the loss to
    /// report after them; `Ready(None)` once the channel is gone and every
    /// line is out; `Pending` (the task woken by the next batch) when there
    /// is nothing.
    pub fn poll_take(
        &self,
        cx: &mut Context<'_>,
        out: &mut Vec<LogLine>,
        max: usize,
    ) -> Poll<Option<Option<Loss>>> {
        let mut q = lock(&self.queue);
        if q.lines.is_empty() && q.loss.is_none() {
            if q.ended {
                return Poll::Ready(None);
            }
            if !q.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                q.waker = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        let n = q.lines.len().min(max);
        out.extend(q.lines.drain(..n));
        // Lines lost while the queue was full come after the ones that made
        // it in before; with lines still waiting, at the end of those.
        let loss = if q.lines.is_empty() {
            q.loss.take()
        } else {
            None
        };
        Poll::Ready(Some(loss))
    }
}

impl Drop for LiveTail {
    fn drop(&mut self) {
        let mut q = lock(&self.queue);
        q.closed = true;
        q.lines.clear();
    }
}

/// A live tail: a bounded queue to one session, with its filters and the
/// count of lines it could not take (reported as L11).
#[derive(Debug)]
pub struct Tail {
    queue: Shared,
    capacity: usize,
    source: Option<String>,
    dyno: Option<String>,
}

impl Tail {
    /// A tail and the session's end of its queue.
    pub fn new(capacity: usize, source: Option<String>, dyno: Option<String>) -> (Tail, LiveTail) {
        let queue = Shared::default();
        (
            Tail {
                queue: queue.clone(),
                capacity: capacity.max(1),
                source,
                dyno,
            },
            LiveTail { queue },
        )
    }

    fn matches(&self, line: &LogLine) -> bool {
        line.matches(self.source.as_deref(), self.dyno.as_deref())
    }

    /// Offers a batch of lines under one lock and wakes the session once;
    /// false when the session is gone. Lines past the queue's capacity are
    /// counted for L11.
    fn offer(&self, lines: &[LogLine]) -> bool {
        let mut q = lock(&self.queue);
        if q.closed {
            return false;
        }
        let mut news = false;
        let mut lost = 0;
        for line in lines.iter().filter(|l| self.matches(l)) {
            if q.lines.len() < self.capacity {
                q.lines.push_back(line.clone());
                news = true;
            } else {
                lost += 1;
            }
        }
        if lost > 0 {
            news = true;
            match q.loss.as_mut() {
                Some(l) => l.count += lost,
                None => {
                    q.loss = Some(Loss {
                        count: lost,
                        since: Utc::now(),
                    })
                }
            }
        }
        let waker = if news { q.waker.take() } else { None };
        drop(q);
        if let Some(w) = waker {
            w.wake();
        }
        true
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let waker = {
            let mut q = lock(&self.queue);
            q.ended = true;
            q.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

#[derive(Debug)]
struct State {
    history: History,
    tails: Vec<Tail>,
}

/// One app's channel.
#[derive(Debug)]
pub struct Channel {
    /// The app's id.
    pub app_id: String,
    name: Mutex<String>,
    state: Mutex<State>,
    drains: ArcSwap<Vec<Arc<Drain>>>,
    /// Who owns the channel in a cluster (see [`crate::hub::Placement`]).
    owner: Mutex<Owner>,
    /// `owner` is another node: ingested lines are forwarded to it.
    forwarding: AtomicBool,
    settings: Arc<LogplexSettings>,
    /// Where drain tasks run when configured from outside a runtime.
    runtime: Option<tokio::runtime::Handle>,
}

impl Channel {
    /// A channel with an empty history and no tails or drains.
    pub fn new(
        app_id: &str,
        name: &str,
        settings: Arc<LogplexSettings>,
        runtime: Option<tokio::runtime::Handle>,
    ) -> Arc<Channel> {
        Arc::new(Channel {
            app_id: app_id.to_string(),
            name: Mutex::new(name.to_string()),
            state: Mutex::new(State {
                history: History::new(settings.history_lines),
                tails: Vec::new(),
            }),
            drains: ArcSwap::from_pointee(Vec::new()),
            owner: Mutex::new(Owner::Unknown),
            forwarding: AtomicBool::new(false),
            settings,
            runtime,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent; a panic in one
        // (not expected) must not take the channel down.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The app's current name.
    pub fn name(&self) -> String {
        self.name.lock().map(|n| n.clone()).unwrap_or_default()
    }

    /// Renames the channel (the app was renamed).
    pub fn set_name(&self, name: &str) {
        if let Ok(mut n) = self.name.lock() {
            name.clone_into(&mut n);
        }
    }

    /// Who owns the channel (in a cluster; [`Owner::Unknown`] otherwise).
    pub fn owner(&self) -> Owner {
        self.owner
            .lock()
            .map(|o| o.clone())
            .unwrap_or(Owner::Unknown)
    }

    pub(crate) fn set_owner(&self, owner: Owner) {
        self.forwarding
            .store(matches!(owner, Owner::Peer(_)), Ordering::Release);
        if let Ok(mut o) = self.owner.lock() {
            *o = owner;
        }
    }

    /// Whether ingested lines go to another node (one atomic load).
    pub fn forwarding(&self) -> bool {
        self.forwarding.load(Ordering::Acquire)
    }

    /// Sends a line to history, tails and drains.
    pub fn publish(&self, line: LogLine) {
        self.publish_batch(std::slice::from_ref(&line));
    }

    /// Sends lines, in order, to history, tails and drains: one lock of
    /// the channel, one wake-up per tail and one buffer lock and wake-up
    /// per drain for the whole batch.
    pub fn publish_batch(&self, lines: &[LogLine]) {
        if lines.is_empty() {
            return;
        }
        self.publish_local_batch(lines);
        for drain in self.drains.load().iter() {
            drain.push_batch(lines);
        }
    }

    /// Sends a line to history and tails only (the app's own stream).
    pub fn publish_local(&self, line: &LogLine) {
        self.publish_local_batch(std::slice::from_ref(line));
    }

    fn publish_local_batch(&self, lines: &[LogLine]) {
        let mut state = self.state();
        for line in lines {
            state.history.push(line.clone());
        }
        state.tails.retain(|t| t.offer(lines));
    }

    /// Recent lines passing the filters and, if `tail`, a new live tail
    /// registered at the same instant.
    pub fn subscribe(
        &self,
        n: usize,
        source: Option<String>,
        dyno: Option<String>,
        tail: bool,
    ) -> (Vec<LogLine>, Option<LiveTail>) {
        let mut state = self.state();
        let recent = state
            .history
            .recent(n, |l| l.matches(source.as_deref(), dyno.as_deref()));
        let live = tail.then(|| {
            let (t, live) = Tail::new(self.settings.tail_buffer_lines, source, dyno);
            state.tails.push(t);
            live
        });
        (recent, live)
    }

    /// The last `n` lines, formatted.
    pub fn recent_text(&self, n: usize) -> Vec<String> {
        self.state()
            .history
            .recent(n, |_| true)
            .iter()
            .map(|l| l.text())
            .collect()
    }

    /// Live tails.
    pub fn tail_count(&self) -> usize {
        self.state().tails.len()
    }

    /// The running drains.
    pub fn drains(&self) -> Arc<Vec<Arc<Drain>>> {
        self.drains.load_full()
    }

    /// Brings the drains in line with `specs`: unchanged drains (same id,
    /// token and URL) keep running with their buffers; others stop (their
    /// buffered lines count as dropped) or start.
    pub fn set_drains(self: &Arc<Self>, specs: &[DrainSpec]) {
        self.set_drains_after(specs, Duration::ZERO);
    }

    /// [`set_drains`](Self::set_drains), the drains it starts connecting
    /// only after `hold` (a channel handed over in a cluster). Held drains
    /// it keeps ([`hold_drains`](Self::hold_drains)) are released, to
    /// connect after `hold` too, and deliver what they held.
    pub fn set_drains_after(self: &Arc<Self>, specs: &[DrainSpec], hold: Duration) {
        let current = self.drains.load_full();
        let next = self.arrange_drains(&current, specs, Some(hold));
        self.drains.store(Arc::new(next));
        // Drains not kept stop when their last Arc goes (Drop).
    }

    /// Brings the drains in line with `specs`, held: they take the
    /// channel's lines into their buffers and send none until
    /// [`set_drains_after`](Self::set_drains_after) releases them, or
    /// [`retire_drains`](Self::retire_drains) lets them deliver what they
    /// hold and stop. For a channel of a cluster that no node may act as
    /// the owner of for now: its lines are neither sent by two nodes at
    /// once nor lost uncounted. Running drains are retired (they deliver
    /// what they hold for up to `within`).
    pub fn hold_drains(self: &Arc<Self>, specs: &[DrainSpec], within: Duration) {
        let current = self.drains.load_full();
        let (held, running): (Vec<_>, Vec<_>) = current.iter().cloned().partition(|d| d.is_held());
        let next = self.arrange_drains(&held, specs, None);
        self.drains.store(Arc::new(next));
        self.retire(running, within);
    }

    /// The drains for `specs`: those of `current` with the same spec are
    /// kept (released after `hold`, when given), the others started (held
    /// when `hold` is `None`).
    fn arrange_drains(
        self: &Arc<Self>,
        current: &[Arc<Drain>],
        specs: &[DrainSpec],
        hold: Option<Duration>,
    ) -> Vec<Arc<Drain>> {
        let mut by_id: HashMap<&str, &Arc<Drain>> =
            current.iter().map(|d| (d.spec.id.as_str(), d)).collect();
        let mut next = Vec::with_capacity(specs.len());
        for spec in specs {
            match by_id.remove(spec.id.as_str()) {
                Some(d) if d.spec == *spec => {
                    if let Some(hold) = hold {
                        d.release(hold);
                    }
                    next.push(d.clone());
                }
                _ => match Drain::start(
                    &self.app_id,
                    spec,
                    &self.settings,
                    Arc::downgrade(self),
                    self.runtime.as_ref(),
                    hold,
                ) {
                    Ok(d) => next.push(Arc::new(d)),
                    Err(e) => {
                        tracing::warn!(app = %self.app_id, drain = %spec.id, url = %crate::drain::redacted_url(&spec.url), error = %e, "drain not started");
                    }
                },
            }
        }
        next
    }

    /// Stops the drains as [`set_drains`](Self::set_drains)`(&[])` does,
    /// but lets them deliver what they hold for up to `within` first (a
    /// channel handed to another node of a cluster; held drains are
    /// released to do so): what is left then is counted dropped.
    pub fn retire_drains(&self, within: Duration) {
        let old = self.drains.swap(Arc::new(Vec::new()));
        self.retire(old.to_vec(), within);
    }

    fn retire(&self, old: Vec<Arc<Drain>>, within: Duration) {
        if old.is_empty() {
            return;
        }
        for d in &old {
            d.release(Duration::ZERO);
        }
        let runtime = tokio::runtime::Handle::try_current()
            .ok()
            .or_else(|| self.runtime.clone());
        let Some(runtime) = runtime else {
            return; // Dropped here: counted at once.
        };
        runtime.spawn(async move {
            let idle = async {
                for d in old.iter() {
                    d.buffer().wait_idle().await;
                }
            };
            let _ = tokio::time::timeout(within, idle).await;
            drop(old);
        });
    }

    /// Ends every live tail after `line` (not kept in history): their
    /// sessions write what they hold, then `line`, and end.
    pub fn end_tails(&self, line: LogLine) {
        let mut state = self.state();
        for tail in &state.tails {
            tail.offer(std::slice::from_ref(&line));
        }
        state.tails.clear();
    }

    /// Buffers of every drain (for flushing).
    pub fn drain_buffers(&self) -> Vec<Arc<DrainBuffer>> {
        self.drains
            .load()
            .iter()
            .map(|d| d.buffer().clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::PRI_APP;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn lines(from: usize, to: usize) -> Vec<LogLine> {
        (from..to)
            .map(|i| LogLine::now(PRI_APP, "app", "web.1", &format!("line {i}")))
            .collect()
    }

    #[test]
    fn a_tail_is_woken_once_per_batch_and_takes_it_whole() {
        let channel = Channel::new("id", "demo", Arc::default(), None);
        let (_, live) = channel.subscribe(0, None, None, true);
        let live = live.unwrap();
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut taken = Vec::new();
        assert!(live.poll_take(&mut cx, &mut taken, 100).is_pending());

        channel.publish_batch(&lines(0, 5));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "one wake for the batch");
        assert!(matches!(
            live.poll_take(&mut cx, &mut taken, 100),
            Poll::Ready(Some(None))
        ));
        let msgs: Vec<_> = taken.iter().map(|l| l.msg()).collect();
        assert_eq!(msgs, ["line 0", "line 1", "line 2", "line 3", "line 4"]);
        assert_eq!(channel.state().history.len(), 5);

        // Nothing is waiting: no wake until the next batch.
        assert!(live.poll_take(&mut cx, &mut taken, 100).is_pending());
        channel.publish_batch(&lines(5, 7));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_full_tail_counts_what_it_could_not_take_and_a_gone_session_is_forgotten() {
        let settings = LogplexSettings {
            tail_buffer_lines: 3,
            ..LogplexSettings::default()
        };
        let channel = Channel::new("id", "demo", Arc::new(settings), None);
        let (_, live) = channel.subscribe(0, None, None, true);
        let live = live.unwrap();
        channel.publish_batch(&lines(0, 5));
        let waker = Waker::from(Arc::new(Wakes::default()));
        let mut taken = Vec::new();
        let Poll::Ready(Some(Some(loss))) =
            live.poll_take(&mut Context::from_waker(&waker), &mut taken, 100)
        else {
            panic!("lines and loss expected");
        };
        assert_eq!((taken.len(), loss.count), (3, 2));
        drop(live);
        assert_eq!(channel.tail_count(), 1);
        channel.publish_batch(&lines(5, 6));
        assert_eq!(channel.tail_count(), 0);
    }
}
