//! The store: a revisioned key space plus a bounded change log.
//!
//! The control plane keeps all of its state as JSON values under string keys
//! (`apps/<id>`, `dynos/<app-id>/web.1`, …; the layout is in
//! [`crate::state`]). The store is shaped like etcd on purpose, so an etcd
//! backend can sit behind the same trait and the publication code does not
//! change:
//!
//! - every [`Store::commit`] is atomic, bumps the global revision by one and
//!   records the batch of changes under that revision in the change log;
//! - [`Store::load`] returns every key with the revision it reflects;
//! - [`Store::changes_since`] replays the log after a revision, or answers
//!   [`StoreError::Compacted`] when the log no longer reaches back that far
//!   (the watcher must then re-list, exactly as with etcd's compaction).
//!
//! A commit is acknowledged only once it is durable: the redb implementation
//! commits with `Durability::Immediate` (fsync before returning), so an API
//! change answered with 2xx survives `kill -9` and power loss.
//!
//! Backends: [`MemoryStore`] (tests), [`RedbStore`] (the embedded default,
//! one file) and [`EtcdStore`] (etcd v3, shared by several control nodes; its
//! module doc explains how Switchyard's revisions map onto etcd).
//!
//! Why redb: pure Rust (no C toolchain), one file, ACID with crash-safe
//! commits, MVCC readers, and a stable file format. SQLite in WAL mode with
//! `synchronous=FULL` would do as well behind this trait.

mod etcd;
mod memory;
mod redb;

pub use self::etcd::{
    read_consistent, unix_ms, watch_commits, EtcdConfig, EtcdStore, Keys as EtcdKeys, Listing,
    LogEntry, DEFAULT_PREFIX,
};
pub use self::memory::MemoryStore;
pub use self::redb::RedbStore;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One key's change inside a committed batch: `value: None` deletes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The key.
    pub key: String,
    /// The new value, or `None` when the key was deleted.
    pub value: Option<Value>,
}

/// Every change committed under one revision, in commit order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// The revision this batch created.
    pub revision: u64,
    /// The changes, in the order they were written.
    pub changes: Vec<Change>,
}

/// Everything in the store, as of one revision.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// The revision of the last committed batch (0 for an empty store).
    pub revision: u64,
    /// Every key and its value.
    pub kv: BTreeMap<String, Value>,
}

/// Why the store refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another commit happened since `expected`; nothing was written.
    #[error("revision conflict: expected {expected}, store is at {actual}")]
    Conflict {
        /// The revision the caller based its change on.
        expected: u64,
        /// The store's revision.
        actual: u64,
    },
    /// The change log no longer reaches back to the asked revision.
    #[error("revision {asked} is compacted; the oldest kept change is {oldest}")]
    Compacted {
        /// The revision the caller asked to resume after.
        asked: u64,
        /// The oldest revision still in the change log.
        oldest: u64,
    },
    /// The asked revision is in the future.
    #[error("revision {asked} is ahead of the store ({current})")]
    Future {
        /// The revision asked for.
        asked: u64,
        /// The store's revision.
        current: u64,
    },
    /// The backend failed (disk, corruption, lock held by another process).
    #[error("store backend: {0}")]
    Backend(String),
}

/// A durable, revisioned key-value store with a change log.
///
/// Implementations are called from blocking context (the API runs them on
/// `spawn_blocking`): they may do disk I/O and fsync.
pub trait Store: Send + Sync + 'static {
    /// Every key with the revision it reflects.
    fn load(&self) -> Result<Snapshot, StoreError>;

    /// Atomically applies `changes` if the store is still at `expected`;
    /// returns the new revision (`expected + 1`). Durable when it returns.
    fn commit(&self, expected: u64, changes: &[Change]) -> Result<u64, StoreError>;

    /// The batches committed after `since`, oldest first, at most `limit`.
    /// [`StoreError::Compacted`] when the log was trimmed past `since`.
    fn changes_since(&self, since: u64, limit: usize) -> Result<Vec<Batch>, StoreError>;

    /// The current revision.
    fn revision(&self) -> Result<u64, StoreError>;

    /// Whether other processes write this store too (etcd), so that a
    /// control node must read their commits before it answers.
    fn shared(&self) -> bool {
        false
    }
}

/// How many batches the change log keeps before trimming the oldest.
pub const LOG_RETENTION: u64 = 10_000;

/// The whole store as one JSON document, `{"revision": N, "kv": {…}}`: for
/// backups and as the migration path across store format changes.
pub fn export(store: &dyn Store) -> Result<Value, StoreError> {
    let snap = store.load()?;
    Ok(serde_json::json!({ "revision": snap.revision, "kv": snap.kv }))
}

/// Loads an [`export`] document into an empty store as one batch; returns
/// the new revision. Refuses a store that already has data.
pub fn import(store: &dyn Store, doc: &Value) -> Result<u64, StoreError> {
    let kv: BTreeMap<String, Value> = serde_json::from_value(doc["kv"].clone())
        .map_err(|e| StoreError::Backend(format!("not a store export: {e}")))?;
    let current = store.revision()?;
    if current != 0 {
        return Err(StoreError::Backend(format!(
            "the store is not empty (revision {current})"
        )));
    }
    let changes: Vec<Change> = kv
        .into_iter()
        .map(|(key, value)| Change {
            key,
            value: Some(value),
        })
        .collect();
    store.commit(0, &changes)
}
