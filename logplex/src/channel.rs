//! A channel: one app's history, live tails and drains.
//!
//! Publishing takes the channel's mutex for the history push and the tails'
//! non-blocking sends, then hands the line to each drain's buffer (its own
//! mutex, never waiting). History snapshot and tail registration happen
//! under the same mutex, so a session sees every line exactly once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use chrono::Utc;
use tokio::sync::mpsc;

use crate::config::DrainSpec;
use crate::drain::{Drain, DrainBuffer, Loss};
use crate::history::History;
use crate::message::LogLine;
use crate::settings::LogplexSettings;

/// The session's end of a live tail.
#[derive(Debug)]
pub struct LiveTail {
    /// Lines, in order.
    pub rx: mpsc::Receiver<Arc<LogLine>>,
    /// Lines the tail could not take since last looked at (L11).
    pub loss: Arc<Mutex<Option<Loss>>>,
}

/// A live tail: a bounded queue to one session, with its filters and the
/// count of lines it could not take (reported as L11).
#[derive(Debug)]
pub struct Tail {
    tx: mpsc::Sender<Arc<LogLine>>,
    source: Option<String>,
    dyno: Option<String>,
    loss: Arc<Mutex<Option<Loss>>>,
}

impl Tail {
    /// A tail and the receiving end of its queue.
    pub fn new(capacity: usize, source: Option<String>, dyno: Option<String>) -> (Tail, LiveTail) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let loss = Arc::new(Mutex::new(None));
        (
            Tail {
                tx,
                source,
                dyno,
                loss: loss.clone(),
            },
            LiveTail { rx, loss },
        )
    }

    fn matches(&self, line: &LogLine) -> bool {
        line.matches(self.source.as_deref(), self.dyno.as_deref())
    }

    /// Offers a line; false when the session is gone.
    fn offer(&self, line: &Arc<LogLine>) -> bool {
        if !self.matches(line) {
            return !self.tx.is_closed();
        }
        match self.tx.try_send(line.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                let mut loss = self.loss.lock().unwrap_or_else(|e| e.into_inner());
                match loss.as_mut() {
                    Some(l) => l.count += 1,
                    None => {
                        *loss = Some(Loss {
                            count: 1,
                            since: Utc::now(),
                        })
                    }
                }
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
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

    /// Sends a line to history, tails and drains.
    pub fn publish(&self, line: Arc<LogLine>) {
        self.publish_local(&line);
        for drain in self.drains.load().iter() {
            drain.push(line.clone());
        }
    }

    /// Sends a line to history and tails only (the app's own stream).
    pub fn publish_local(&self, line: &Arc<LogLine>) {
        let mut state = self.state();
        state.history.push(line.clone());
        state.tails.retain(|t| t.offer(line));
    }

    /// Recent lines passing the filters and, if `tail`, a new live tail
    /// registered at the same instant.
    pub fn subscribe(
        &self,
        n: usize,
        source: Option<String>,
        dyno: Option<String>,
        tail: bool,
    ) -> (Vec<Arc<LogLine>>, Option<LiveTail>) {
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
        let current = self.drains.load_full();
        let mut by_id: HashMap<&str, &Arc<Drain>> =
            current.iter().map(|d| (d.spec.id.as_str(), d)).collect();
        let mut next = Vec::with_capacity(specs.len());
        for spec in specs {
            match by_id.remove(spec.id.as_str()) {
                Some(d) if d.spec == *spec => next.push(d.clone()),
                _ => match Drain::start(
                    &self.app_id,
                    spec,
                    &self.settings,
                    Arc::downgrade(self),
                    self.runtime.as_ref(),
                ) {
                    Ok(d) => next.push(Arc::new(d)),
                    Err(e) => {
                        tracing::warn!(app = %self.app_id, drain = %spec.id, url = %spec.url, error = %e, "drain not started");
                    }
                },
            }
        }
        self.drains.store(Arc::new(next));
        // Drains left in `by_id` stop when their last Arc goes (Drop).
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
