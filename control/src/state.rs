//! The in-memory mirror of the store and the write transaction over it.
//!
//! [`State`] is every key and value as of one revision, loaded from the store
//! at start and kept in step after each commit. Handlers read it directly. A
//! change is written as a closure over a [`Txn`]: the transaction reads
//! through its own pending writes, so validation sees the state as it will be,
//! and it collects the batch of [`Change`]s the store commits atomically.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::model::{AppRecord, AuditRecord};
use crate::store::{Change, Snapshot};

/// Audit entries older than this many revisions are dropped.
pub const AUDIT_RETENTION: u64 = 10_000;

/// Every key and value as of `revision`.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// The store revision this mirrors.
    pub revision: u64,
    /// Keys and values.
    pub kv: BTreeMap<String, Value>,
}

impl From<Snapshot> for State {
    fn from(s: Snapshot) -> Self {
        State {
            revision: s.revision,
            kv: s.kv,
        }
    }
}

fn decode<T: DeserializeOwned>(key: &str, v: &Value) -> Option<T> {
    match T::deserialize(v) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(key, error = %e, "skipping a stored value that does not decode");
            None
        }
    }
}

impl State {
    /// The value at `key`, decoded.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        self.kv.get(key).and_then(|v| decode(key, v))
    }

    /// Every value under `prefix`, in key order, decoded.
    pub fn list<T: DeserializeOwned>(&self, prefix: &str) -> Vec<T> {
        self.entries(prefix)
            .filter_map(|(k, v)| decode(k, v))
            .collect()
    }

    /// Raw entries under `prefix`, in key order.
    pub fn entries<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a Value)> + 'a {
        self.kv
            .range(prefix.to_string()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
    }

    /// Applies a committed batch.
    pub fn apply(&mut self, revision: u64, changes: &[Change]) {
        for c in changes {
            match &c.value {
                Some(v) => self.kv.insert(c.key.clone(), v.clone()),
                None => self.kv.remove(&c.key),
            };
        }
        self.revision = revision;
    }

    /// Finds an app by name or id (Heroku accepts both in paths).
    pub fn app(&self, name_or_id: &str) -> Option<AppRecord> {
        if let Some(app) = self.get::<AppRecord>(&crate::model::key::app(name_or_id)) {
            return Some(app);
        }
        let id: String = self.get(&crate::model::key::name(name_or_id))?;
        self.get(&crate::model::key::app(&id))
    }
}

/// A pending change: reads see its own writes; [`Txn::into_changes`] gives
/// the batch to commit.
#[derive(Debug)]
pub struct Txn<'a> {
    base: &'a State,
    writes: BTreeMap<String, Option<Value>>,
    order: Vec<String>,
    audit: Vec<AuditRecord>,
}

impl<'a> Txn<'a> {
    /// A transaction over `base`.
    pub fn new(base: &'a State) -> Self {
        Txn {
            base,
            writes: BTreeMap::new(),
            order: Vec::new(),
            audit: Vec::new(),
        }
    }

    /// The revision this change will get when committed.
    pub fn next_revision(&self) -> u64 {
        self.base.revision + 1
    }

    /// Raw value at `key`, as it will be.
    pub fn raw(&self, key: &str) -> Option<&Value> {
        match self.writes.get(key) {
            Some(w) => w.as_ref(),
            None => self.base.kv.get(key),
        }
    }

    /// The value at `key`, decoded, as it will be.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        self.raw(key).and_then(|v| decode(key, v))
    }

    /// Every key under `prefix` as it will be, in key order.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .base
            .entries(prefix)
            .map(|(k, _)| k.clone())
            .filter(|k| !self.writes.contains_key(k))
            .collect();
        keys.extend(
            self.writes
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .filter(|(_, v)| v.is_some())
                .map(|(k, _)| k.clone()),
        );
        keys.sort();
        keys
    }

    /// Every value under `prefix` as it will be, decoded, in key order.
    pub fn list<T: DeserializeOwned>(&self, prefix: &str) -> Vec<T> {
        self.keys(prefix)
            .iter()
            .filter_map(|k| self.get(k))
            .collect()
    }

    /// Writes `value` at `key`.
    pub fn put<T: Serialize>(&mut self, key: impl Into<String>, value: &T) {
        let key = key.into();
        match serde_json::to_value(value) {
            Ok(v) => self.write(key, Some(v)),
            Err(e) => tracing::error!(key, error = %e, "value does not serialize; not written"),
        }
    }

    /// Deletes `key` (a no-op when absent).
    pub fn delete(&mut self, key: impl Into<String>) {
        let key = key.into();
        if self.raw(&key).is_some() {
            self.write(key, None);
        }
    }

    /// Deletes every key under `prefix`.
    pub fn delete_prefix(&mut self, prefix: &str) {
        for k in self.keys(prefix) {
            self.delete(k);
        }
    }

    fn write(&mut self, key: String, value: Option<Value>) {
        if !self.writes.contains_key(&key) {
            self.order.push(key.clone());
        }
        self.writes.insert(key, value);
    }

    /// Records an audited event; it is also written to the app's log as a
    /// `heroku[api]` line once committed.
    pub fn audit(&mut self, app: Option<&AppRecord>, action: &str, message: impl Into<String>) {
        let n = self.audit.len();
        let record = AuditRecord {
            revision: self.next_revision(),
            at: crate::model::now(),
            app_id: app.map(|a| a.id.clone()),
            app_name: app.map(|a| a.name.clone()),
            action: action.to_string(),
            message: message.into(),
        };
        self.put(crate::model::key::audit(record.revision, n), &record);
        if n == 0 {
            // Keep the audit list bounded: drop entries older than the window.
            let cutoff =
                crate::model::key::audit(record.revision.saturating_sub(AUDIT_RETENTION), 0);
            let old: Vec<String> = self
                .base
                .entries("audit/")
                .map(|(k, _)| k)
                .take_while(|k| **k < cutoff)
                .cloned()
                .collect();
            for k in old {
                self.delete(k);
            }
        }
        self.audit.push(record);
    }

    /// App ids whose keys this transaction touches.
    pub fn touched_apps(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .writes
            .keys()
            .filter(|k| !k.starts_with("routes/"))
            .filter_map(|k| crate::model::key::app_of(k).map(str::to_string))
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// The batch to commit (in write order, only keys whose value changes)
    /// and the audit records.
    pub fn into_changes(self) -> (Vec<Change>, Vec<AuditRecord>) {
        let mut changes = Vec::with_capacity(self.order.len());
        let mut writes = self.writes;
        for key in self.order {
            if let Some(value) = writes.remove(&key) {
                if self.base.kv.get(&key) == value.as_ref() {
                    continue;
                }
                changes.push(Change { key, value });
            }
        }
        (changes, self.audit)
    }
}
