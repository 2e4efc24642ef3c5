//! The embedded durable [`Store`]: one redb file in the data directory.
//!
//! Three tables: `kv` (key → JSON value), `log` (revision → JSON batch,
//! trimmed to the last [`LOG_RETENTION`] revisions) and `meta` (`revision`).
//! A commit writes all three in one redb write transaction with
//! `Durability::Immediate` (redb's default, set explicitly here because the
//! API's 2xx depends on it): when [`Store::commit`] returns, the batch is on
//! disk. redb's copy-on-write B-trees and its commit protocol mean a crash at
//! any point leaves the last committed transaction intact. redb also locks
//! the file, so two processes can never share one data directory by mistake.

use std::path::Path;

use ::redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::{Batch, Change, Snapshot, Store, StoreError, LOG_RETENTION};

const KV: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("kv");
const LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const REVISION: &str = "revision";

/// A [`Store`] in one redb file.
pub struct RedbStore {
    db: Database,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").finish_non_exhaustive()
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl RedbStore {
    /// Opens (or creates) the store file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(backend)?;
        // Create the tables once so readers never see them missing.
        let mut txn = db.begin_write().map_err(backend)?;
        txn.set_durability(Durability::Immediate);
        {
            txn.open_table(KV).map_err(backend)?;
            txn.open_table(LOG).map_err(backend)?;
            txn.open_table(META).map_err(backend)?;
        }
        txn.commit().map_err(backend)?;
        Ok(RedbStore { db })
    }

    fn current(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let meta = txn.open_table(META).map_err(backend)?;
        Ok(meta
            .get(REVISION)
            .map_err(backend)?
            .map_or(0, |g| g.value()))
    }
}

impl Store for RedbStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let meta = txn.open_table(META).map_err(backend)?;
        let revision = meta
            .get(REVISION)
            .map_err(backend)?
            .map_or(0, |g| g.value());
        let kv = txn.open_table(KV).map_err(backend)?;
        let mut snapshot = Snapshot {
            revision,
            ..Snapshot::default()
        };
        for item in kv.iter().map_err(backend)? {
            let (k, v) = item.map_err(backend)?;
            let value = serde_json::from_slice(v.value()).map_err(backend)?;
            snapshot.kv.insert(k.value().to_string(), value);
        }
        Ok(snapshot)
    }

    fn commit(&self, expected: u64, changes: &[Change]) -> Result<u64, StoreError> {
        let mut txn = self.db.begin_write().map_err(backend)?;
        txn.set_durability(Durability::Immediate);
        let revision;
        {
            let mut meta = txn.open_table(META).map_err(backend)?;
            let actual = meta
                .get(REVISION)
                .map_err(backend)?
                .map_or(0, |g| g.value());
            if actual != expected {
                return Err(StoreError::Conflict { expected, actual });
            }
            revision = actual + 1;
            meta.insert(REVISION, revision).map_err(backend)?;
            let mut kv = txn.open_table(KV).map_err(backend)?;
            for c in changes {
                match &c.value {
                    Some(v) => {
                        let bytes = serde_json::to_vec(v).map_err(backend)?;
                        kv.insert(c.key.as_str(), bytes.as_slice())
                            .map_err(backend)?;
                    }
                    None => {
                        kv.remove(c.key.as_str()).map_err(backend)?;
                    }
                }
            }
            let mut log = txn.open_table(LOG).map_err(backend)?;
            let batch = serde_json::to_vec(&Batch {
                revision,
                changes: changes.to_vec(),
            })
            .map_err(backend)?;
            log.insert(revision, batch.as_slice()).map_err(backend)?;
            while log.len().map_err(backend)? > LOG_RETENTION {
                log.pop_first().map_err(backend)?;
            }
        }
        txn.commit().map_err(backend)?;
        Ok(revision)
    }

    fn changes_since(&self, since: u64, limit: usize) -> Result<Vec<Batch>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let meta = txn.open_table(META).map_err(backend)?;
        let current = meta
            .get(REVISION)
            .map_err(backend)?
            .map_or(0, |g| g.value());
        if since > current {
            return Err(StoreError::Future {
                asked: since,
                current,
            });
        }
        let log = txn.open_table(LOG).map_err(backend)?;
        let oldest = log
            .first()
            .map_err(backend)?
            .map_or(current + 1, |(k, _)| k.value());
        if since + 1 < oldest && since < current {
            return Err(StoreError::Compacted {
                asked: since,
                oldest,
            });
        }
        let mut out = Vec::new();
        for item in log.range(since + 1..).map_err(backend)?.take(limit) {
            let (_, v) = item.map_err(backend)?;
            out.push(serde_json::from_slice(v.value()).map_err(backend)?);
        }
        Ok(out)
    }

    fn revision(&self) -> Result<u64, StoreError> {
        self.current()
    }
}
