//! [`MemberWatch`]: the live set of one kind, listed at a revision and
//! watched from the next, listed again after compaction.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use etcd_client::{Client, EventType, GetOptions, KeyValue, WatchOptions};
use tokio::task::JoinHandle;

use super::{directory, Member, MemberInfo, Members};

/// A record from etcd, or `None` (logged) when it is not ours to read.
fn member_of(dir: &str, kv: &KeyValue) -> Option<Member> {
    let id = kv.key_str().ok()?.strip_prefix(dir)?.to_string();
    match serde_json::from_slice::<MemberInfo>(kv.value()) {
        Ok(info) => Some(Member {
            id,
            info,
            lease: kv.lease(),
            created: kv.create_revision(),
        }),
        Err(e) => {
            tracing::warn!(member = %id, error = %e, "a member record that is not valid JSON; ignored");
            None
        }
    }
}

/// Lists the members under `dir` with the revision they reflect.
async fn list(client: &mut Client, dir: &str) -> Result<Members, etcd_client::Error> {
    let resp = client
        .get(dir, Some(GetOptions::new().with_prefix()))
        .await?;
    let revision = resp.header().map_or(0, |h| h.revision());
    let mut members = Members {
        revision,
        list: Vec::new(),
    };
    for kv in resp.kvs() {
        if let Some(m) = member_of(dir, kv) {
            members.upsert(m);
        }
    }
    Ok(members)
}

/// The live members of one kind, followed from etcd (see the module docs).
/// Dropping it stops the watch.
#[derive(Debug)]
pub struct MemberWatch {
    /// The set as last applied; replaced whole on every change.
    current: Arc<ArcSwap<Members>>,
    /// The revision of `current`, for waiting on the next change.
    changed: tokio::sync::watch::Receiver<i64>,
    /// Lists after compaction, for metrics and tests.
    relists: Arc<AtomicU64>,
    /// The watch loop; aborted on drop.
    task: JoinHandle<()>,
}

impl Drop for MemberWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why a watch stream ended.
enum Ended {
    /// etcd compacted past the resume point: list again.
    Compacted,
    /// The stream failed or ended: re-open it from the resume point.
    Broken(String),
}

impl MemberWatch {
    /// Lists the members of `kind` under `prefix` and follows them; returns
    /// once the first list is in.
    pub async fn start(
        mut client: Client,
        prefix: &str,
        kind: &str,
    ) -> Result<MemberWatch, etcd_client::Error> {
        let dir = directory(prefix, kind);
        let members = list(&mut client, &dir).await?;
        Ok(Self::spawn(client, dir, members))
    }

    /// Connects to etcd as `config` says (HTTP/2 keep-alive on, as
    /// [`crate::EtcdStore`] connects) and [starts](Self::start) following
    /// the members of `kind` under its prefix.
    pub async fn connect(
        config: &crate::EtcdConfig,
        kind: &str,
    ) -> Result<MemberWatch, etcd_client::Error> {
        let (endpoints, options) = config
            .client_options()
            .map_err(etcd_client::Error::InvalidArgs)?;
        let client = Client::connect(endpoints, Some(options)).await?;
        Self::start(client, &config.prefix, kind).await
    }

    /// Follows the members of `kind` from `from`, a set seen earlier (its
    /// revision is the resume point): the changes since are applied, or
    /// the set is listed again when etcd has compacted them away.
    pub fn resume(client: Client, prefix: &str, kind: &str, from: Members) -> MemberWatch {
        Self::spawn(client, directory(prefix, kind), from)
    }

    fn spawn(client: Client, dir: String, members: Members) -> MemberWatch {
        let current = Arc::new(ArcSwap::from_pointee(members.clone()));
        let (changed_tx, changed) = tokio::sync::watch::channel(members.revision);
        let relists = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(follow(
            client,
            dir,
            members,
            current.clone(),
            changed_tx,
            relists.clone(),
        ));
        MemberWatch {
            current,
            changed,
            relists,
            task,
        }
    }

    /// The live set as last seen (lock-free).
    pub fn current(&self) -> Arc<Members> {
        self.current.load_full()
    }

    /// Changes to the revision of the live set, to wait for the next one.
    pub fn changed(&self) -> tokio::sync::watch::Receiver<i64> {
        self.changed.clone()
    }

    /// How many times the set was listed again because etcd had compacted
    /// past the resume point.
    pub fn relists(&self) -> u64 {
        self.relists.load(Ordering::Relaxed)
    }
}

/// The watch loop: follow, list again on compaction, re-open on failure.
async fn follow(
    mut client: Client,
    dir: String,
    mut members: Members,
    current: Arc<ArcSwap<Members>>,
    changed: tokio::sync::watch::Sender<i64>,
    relists: Arc<AtomicU64>,
) {
    const BACKOFF_MAX: Duration = Duration::from_secs(5);
    let mut backoff = Duration::from_millis(100);
    let kind = dir
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let live = metrics::gauge!("switchyard_members", "kind" => kind.clone());
    let relisted = metrics::counter!("switchyard_member_relists_total", "kind" => kind);
    let publish = |m: &Members| {
        current.store(Arc::new(m.clone()));
        changed.send_replace(m.revision);
        live.set(m.list.len() as f64);
    };
    publish(&members);
    loop {
        match watch_from(&mut client, &dir, &mut members, &publish).await {
            Ended::Compacted => match list(&mut client, &dir).await {
                Ok(listed) => {
                    relists.fetch_add(1, Ordering::Relaxed);
                    relisted.increment(1);
                    tracing::info!(dir = %dir, revision = listed.revision, "member watch compacted; listed again");
                    members = listed;
                    publish(&members);
                    backoff = Duration::from_millis(100);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(dir = %dir, error = %e, "cannot list members; retrying");
                }
            },
            Ended::Broken(why) => {
                tracing::warn!(dir = %dir, error = %why, "member watch broke; resuming");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One watch stream from `members.revision + 1`, applying each response to
/// `members` and publishing it, until the stream ends.
async fn watch_from(
    client: &mut Client,
    dir: &str,
    members: &mut Members,
    publish: &impl Fn(&Members),
) -> Ended {
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(members.revision + 1);
    let mut stream = match client.watch(dir, Some(options)).await {
        Ok(s) => s,
        Err(e) => return Ended::Broken(e.to_string()),
    };
    loop {
        let resp = match stream.message().await {
            Ok(Some(resp)) => resp,
            Ok(None) => return Ended::Broken("the watch stream ended".into()),
            Err(e) => return Ended::Broken(e.to_string()),
        };
        if resp.canceled() {
            // etcd 3.4 sends `created` first, then this, for a compacted start.
            if resp.compact_revision() > 0 {
                return Ended::Compacted;
            }
            return Ended::Broken(format!("watch cancelled: {}", resp.cancel_reason()));
        }
        // The resume point moves only with events, never with a progress
        // response's header.
        let mut last = members.revision;
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            last = last.max(kv.mod_revision());
            match event.event_type() {
                EventType::Put => {
                    if let Some(m) = member_of(dir, kv) {
                        members.upsert(m);
                    }
                }
                EventType::Delete => {
                    if let Some(id) = kv.key_str().ok().and_then(|k| k.strip_prefix(dir)) {
                        members.remove(id);
                    }
                }
            }
        }
        if last > members.revision {
            members.revision = last;
            publish(members);
        }
    }
}
