//! The route watch stream: `GET /routes/watch?since=REV`.
//!
//! The body is newline-delimited JSON (`application/x-ndjson`), one
//! [`WatchEvent`] a line:
//!
//! - `{"type":"change","revision":R,"changes":[{"key":"routes/<app>","value":{…}|null}]}`
//!   for every revision R after `since`, in order, with no gaps: revisions
//!   whose commit did not touch any route carry an empty `changes` list, so
//!   a follower's revision always equals the control plane's;
//! - `{"type":"heartbeat","revision":R}` after a quiet spell, so a follower
//!   can tell a silent control plane from a dead connection;
//! - `{"type":"resync","revision":R,"oldest":O}` when `since` is older than
//!   the store's change log reaches (or ahead of the store): the follower
//!   must re-read `GET /routes`, then watch again from its revision. The
//!   stream ends after it.
//!
//! The stream reads batches from the store's change log, not from an
//! in-memory broadcast, so a slow reader can fall behind without losing or
//! reordering anything: it simply reads more log per turn.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use serde::{Deserialize, Serialize};

use crate::engine::Control;
use crate::store::{Change, StoreError};

/// One line of the watch stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum WatchEvent {
    /// The `routes/` changes committed at `revision`.
    Change {
        /// The revision.
        revision: u64,
        /// `routes/<app>` keys and their new values (`null`: app gone).
        changes: Vec<Change>,
    },
    /// Nothing new; the control plane is at `revision`.
    Heartbeat {
        /// The control plane's revision.
        revision: u64,
    },
    /// Re-read `GET /routes`; the change log does not reach back far enough.
    Resync {
        /// The control plane's revision.
        revision: u64,
        /// The oldest revision still in the change log.
        oldest: u64,
    },
}

/// The prefix remote routers watch.
pub const ROUTES_PREFIX: &str = "routes/";

/// How many batches one store read returns.
const PAGE: usize = 256;

fn line(event: &WatchEvent) -> Bytes {
    let mut v = serde_json::to_vec(event).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// The stream of events after `since`; `heartbeat` is the quiet interval.
/// The stream ends when `stopping` turns true (server shutdown).
pub fn stream(
    control: Arc<Control>,
    since: u64,
    heartbeat: Duration,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let mut revisions = control.subscribe();
        let mut cursor = since;
        loop {
            let stop = *stopping.borrow();
            if stop {
                return;
            }
            let current = *revisions.borrow_and_update();
            let store = control.store().clone();
            let read = tokio::task::spawn_blocking(move || store.changes_since(cursor, PAGE)).await;
            let batches = match read {
                Ok(Ok(b)) => b,
                Ok(Err(StoreError::Compacted { oldest, .. })) => {
                    let _ = tx
                        .send(line(&WatchEvent::Resync {
                            revision: current,
                            oldest,
                        }))
                        .await;
                    return;
                }
                Ok(Err(StoreError::Future { current, .. })) => {
                    let _ = tx
                        .send(line(&WatchEvent::Resync {
                            revision: current,
                            oldest: current,
                        }))
                        .await;
                    return;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "watch: store read failed; ending the stream");
                    return;
                }
                Err(_) => return,
            };
            let full = batches.len() == PAGE;
            for b in batches {
                cursor = b.revision;
                let changes = b
                    .changes
                    .into_iter()
                    .filter(|c| c.key.starts_with(ROUTES_PREFIX))
                    .collect();
                let event = WatchEvent::Change {
                    revision: b.revision,
                    changes,
                };
                if tx.send(line(&event)).await.is_err() {
                    return;
                }
            }
            if full {
                continue;
            }
            tokio::select! {
                changed = revisions.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep(heartbeat) => {
                    if *revisions.borrow() == cursor
                        && tx.send(line(&WatchEvent::Heartbeat { revision: cursor })).await.is_err()
                    {
                        return;
                    }
                }
                _ = tx.closed() => return,
                _ = stopping.changed() => return,
            }
        }
    });
    futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|b| (Ok(b), rx)) },
    )
}
