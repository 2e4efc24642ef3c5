//! The shared [`Store`] for several control nodes: etcd v3, under one key
//! prefix (default `/switchyard`).
//!
//! Layout, all under the prefix:
//!
//! - `<prefix>/rev`: Switchyard's revision, as a decimal string;
//! - `<prefix>/kv/<key>`: each store key's JSON value;
//! - `<prefix>/log/<revision, 20 digits>`: the [`Batch`] committed under that
//!   revision, as JSON (zero-padded so etcd's key order is revision order).
//!
//! A [`Store::commit`] is one etcd transaction: *if* `rev` still holds the
//! caller's base revision (absent for 0), *then* write the changes, the new
//! `rev`, the batch's log entry and delete the log entries that fell out of
//! the retention window; *else* read `rev` and answer
//! [`StoreError::Conflict`]. etcd serialises transactions, so two control
//! nodes committing on the same base cannot both win, and uniqueness rules
//! checked against the base state hold across nodes. An etcd transaction is
//! acknowledged once a majority has it in its fsynced log, so a commit is
//! durable when it returns.
//!
//! Why a counter key and log keys rather than etcd's own revisions: etcd's
//! revision is global to the cluster (other prefixes, leases and other
//! programs bump it), so it would not go up by exactly one per Switchyard
//! commit, and "the prefix has not changed since R" cannot be expressed in
//! one etcd compare once keys are deleted. The counter keeps the contract of
//! the other stores exactly (contiguous revisions, `commit` returns
//! `expected + 1`, [`Store::changes_since`] replays batches and answers
//! [`StoreError::Compacted`] when the retained log no longer reaches), at the
//! cost of one extra key per commit (the log entry, trimmed to `retention`).
//! etcd's own compaction only trims etcd's MVCC history, never live keys, so
//! it does not shorten this log. A process watching etcd directly can watch
//! `<prefix>/log/` and receive every batch in order, each carrying its
//! Switchyard revision.
//!
//! etcd limits a transaction to `--max-txn-ops` operations (128 by default)
//! and a request to 1.5 MiB: a commit writes its changes plus three
//! operations, far below that for API changes; an [`super::import`] of a
//! large store needs etcd started with a higher `--max-txn-ops`.
//!
//! The trait is synchronous (the API calls it from `spawn_blocking`) and
//! etcd-client is async: the store owns a one-worker tokio runtime that runs
//! the gRPC channel and every request; a call spawns its request there and
//! waits for the answer on a plain channel. The caller's thread is blocked,
//! never a worker of the store's runtime, so the store works from any
//! thread; the API calls it from `spawn_blocking` (only
//! `Control::open`'s first load runs on the caller's thread, once at start).

use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, Identity,
    TlsOptions, Txn, TxnOp, TxnOpResponse,
};

use super::{Batch, Change, Snapshot, Store, StoreError, LOG_RETENTION};

/// The key prefix when `--store etcd://…` names none.
pub const DEFAULT_PREFIX: &str = "/switchyard";

/// Where etcd is and how to talk to it: parsed once from
/// `etcd://HOST:PORT[,HOST:PORT…][/prefix]` plus the TLS and auth flags.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// `HOST:PORT` of each member.
    pub endpoints: Vec<String>,
    /// The key prefix, starting with `/` and without a trailing `/`.
    pub prefix: String,
    /// PEM file of the CA that signed etcd's certificate (TLS when set).
    pub ca_cert: Option<std::path::PathBuf>,
    /// PEM client certificate and key files, for etcd's client-cert auth.
    pub client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// etcd user and password (the password is never printed).
    pub user: Option<(String, String)>,
}

impl std::fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("ca_cert", &self.ca_cert)
            .field("client_cert", &self.client_cert)
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .finish()
    }
}

impl EtcdConfig {
    /// Parses `etcd://HOST:PORT[,HOST:PORT…][/prefix]`; the error says what
    /// form was expected.
    pub fn parse_url(url: &str) -> Result<Self, String> {
        const FORM: &str = "expected etcd://HOST:PORT[,HOST:PORT…][/prefix]";
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| format!("{url:?}: {FORM}"))?;
        let (hosts, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let prefix = if prefix.is_empty() {
            DEFAULT_PREFIX.to_string()
        } else {
            prefix.to_string()
        };
        let mut endpoints = Vec::new();
        for host in hosts.split(',') {
            let ok = host
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
            if !ok {
                return Err(format!("{url:?}: {host:?} is not HOST:PORT; {FORM}"));
            }
            endpoints.push(host.to_string());
        }
        Ok(EtcdConfig {
            endpoints,
            prefix,
            ca_cert: None,
            client_cert: None,
            user: None,
        })
    }
}

impl EtcdConfig {
    /// The endpoint URLs and connection options for etcd-client: HTTP/2
    /// keep-alive pings every second, answered within two, so a hung etcd
    /// (SIGSTOP, a dead host behind an open socket) breaks the channel in
    /// about three seconds instead of when TCP gives up; TLS and auth from
    /// the flags.
    pub fn client_options(&self) -> Result<(Vec<String>, ConnectOptions), String> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(10))
            .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2))
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
        };
        let scheme = if self.ca_cert.is_some() || self.client_cert.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &self.ca_cert {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            if let Some((cert, key)) = &self.client_cert {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            options = options.with_tls(tls);
            "https"
        } else {
            "http"
        };
        if let Some((user, password)) = &self.user {
            options = options.with_user(user.clone(), password.clone());
        }
        let endpoints = self
            .endpoints
            .iter()
            .map(|e| format!("{scheme}://{e}"))
            .collect();
        Ok((endpoints, options))
    }
}

/// Where Switchyard's keys live under a prefix (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// The prefix, without a trailing `/`.
    pub prefix: String,
}

impl Keys {
    /// The keys under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    /// `<prefix>/rev`: the revision counter.
    pub fn rev(&self) -> String {
        format!("{}/rev", self.prefix)
    }

    /// `<prefix>/kv/`: where store keys live.
    pub fn kv(&self) -> String {
        format!("{}/kv/", self.prefix)
    }

    /// `<prefix>/log/`: the change log.
    pub fn log(&self) -> String {
        format!("{}/log/", self.prefix)
    }

    /// The log entry of `revision`.
    pub fn log_entry(&self, revision: u64) -> String {
        format!("{}/log/{revision:020}", self.prefix)
    }
}

/// One change-log entry as stored: the [`Batch`] and when it was committed
/// (milliseconds since the Unix epoch, by the committing node's clock), so
/// a watcher can tell how long a change took to reach it. Readers that
/// know only [`Batch`] ignore the timestamp.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LogEntry {
    /// The batch.
    #[serde(flatten)]
    pub batch: Batch,
    /// Commit time, Unix milliseconds (absent in entries of older nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_at_ms: Option<u64>,
}

/// Now, in Unix milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Keys read per request by [`read_consistent`].
const PAGE: i64 = 256;

/// The largest gRPC answer a read takes (tonic's default is 4 MiB, which a
/// page of large route entries, certificates included, can exceed).
const MAX_ANSWER: usize = 64 << 20;

/// A counter key and every key under a prefix, as of one etcd revision.
#[derive(Debug)]
pub struct Listing {
    /// The etcd revision everything was read at: a watch for what comes
    /// next starts after it.
    pub etcd_revision: i64,
    /// The counter key's value, if it exists.
    pub counter: Option<Vec<u8>>,
    /// Every key under the prefix and its value, in key order.
    pub kvs: Kvs,
}

/// Reads `counter` and every key under `prefix` at one etcd revision: a
/// transaction for the counter and the first page, then further pages
/// pinned at that revision. Pages keep each answer small whatever the
/// store's size; a compaction between pages fails the read (read again).
pub async fn read_consistent(
    client: &Client,
    counter: String,
    prefix: String,
) -> Result<Listing, etcd_client::Error> {
    let mut kv = client.kv_client().max_decoding_message_size(MAX_ANSWER);
    let mut end = prefix.clone().into_bytes();
    if let Some(last) = end.last_mut() {
        *last += 1; // the end of the prefix's range
    }
    let page = || GetOptions::new().with_range(end.clone()).with_limit(PAGE);
    let first = kv
        .txn(Txn::new().and_then([
            TxnOp::get(counter, None),
            TxnOp::get(prefix.clone(), Some(page())),
        ]))
        .await?;
    let etcd_revision = first.header().map_or(0, |h| h.revision());
    let mut answers = first.op_responses().into_iter().filter_map(|r| match r {
        TxnOpResponse::Get(g) => Some(g),
        _ => None,
    });
    let (Some(counter), Some(mut page_resp)) = (answers.next(), answers.next()) else {
        return Err(etcd_client::Error::InvalidArgs(
            "etcd answered a read with fewer results than asked".into(),
        ));
    };
    let counter = counter.kvs().first().map(|kv| kv.value().to_vec());
    let mut kvs = Kvs::new();
    loop {
        kvs.extend(
            page_resp
                .kvs()
                .iter()
                .map(|kv| (kv.key().to_vec(), kv.value().to_vec())),
        );
        let next = match kvs.last() {
            Some((last, _)) if page_resp.more() => {
                let mut from = last.clone();
                from.push(0); // the next key after the last one read
                from
            }
            _ => break,
        };
        page_resp = kv
            .get(next, Some(page().with_revision(etcd_revision)))
            .await?;
    }
    Ok(Listing {
        etcd_revision,
        counter,
        kvs,
    })
}

/// Sends every revision committed under `config`'s prefix into `tx` as
/// etcd reports it (a watch on the counter key), until `tx` has no
/// receiver. Reconnects after errors; a reader that must not miss a commit
/// still reads the change log (this only says when to).
pub async fn watch_commits(config: EtcdConfig, tx: tokio::sync::watch::Sender<u64>) {
    let key = Keys::new(&config.prefix).rev();
    while !tx.is_closed() {
        let watched = async {
            let (endpoints, options) = config
                .client_options()
                .map_err(etcd_client::Error::InvalidArgs)?;
            let mut client = Client::connect(endpoints, Some(options)).await?;
            let mut stream = client.watch(key.clone(), None).await?;
            while let Some(resp) = stream.message().await? {
                for event in resp.events() {
                    let revision = event
                        .kv()
                        .and_then(|kv| std::str::from_utf8(kv.value()).ok())
                        .and_then(|v| v.parse::<u64>().ok());
                    if let Some(revision) = revision {
                        tx.send_replace(revision);
                    }
                }
            }
            Ok::<(), etcd_client::Error>(())
        };
        tokio::select! {
            result = watched => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "watching the store's revision; retrying");
                }
            }
            _ = tx.closed() => return,
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Keys and values of one range read, in key order.
type Kvs = Vec<(Vec<u8>, Vec<u8>)>;

/// A [`Store`] in etcd, shared by every control node that names the same
/// endpoints and prefix.
pub struct EtcdStore {
    /// Runs the gRPC channel's tasks; shut down in the background on drop
    /// (dropping may happen inside an async context).
    runtime: Option<tokio::runtime::Runtime>,
    /// The connected client; cloned per call (cheap, shares the channel).
    client: Client,
    keys: Keys,
    retention: u64,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("prefix", &self.keys.prefix)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("etcd: {e}"))
}

/// Spawns `f` on `runtime` and blocks the calling thread (never one of
/// `runtime`'s workers) until it answers.
fn run_on<T: Send + 'static>(
    runtime: Option<&tokio::runtime::Runtime>,
    f: impl std::future::Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
) -> Result<T, StoreError> {
    let runtime = runtime.ok_or_else(|| backend("the store is shut down"))?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv()
        .map_err(|_| backend("the store's runtime stopped"))?
        .map_err(backend)
}

impl EtcdStore {
    /// Connects to etcd (from blocking context) and keeps
    /// [`LOG_RETENTION`] batches in the log.
    pub fn connect(config: &EtcdConfig) -> Result<Self, StoreError> {
        Self::connect_with_retention(config, LOG_RETENTION)
    }

    /// As [`EtcdStore::connect`], keeping only the last `retention` batches
    /// (tests use a small number to exercise compaction).
    pub fn connect_with_retention(config: &EtcdConfig, retention: u64) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("etcd-store")
            .enable_all()
            .build()
            .map_err(backend)?;
        let (endpoints, options) = config.client_options().map_err(StoreError::Backend)?;
        let client = run_on(Some(&runtime), Client::connect(endpoints, Some(options)))?;
        let store = EtcdStore {
            runtime: Some(runtime),
            client,
            keys: Keys::new(&config.prefix),
            retention: retention.max(1),
        };
        // Fail at start, not at the first API call, when etcd is unreachable.
        store.revision()?;
        Ok(store)
    }

    /// The connected client (TLS, auth and keep-alive as configured), for
    /// async callers beside the store such as [`crate::members`]. Its
    /// channel runs on the store's runtime: keep the store alive while the
    /// client is in use.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.keys.prefix
    }

    /// Runs `f` on the store's runtime and waits for its answer.
    fn run<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    ) -> Result<T, StoreError> {
        run_on(self.runtime.as_ref(), f)
    }

    /// Runs `txn` and returns its op responses' key-value lists, in order
    /// (an empty list for puts and deletes).
    fn txn(&self, txn: Txn) -> Result<(bool, Vec<Kvs>), StoreError> {
        let mut client = self.client.clone();
        let resp = self.run(async move { client.txn(txn).await })?;
        let lists = resp
            .op_responses()
            .into_iter()
            .map(|r| match r {
                TxnOpResponse::Get(g) => g
                    .kvs()
                    .iter()
                    .map(|kv| (kv.key().to_vec(), kv.value().to_vec()))
                    .collect(),
                _ => Vec::new(),
            })
            .collect();
        Ok((resp.succeeded(), lists))
    }

    fn parse_rev(kvs: &[(Vec<u8>, Vec<u8>)]) -> Result<u64, StoreError> {
        match kvs.first() {
            None => Ok(0),
            Some((_, v)) => std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| backend("the revision key does not hold a number")),
        }
    }

    fn parse_log_rev(&self, key: &[u8]) -> Result<u64, StoreError> {
        std::str::from_utf8(key)
            .ok()
            .and_then(|k| k.strip_prefix(&self.keys.log()))
            .and_then(|r| r.parse().ok())
            .ok_or_else(|| backend("a log key without a revision"))
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Store for EtcdStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        let kv_prefix = self.keys.kv();
        // The keys and the revision they reflect come from one etcd revision.
        let (client, rev_key, prefix) = (self.client.clone(), self.keys.rev(), kv_prefix.clone());
        let listing = self.run(async move { read_consistent(&client, rev_key, prefix).await })?;
        let counter: Vec<_> = listing
            .counter
            .into_iter()
            .map(|v| (Vec::new(), v))
            .collect();
        let mut snapshot = Snapshot {
            revision: Self::parse_rev(&counter)?,
            ..Snapshot::default()
        };
        for (k, v) in listing.kvs {
            let key = String::from_utf8(k).map_err(backend)?;
            let key = key.strip_prefix(&kv_prefix).unwrap_or(&key).to_string();
            snapshot
                .kv
                .insert(key, serde_json::from_slice(&v).map_err(backend)?);
        }
        Ok(snapshot)
    }

    fn commit(&self, expected: u64, changes: &[Change]) -> Result<u64, StoreError> {
        let revision = expected + 1;
        let rev_key = self.keys.rev();
        let base = if expected == 0 {
            Compare::create_revision(rev_key.clone(), CompareOp::Equal, 0)
        } else {
            Compare::value(rev_key.clone(), CompareOp::Equal, expected.to_string())
        };
        let mut ops = Vec::with_capacity(changes.len() + 3);
        for c in changes {
            let key = format!("{}{}", self.keys.kv(), c.key);
            ops.push(match &c.value {
                Some(v) => TxnOp::put(key, serde_json::to_vec(v).map_err(backend)?, None),
                None => TxnOp::delete(key, None),
            });
        }
        ops.push(TxnOp::put(rev_key.clone(), revision.to_string(), None));
        let batch = serde_json::to_vec(&LogEntry {
            batch: Batch {
                revision,
                changes: changes.to_vec(),
            },
            committed_at_ms: Some(unix_ms()),
        })
        .map_err(backend)?;
        ops.push(TxnOp::put(self.keys.log_entry(revision), batch, None));
        if revision > self.retention {
            // Everything older than the window, in one range delete.
            let end = self.keys.log_entry(revision - self.retention + 1);
            ops.push(TxnOp::delete(
                self.keys.log(),
                Some(DeleteOptions::new().with_range(end)),
            ));
        }
        let txn = Txn::new()
            .when([base])
            .and_then(ops)
            .or_else([TxnOp::get(rev_key, None)]);
        let (succeeded, lists) = self.txn(txn)?;
        if succeeded {
            return Ok(revision);
        }
        let actual = Self::parse_rev(lists.first().map_or(&[][..], Vec::as_slice))?;
        Err(StoreError::Conflict { expected, actual })
    }

    fn changes_since(&self, since: u64, limit: usize) -> Result<Vec<Batch>, StoreError> {
        let log_prefix = self.keys.log();
        let mut end = log_prefix.clone().into_bytes();
        if let Some(last) = end.last_mut() {
            *last += 1; // '/' + 1: the end of the log range
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let (_, lists) = self.txn(Txn::new().and_then([
            TxnOp::get(self.keys.rev(), None),
            TxnOp::get(
                log_prefix.clone(),
                Some(GetOptions::new().with_prefix().with_limit(1)),
            ),
            TxnOp::get(
                self.keys.log_entry(since + 1),
                Some(GetOptions::new().with_range(end).with_limit(limit)),
            ),
        ]))?;
        let [rev, first, batches] =
            <[_; 3]>::try_from(lists).map_err(|_| backend("short txn answer"))?;
        let current = Self::parse_rev(&rev)?;
        if since > current {
            return Err(StoreError::Future {
                asked: since,
                current,
            });
        }
        let oldest = match first.first() {
            Some((k, _)) => self.parse_log_rev(k)?,
            None => current + 1,
        };
        if since + 1 < oldest && since < current {
            return Err(StoreError::Compacted {
                asked: since,
                oldest,
            });
        }
        batches
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).map_err(backend))
            .collect()
    }

    fn revision(&self) -> Result<u64, StoreError> {
        let mut client = self.client.clone();
        let key = self.keys.rev();
        let resp = self.run(async move { client.get(key, None).await })?;
        let kvs: Vec<_> = resp
            .kvs()
            .iter()
            .map(|kv| (kv.key().to_vec(), kv.value().to_vec()))
            .collect();
        Self::parse_rev(&kvs)
    }

    fn shared(&self) -> bool {
        true
    }
}
