//! [`Registration`]: this process's record under a kept-alive lease, and
//! the [`Fence`] that says the lease is surely alive.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper, PutOptions};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{directory, MemberInfo, Members};

/// Proof, on this node's clock, that its lease is alive in etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    /// The lease the node's record is attached to.
    pub lease: i64,
    /// When the last keep-alive (or the grant) etcd acknowledged was sent,
    /// plus the TTL: before this instant etcd cannot have expired the lease.
    pub valid_until: Instant,
}

impl Fence {
    /// Whether the lease is surely alive at `now`.
    pub fn holds_at(&self, now: Instant) -> bool {
        now < self.valid_until
    }
}

/// Whether node `id`, with `fence`, acts as the owner of `key` given the
/// live set `members` at `now` (the rule in the module docs).
pub fn acts_as_owner(
    id: &str,
    fence: Option<Fence>,
    now: Instant,
    key: &str,
    members: &Members,
) -> bool {
    let Some(fence) = fence.filter(|f| f.holds_at(now)) else {
        return false;
    };
    members
        .owner(key)
        .is_some_and(|m| m.id == id && m.lease == fence.lease)
}

/// [`Registration::owner_check`]: the fence rule for one registration.
#[derive(Debug, Clone)]
pub struct OwnerCheck {
    id: String,
    fence: Arc<ArcSwapOption<Fence>>,
}

impl OwnerCheck {
    /// The member id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The fence in force, if it still holds.
    pub fn fence(&self) -> Option<Fence> {
        self.fence
            .load()
            .as_deref()
            .copied()
            .filter(|f| f.holds_at(Instant::now()))
    }

    /// Whether the registration acts as the owner of `key` given `members`.
    pub fn acts_as_owner(&self, key: &str, members: &Members) -> bool {
        acts_as_owner(
            &self.id,
            self.fence.load().as_deref().copied(),
            Instant::now(),
            key,
            members,
        )
    }
}

/// This process's record under a kept-alive lease (see the module docs).
/// [`Registration::leave`] revokes it; dropping it only stops the
/// keep-alives, so etcd removes the record after the TTL.
pub struct Registration {
    /// The member id, and the fence of the lease in force (`None` between
    /// an expiry and the next registration; written by the keep-alive
    /// task, read lock-free).
    check: OwnerCheck,
    /// `<prefix>/members/<kind>/<id>`.
    key: String,
    /// For revoking on leave.
    client: Client,
    /// The keep-alive loop; aborted on drop.
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("key", &self.key)
            .field("fence", &self.check.fence.load())
            .finish_non_exhaustive()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The lease TTL etcd is asked for, in whole seconds (at least 1).
fn ttl_secs(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX)
}

/// Grants a lease and puts the record under it; returns the fence.
async fn register(
    client: &mut Client,
    key: &str,
    value: &[u8],
    ttl: Duration,
) -> Result<Fence, etcd_client::Error> {
    let sent = Instant::now();
    let grant = client.lease_grant(ttl_secs(ttl), None).await?;
    client
        .put(key, value, Some(PutOptions::new().with_lease(grant.id())))
        .await?;
    Ok(Fence {
        lease: grant.id(),
        valid_until: sent + Duration::from_secs(grant.ttl().max(0).unsigned_abs()),
    })
}

impl Registration {
    /// Registers `id` as a member of `kind` under `prefix` with a lease of
    /// `ttl` (whole seconds; etcd raises a TTL below its minimum) and keeps
    /// it alive every third of the TTL; returns once the record is in etcd.
    pub async fn start(
        mut client: Client,
        prefix: &str,
        kind: &str,
        id: &str,
        info: &MemberInfo,
        ttl: Duration,
    ) -> Result<Registration, etcd_client::Error> {
        let key = format!("{}{id}", directory(prefix, kind));
        let value = serde_json::to_vec(info).unwrap_or_default();
        let first = register(&mut client, &key, &value, ttl).await?;
        let fence = Arc::new(ArcSwapOption::from_pointee(first));
        let task = tokio::spawn(keep(
            client.clone(),
            key.clone(),
            value,
            ttl,
            first.lease,
            fence.clone(),
        ));
        Ok(Registration {
            check: OwnerCheck {
                id: id.to_string(),
                fence,
            },
            key,
            client,
            task,
        })
    }

    /// This member's id.
    pub fn id(&self) -> &str {
        self.check.id()
    }

    /// Its etcd key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The fence while it holds; `None` once the lease may have expired
    /// (and until a new registration is acknowledged).
    pub fn fence(&self) -> Option<Fence> {
        self.check.fence()
    }

    /// A handle that answers [`acts_as_owner`](Self::acts_as_owner) for
    /// this registration from elsewhere (a placement read per change),
    /// and stops answering yes once the registration is left.
    pub fn owner_check(&self) -> OwnerCheck {
        self.check.clone()
    }

    /// Whether this node acts as the owner of `key` given the live set
    /// `members` (the fence rule in the module docs).
    pub fn acts_as_owner(&self, key: &str, members: &Members) -> bool {
        self.check.acts_as_owner(key, members)
    }

    /// Leaves at once: stops the keep-alives and revokes the lease, which
    /// deletes the record before this returns.
    pub async fn leave(mut self) -> Result<(), etcd_client::Error> {
        self.task.abort();
        let lease = self.check.fence.swap(None).map(|f| f.lease);
        match lease {
            Some(lease) => self.client.lease_revoke(lease).await.map(|_| ()),
            None => Ok(()),
        }
    }
}

/// How a keep-alive session ended.
enum KeepEnded {
    /// etcd says the lease is gone: register again.
    Expired,
    /// The stream failed or stalled: try the same lease again.
    Broken(String),
}

/// The keep-alive loop: keeps the lease, re-opens a broken stream, and
/// registers again under a new lease when etcd has expired the old one.
async fn keep(
    mut client: Client,
    key: String,
    value: Vec<u8>,
    ttl: Duration,
    mut lease: i64,
    fence: Arc<ArcSwapOption<Fence>>,
) {
    let period = (ttl / 3).max(Duration::from_millis(100));
    loop {
        match keep_alive(&mut client, lease, ttl, period, &fence).await {
            KeepEnded::Broken(why) => {
                tracing::warn!(key = %key, error = %why, "lease keep-alive broke; retrying");
                tokio::time::sleep(period).await;
            }
            KeepEnded::Expired => {
                fence.store(None);
                tracing::warn!(key = %key, lease, "the lease expired; registering again");
                loop {
                    let registered =
                        tokio::time::timeout(ttl, register(&mut client, &key, &value, ttl)).await;
                    match registered {
                        Ok(Ok(f)) => {
                            lease = f.lease;
                            fence.store(Some(Arc::new(f)));
                            break;
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(key = %key, error = %e, "cannot register; retrying");
                        }
                        Err(_) => tracing::warn!(key = %key, "etcd did not answer; retrying"),
                    }
                    tokio::time::sleep(period).await;
                }
            }
        }
    }
}

/// One keep-alive stream for `lease`: a request every `period`, each
/// answer extending the fence from when its request was sent. Opening the
/// stream sends the first request and reads its answer (etcd-client does;
/// it reports a lease etcd no longer has as an error, which is expiry
/// here), so requests and answers pair one to one. A request not answered
/// within `period` (a hung etcd) ends the stream; the fence then lapses on
/// its own.
async fn keep_alive(
    client: &mut Client,
    lease: i64,
    ttl: Duration,
    period: Duration,
    fence: &ArcSwapOption<Fence>,
) -> KeepEnded {
    let mut sent = Instant::now();
    let opened = tokio::time::timeout(period, client.lease_keep_alive(lease)).await;
    let (mut keeper, mut stream): (LeaseKeeper, LeaseKeepAliveStream) = match opened {
        Ok(Ok(pair)) => pair,
        Ok(Err(etcd_client::Error::LeaseKeepAliveError(_))) => return KeepEnded::Expired,
        Ok(Err(e)) => return KeepEnded::Broken(e.to_string()),
        Err(_) => return KeepEnded::Broken("no keep-alive stream in time".into()),
    };
    // The first answer's TTL is not handed out; etcd never grants less
    // than asked, so the asked TTL is the safe bound.
    let mut answered = ttl_secs(ttl);
    loop {
        fence.store(Some(Arc::new(Fence {
            lease,
            valid_until: sent + Duration::from_secs(answered.unsigned_abs()),
        })));
        tokio::time::sleep_until(sent + period).await;
        sent = Instant::now();
        if let Err(e) = keeper.keep_alive().await {
            return KeepEnded::Broken(e.to_string());
        }
        let resp = match tokio::time::timeout(period, stream.message()).await {
            Ok(Ok(Some(resp))) => resp,
            Ok(Ok(None)) => return KeepEnded::Broken("the keep-alive stream ended".into()),
            Ok(Err(e)) => return KeepEnded::Broken(e.to_string()),
            Err(_) => return KeepEnded::Broken("no keep-alive answer in time".into()),
        };
        if resp.ttl() <= 0 {
            return KeepEnded::Expired;
        }
        answered = resp.ttl();
    }
}
