//! App-owner routing for routers running apart (`switchyard router
//! --store etcd://… --advertise HOST:PORT`): the router registers as a
//! member of kind `router` (`control::members`) and answers the router's
//! question "who owns this app?" ([`router::forward::Owners`]) by
//! rendezvous over the live routers, so every router sends an app's
//! requests to the same one and the app has one queue.
//!
//! The live set is followed by a [`MemberWatch`]; on each change a new
//! [`View`] (the members, a [`Peer`] with its connection pool for each
//! other router, the addresses trusted to send forwarded requests) is
//! swapped in whole. A request reads it with one `ArcSwap` load.
//!
//! Rendezvous costs one 64-bit hash of (member id, app id) per member:
//! 0.18 µs a request with 3 routers, 0.65 µs with 10, 1.4 µs with 20 (about
//! 4 % of a small request's whole cost at 10); so each worker thread
//! remembers the owner of the apps it has routed under the current view (a
//! thread-local map, cleared when the view changes): 39–42 ns a request
//! whatever the number of routers, and the hashes run once per app, thread
//! and membership change (`owner_lookups_from_the_cache_agree_with_rendezvous`,
//! run in release with `--ignored --nocapture`).
//!
//! The big-app line: an app whose requests over all routers pass
//! `--forward-max-rate` (5,000/s) is routed where its requests arrive, each
//! router queueing its own share: forwarding costs a second proxy pass per
//! request, an owner carries one app only up to what one router carries,
//! and an app that busy has enough dynos behind each router's share that
//! per-router least-outstanding loses little. Each worker thread estimates
//! the rate from the requests it sees itself (times threads, times routers),
//! so the line needs no shared counter.
//!
//! The router routes every app itself while it is not in the set it
//! watches (not registered yet, etcd unreachable at start, its lease
//! expired): owner routing is for the queue's quality, never a condition
//! for serving.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use control::members::{weight, MemberInfo, MemberWatch, Members, Registration};
use router::forward::{Owners, Peer};
use tokio_util::sync::CancellationToken;

/// The member kind routers register as.
const KIND: &str = "router";

/// The address purpose a router advertises for forwarded requests.
const HTTP: &str = "http";

/// One member of the live set as the request path needs it.
#[derive(Debug)]
struct Slot {
    id: String,
    /// `None` for this router itself (or a member whose address does not
    /// resolve: its apps are routed here).
    peer: Option<Arc<Peer>>,
}

/// The live routers as of one etcd revision.
#[derive(Debug, Default)]
struct View {
    /// Bumped on each swap; thread caches are valid for one generation.
    generation: u64,
    /// Sorted by id (as [`Members`] is).
    slots: Vec<Slot>,
    /// Whether this router is in the set: if not, it routes everything.
    present: bool,
    /// The other routers' addresses: forwarded requests from them carry
    /// forwarding headers to keep.
    trusted: Vec<IpAddr>,
}

/// This router's answer to "who owns this app?".
#[derive(Debug)]
pub struct Ring {
    /// This router's member id (its advertised address).
    id: String,
    view: ArcSwap<View>,
    /// The big-app line: an app whose estimated rate over all routers
    /// passes this many requests a second is routed where its requests
    /// arrive (0: always forward).
    max_rate: u64,
    /// This router's worker threads, for the estimate.
    threads: u64,
}

/// View generations, unique in the process (so two rings never share a
/// thread's cache entries).
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

/// What one thread knows of one app: its owner, and how many of its
/// requests this thread saw since `window` (router clock, ms).
#[derive(Debug)]
struct Entry {
    owner: Option<Arc<Peer>>,
    window: u64,
    seen: u64,
    /// Past the big-app line in the last window: routed here.
    big: bool,
}

/// What one thread knows (by app id) under view generation `.0`.
type Cache = (u64, HashMap<Box<str>, Entry>);

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new((u64::MAX, HashMap::new()));
}

impl Ring {
    /// A ring for the router `id` that owns everything until the first
    /// live set arrives, and forwards an app however busy it is.
    #[cfg(test)]
    pub fn new(id: &str) -> Arc<Ring> {
        Ring::with_line(id, 0, 1)
    }

    /// A ring that stops forwarding an app past `max_rate` requests a
    /// second over all routers (0: never stops), as estimated by each of
    /// this router's `threads` worker threads from what it sees itself.
    pub fn with_line(id: &str, max_rate: u64, threads: usize) -> Arc<Ring> {
        Arc::new(Ring {
            id: id.to_string(),
            view: ArcSwap::from_pointee(View::default()),
            max_rate,
            threads: threads.max(1) as u64,
        })
    }

    /// Counts a request for `entry`'s app and says whether the app is past
    /// the big-app line. The estimate assumes the app's requests spread
    /// evenly over routers and their threads (what DNS round-robin and
    /// accept sharing give): this thread's rate over the last window
    /// (≥ 1 s), times threads, times routers. No shared state: each thread
    /// decides from its own share.
    fn past_line(&self, entry: &mut Entry, routers: u64) -> bool {
        if self.max_rate == 0 {
            return false;
        }
        let now = router::clock::now_ms();
        entry.seen += 1;
        let elapsed = now.saturating_sub(entry.window);
        if elapsed >= 1000 {
            let rate = entry.seen * 1000 / elapsed * self.threads * routers;
            entry.big = rate > self.max_rate;
            entry.window = now;
            entry.seen = 0;
        }
        entry.big
    }

    /// Swaps in the view of `members`, keeping the pools of routers still
    /// there at the same address.
    async fn apply(&self, members: &Members) {
        let old = self.view.load_full();
        let mut slots = Vec::with_capacity(members.list.len());
        let mut trusted = Vec::new();
        for m in &members.list {
            if m.id == self.id {
                slots.push(Slot {
                    id: m.id.clone(),
                    peer: None,
                });
                continue;
            }
            let address = resolve(&m.info).await;
            if let Some(a) = address {
                trusted.push(a.ip());
            }
            let kept = old
                .slots
                .iter()
                .find(|s| s.id == m.id)
                .and_then(|s| s.peer.clone())
                .filter(|p| Some(p.address) == address);
            let peer = kept.or_else(|| address.map(|a| Arc::new(Peer::new(m.id.as_str(), a))));
            slots.push(Slot {
                id: m.id.clone(),
                peer,
            });
        }
        trusted.sort_unstable();
        trusted.dedup();
        let present = members.get(&self.id).is_some();
        let generation = GENERATIONS.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            routers = slots.len(),
            present,
            revision = members.revision,
            "live routers changed; app owners follow"
        );
        metrics::gauge!("router_live_routers").set(slots.len() as f64);
        self.view.store(Arc::new(View {
            generation,
            slots,
            present,
            trusted,
        }));
    }

    /// Rendezvous over `view`: the slot with the highest weight for
    /// `app_id` (ties to the smaller id, as `control::members::owner`).
    fn rendezvous(view: &View, app_id: &str) -> Option<Arc<Peer>> {
        view.slots
            .iter()
            .max_by(|a, b| {
                weight(&a.id, app_id)
                    .cmp(&weight(&b.id, app_id))
                    .then_with(|| b.id.cmp(&a.id))
            })
            .and_then(|s| s.peer.clone())
    }
}

impl Owners for Ring {
    fn owner(&self, app_id: &str) -> Option<Arc<Peer>> {
        let view = self.view.load();
        if !view.present {
            return None;
        }
        CACHE.with(|cache| {
            let Ok(mut cache) = cache.try_borrow_mut() else {
                return Ring::rendezvous(&view, app_id);
            };
            let (generation, owners) = &mut *cache;
            if *generation != view.generation {
                owners.clear();
                *generation = view.generation;
            }
            let entry = match owners.get_mut(app_id) {
                Some(entry) => entry,
                None => owners.entry(app_id.into()).or_insert(Entry {
                    owner: Ring::rendezvous(&view, app_id),
                    window: router::clock::now_ms(),
                    seen: 0,
                    big: false,
                }),
            };
            entry.owner.as_ref()?;
            if self.past_line(entry, view.slots.len() as u64) {
                return None;
            }
            entry.owner.clone()
        })
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.view.load().trusted.contains(&ip)
    }

    fn id(&self) -> &str {
        &self.id
    }
}

/// A member's HTTP address, resolved when it is a host name.
async fn resolve(info: &MemberInfo) -> Option<SocketAddr> {
    let text = info.addresses.get(HTTP)?;
    if let Ok(a) = text.parse() {
        return Some(a);
    }
    match tokio::net::lookup_host(text.as_str()).await {
        Ok(mut addrs) => addrs.next(),
        Err(e) => {
            tracing::warn!(address = %text, error = %e, "a router's advertised address does not resolve; its apps are routed here");
            None
        }
    }
}

/// Registers this router as `advertise` under a lease of `ttl`, follows
/// the live routers into `ring`, and leaves the set when `stop` is
/// cancelled (so its apps move at once, not after the TTL). Retries etcd
/// with back-off; until it is in, the router routes everything itself.
pub async fn follow(
    config: control::EtcdConfig,
    advertise: String,
    ttl: Duration,
    ring: Arc<Ring>,
    stop: CancellationToken,
) {
    let info = MemberInfo {
        addresses: [(HTTP.to_string(), advertise.clone())].into(),
    };
    let mut wait = Duration::from_millis(100);
    let (member, watch) = loop {
        let joined = async {
            let (endpoints, options) = config
                .client_options()
                .map_err(etcd_client::Error::InvalidArgs)?;
            let client = etcd_client::Client::connect(endpoints, Some(options)).await?;
            let member =
                Registration::start(client.clone(), &config.prefix, KIND, &advertise, &info, ttl)
                    .await?;
            let watch = MemberWatch::start(client, &config.prefix, KIND).await?;
            Ok::<_, etcd_client::Error>((member, watch))
        };
        tokio::select! {
            joined = joined => match joined {
                Ok(joined) => break joined,
                Err(e) => tracing::warn!(error = %e, "cannot join the live routers in etcd (--advertise); routing every app here and retrying"),
            },
            _ = stop.cancelled() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
        wait = (wait * 2).min(Duration::from_secs(5));
    };
    tracing::info!(key = member.key(), "registered as a live router");
    let mut changed = watch.changed();
    ring.apply(&watch.current()).await;
    loop {
        tokio::select! {
            c = changed.changed() => {
                if c.is_err() {
                    break;
                }
                ring.apply(&watch.current()).await;
            }
            _ = stop.cancelled() => break,
        }
    }
    // Route everything here from now on; the others see the leave.
    ring.view.store(Arc::new(View::default()));
    if let Err(e) = member.leave().await {
        tracing::warn!(error = %e, "could not leave the live routers; the lease will expire");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::members::Member;

    fn members(ids: &[&str]) -> Members {
        Members {
            revision: 1,
            list: ids
                .iter()
                .map(|id| Member {
                    id: id.to_string(),
                    info: MemberInfo {
                        addresses: [(HTTP.to_string(), id.to_string())].into(),
                    },
                    lease: 1,
                    created: 1,
                })
                .collect(),
        }
    }

    #[tokio::test]
    async fn every_router_names_the_same_owner_and_control_agrees() {
        let ids = ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"];
        let set = members(&ids);
        let rings: Vec<_> = ids.iter().map(|id| Ring::new(id)).collect();
        for ring in &rings {
            ring.apply(&set).await;
        }
        for app in ["app-1", "app-2", "app-3", "app-4", "app-5", "app-6"] {
            let owner = set.owner(app).expect("owner").id.clone();
            for ring in &rings {
                let answer = ring.owner(app).map(|p| p.id.to_string());
                // Twice: the second answer comes from the thread's cache.
                assert_eq!(ring.owner(app).map(|p| p.id.to_string()), answer);
                if ring.id == owner {
                    assert_eq!(answer, None, "the owner routes {app} itself");
                } else {
                    assert_eq!(answer.as_deref(), Some(owner.as_str()));
                }
            }
        }
        assert!(rings[0].trusts("127.0.0.1".parse().expect("ip")));
        assert!(!rings[0].trusts("10.9.9.9".parse().expect("ip")));
    }

    /// Also a measurement of what the request path pays for the owner
    /// (printed, not asserted; the timing loops run only in release):
    /// `cargo test --release --bin switchyard owner_lookups -- --nocapture`.
    #[tokio::test]
    async fn owner_lookups_from_the_cache_agree_with_rendezvous() {
        let apps: Vec<String> = (0..1000)
            .map(|i| format!("{i:08x}-5a1e-4c2b-9d3f-0123456789ab"))
            .collect();
        for n in [3, 10, 20] {
            let ids: Vec<String> = (0..n).map(|i| format!("10.0.0.{i}:8080")).collect();
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            let ring = Ring::new(refs[0]);
            ring.apply(&members(&refs)).await;
            let view = ring.view.load_full();
            let rounds = if cfg!(debug_assertions) { 1 } else { 200 };
            let t = std::time::Instant::now();
            for _ in 0..rounds {
                for app in &apps {
                    std::hint::black_box(Ring::rendezvous(&view, app));
                }
            }
            let hashed = t.elapsed() / (rounds * apps.len() as u32);
            let t = std::time::Instant::now();
            for _ in 0..rounds {
                for app in &apps {
                    std::hint::black_box(ring.owner(app));
                }
            }
            let cached = t.elapsed() / (rounds * apps.len() as u32);
            println!("{n} routers: rendezvous {hashed:?} per request, cached {cached:?}");
            for app in &apps {
                let expected = Ring::rendezvous(&view, app).map(|p| p.id.clone());
                assert_eq!(ring.owner(app).map(|p| p.id.clone()), expected);
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_app_past_the_big_app_line_is_routed_where_it_arrives() {
        // The router clock's base is process-wide: another paused-time test
        // may have set it ahead of this runtime's clock, which would hold
        // the clock still here.
        let base = router::clock::instant_at(1);
        let now = tokio::time::Instant::now();
        if now < base {
            tokio::time::advance(base - now).await;
        }
        let ids = ["127.0.0.1:7001", "127.0.0.1:7002"];
        let ring = Ring::with_line(ids[0], 100, 1);
        ring.apply(&members(&ids)).await;
        let app = (0..100)
            .map(|i| format!("app-{i}"))
            .find(|a| ring.owner(a).is_some())
            .expect("an app the other router owns");
        // 60 requests in the first second: forwarded while the window runs.
        for _ in 0..60 {
            assert!(ring.owner(&app).is_some());
        }
        // Over the second: 61 here × 2 routers ≈ 122/s > 100/s, so the
        // app is big, and routed here, until a quiet window.
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert!(ring.owner(&app).is_none(), "past the line: routed here");
        for _ in 0..10 {
            assert!(ring.owner(&app).is_none());
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(ring.owner(&app).is_some(), "quiet again: forwarded");
        // No line: forwarded however busy.
        let always = Ring::new(ids[0]);
        always.apply(&members(&ids)).await;
        for _ in 0..1000 {
            assert!(always.owner(&app).is_some());
        }
    }

    #[tokio::test]
    async fn a_router_outside_the_set_routes_everything_and_a_change_moves_owners() {
        let ring = Ring::new("127.0.0.1:7009");
        assert!(ring.owner("app-1").is_none(), "no view yet");
        ring.apply(&members(&["127.0.0.1:7001"])).await;
        assert!(ring.owner("app-1").is_none(), "not registered: routes here");
        ring.apply(&members(&["127.0.0.1:7001", "127.0.0.1:7009"]))
            .await;
        let before: Vec<_> = (0..20)
            .map(|i| ring.owner(&format!("app-{i}")).is_some())
            .collect();
        assert!(before.iter().any(|f| *f) && before.iter().any(|f| !*f));
        // The other router leaves: every app is this router's, at once
        // (the cache belongs to the old view).
        ring.apply(&members(&["127.0.0.1:7009"])).await;
        assert!((0..20).all(|i| ring.owner(&format!("app-{i}")).is_none()));
    }
}
