//! An in-memory [`Store`] for tests and throwaway runs (not durable).

use std::collections::VecDeque;
use std::sync::Mutex;

use super::{Batch, Change, Snapshot, Store, StoreError};

/// A [`Store`] that keeps everything in memory; `retention` bounds its log.
#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    retention: usize,
}

#[derive(Debug, Default)]
struct Inner {
    snapshot: Snapshot,
    log: VecDeque<Batch>,
}

impl MemoryStore {
    /// An empty store keeping [`super::LOG_RETENTION`] batches.
    pub fn new() -> Self {
        Self::with_retention(super::LOG_RETENTION as usize)
    }

    /// An empty store keeping only the last `retention` batches (tests use a
    /// small number to exercise compaction).
    pub fn with_retention(retention: usize) -> Self {
        MemoryStore {
            inner: Mutex::new(Inner::default()),
            retention: retention.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl Store for MemoryStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        Ok(self.lock().snapshot.clone())
    }

    fn commit(&self, expected: u64, changes: &[Change]) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let actual = inner.snapshot.revision;
        if actual != expected {
            return Err(StoreError::Conflict { expected, actual });
        }
        let revision = actual + 1;
        for c in changes {
            match &c.value {
                Some(v) => inner.snapshot.kv.insert(c.key.clone(), v.clone()),
                None => inner.snapshot.kv.remove(&c.key),
            };
        }
        inner.snapshot.revision = revision;
        inner.log.push_back(Batch {
            revision,
            changes: changes.to_vec(),
        });
        while inner.log.len() > self.retention {
            inner.log.pop_front();
        }
        Ok(revision)
    }

    fn changes_since(&self, since: u64, limit: usize) -> Result<Vec<Batch>, StoreError> {
        let inner = self.lock();
        let current = inner.snapshot.revision;
        if since > current {
            return Err(StoreError::Future {
                asked: since,
                current,
            });
        }
        let oldest = inner.log.front().map_or(current + 1, |b| b.revision);
        if since + 1 < oldest && since < current {
            return Err(StoreError::Compacted {
                asked: since,
                oldest,
            });
        }
        Ok(inner
            .log
            .iter()
            .filter(|b| b.revision > since)
            .take(limit)
            .cloned()
            .collect())
    }

    fn revision(&self) -> Result<u64, StoreError> {
        Ok(self.lock().snapshot.revision)
    }
}
