//! Membership in a real etcd: registration under a lease, the live set
//! every member sees, expiry and revocation, re-listing after compaction,
//! re-registration under a new lease, and rendezvous ownership.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use control::members::{
    acts_as_owner, owner, Fence, Member, MemberInfo, MemberWatch, Members, Registration,
};
use etcd_client::{Client, GetOptions};

use crate::etcd_server::Etcd;
use crate::support::{eventually, TempDir};

/// etcd's shortest lease on its default timers is about 2 s.
const TTL: Duration = Duration::from_secs(2);

async fn client(etcd: &Etcd) -> Client {
    Client::connect([format!("http://{}", etcd.endpoint)], None)
        .await
        .expect("connect to etcd")
}

fn info(addr: &str) -> MemberInfo {
    MemberInfo {
        addresses: BTreeMap::from([("syslog".to_string(), addr.to_string())]),
    }
}

async fn join(etcd: &Etcd, id: &str, addr: &str) -> Registration {
    Registration::start(client(etcd).await, "/sy", "logplex", id, &info(addr), TTL)
        .await
        .expect("register")
}

fn ids(members: &Members) -> Vec<String> {
    members.list.iter().map(|m| m.id.clone()).collect()
}

async fn wait_for(watch: &MemberWatch, what: &str, want: &[&str]) {
    eventually(what, || {
        let now = ids(&watch.current()) == want;
        async move { now }
    })
    .await;
}

/// A watch of the logplex members, and members `a` and `b` it shows.
async fn watched_pair(etcd: &Etcd) -> (MemberWatch, Registration, Registration) {
    let watch = MemberWatch::start(client(etcd).await, "/sy", "logplex")
        .await
        .expect("watch");
    let a = join(etcd, "a", "10.0.0.1:6001").await;
    let b = join(etcd, "b", "10.0.0.2:6001").await;
    wait_for(&watch, "both live", &["a", "b"]).await;
    (watch, a, b)
}

#[tokio::test]
async fn two_members_register_and_each_sees_both() {
    let dir = TempDir::new("etcd");
    let etcd = Etcd::start(&dir.0);
    let a = join(&etcd, "a", "10.0.0.1:6001").await;
    let watch_a = MemberWatch::start(client(&etcd).await, "/sy", "logplex")
        .await
        .expect("watch");
    let b = join(&etcd, "b", "10.0.0.2:6001").await;
    let watch_b = MemberWatch::start(client(&etcd).await, "/sy", "logplex")
        .await
        .expect("watch");
    wait_for(&watch_a, "a sees both", &["a", "b"]).await;
    wait_for(&watch_b, "b sees both", &["a", "b"]).await;
    let seen = watch_a.current();
    let member_b = seen.get("b").expect("b");
    assert_eq!(member_b.info, info("10.0.0.2:6001"));
    assert_eq!(
        Some(member_b.lease),
        b.fence().map(|f| f.lease),
        "the record is under b's lease"
    );
    // Another kind, or another prefix, is another set.
    let routers = MemberWatch::start(client(&etcd).await, "/sy", "router")
        .await
        .expect("watch");
    assert!(routers.current().list.is_empty());
    // Both compute the same owner for every key, and exactly one of them
    // acts on it.
    let (seen_a, seen_b) = (watch_a.current(), watch_b.current());
    for n in 0..500 {
        let key = format!("app-{n}");
        assert_eq!(
            seen_a.owner(&key).map(|m| &m.id),
            seen_b.owner(&key).map(|m| &m.id)
        );
        let acting = [&a, &b]
            .iter()
            .filter(|r| r.acts_as_owner(&key, &seen_a))
            .count();
        assert_eq!(acting, 1, "{key}");
    }
}

#[tokio::test]
async fn a_member_that_stops_keeping_alive_is_gone_after_its_ttl() {
    let dir = TempDir::new("etcd");
    let etcd = Etcd::start(&dir.0);
    let (watch, a, b) = watched_pair(&etcd).await;
    // A keep-alive answered: the fence moved past the grant's.
    let granted = a.fence().expect("fence");
    let lease = granted.lease;
    let mut kv = client(&etcd).await;
    eventually("a keep-alive renews a's lease", || {
        let fence = a.fence();
        async move { fence.is_some_and(|f| f.valid_until > granted.valid_until) }
    })
    .await;
    // The process stops without revoking: etcd removes it after the TTL.
    drop(a);
    wait_for(&watch, "a expired", &["b"]).await;
    let left = kv
        .lease_time_to_live(lease, None)
        .await
        .expect("lease status");
    assert!(left.ttl() <= 0, "a's lease expired: ttl {}", left.ttl());
    assert!(b.fence().is_some(), "b, kept alive, holds its lease");
}

#[tokio::test]
async fn a_member_that_leaves_is_gone_at_once() {
    let dir = TempDir::new("etcd");
    let etcd = Etcd::start(&dir.0);
    let (watch, a, _b) = watched_pair(&etcd).await;
    let key = a.key().to_string();
    a.leave().await.expect("leave");
    // Revoking deletes the record before `leave` returns.
    let mut kv = client(&etcd).await;
    let left = kv.get(key.as_str(), None).await.expect("get");
    assert!(left.kvs().is_empty(), "{key} is gone at once");
    wait_for(&watch, "the watch drops a", &["b"]).await;
}

#[tokio::test]
async fn after_compaction_the_watch_lists_again() {
    let dir = TempDir::new("etcd");
    let etcd = Etcd::start(&dir.0);
    let a = join(&etcd, "a", "10.0.0.1:6001").await;
    let _b = join(&etcd, "b", "10.0.0.2:6001").await;
    let earlier = {
        let watch = MemberWatch::start(client(&etcd).await, "/sy", "logplex")
            .await
            .expect("watch");
        watch.current()
    };
    assert_eq!(ids(&earlier), ["a", "b"]);
    // While nobody watches: a leaves, c joins, and etcd forgets the history.
    a.leave().await.expect("leave");
    let _c = join(&etcd, "c", "10.0.0.3:6001").await;
    etcd.compact_all();
    let watch = MemberWatch::resume(client(&etcd).await, "/sy", "logplex", (*earlier).clone());
    wait_for(&watch, "the set after compaction", &["b", "c"]).await;
    assert_eq!(
        watch.relists(),
        1,
        "one re-list, from the compacted revision"
    );
    assert!(watch.current().revision > earlier.revision);
    // And it keeps following after the re-list.
    let _d = join(&etcd, "d", "10.0.0.4:6001").await;
    wait_for(&watch, "d joins after the re-list", &["b", "c", "d"]).await;
    assert_eq!(watch.relists(), 1);
}

#[tokio::test]
async fn a_watch_resumed_from_a_kept_revision_replays_without_listing() {
    let dir = TempDir::new("etcd");
    let etcd = Etcd::start(&dir.0);
    let a = join(&etcd, "a", "10.0.0.1:6001").await;
    let earlier = MemberWatch::start(client(&etcd).await, "/sy", "logplex")
        .await
        .expect("watch")
        .current();
    let _b = join(&etcd, "b", "10.0.0.2:6001").await;
    a.leave().await.expect("leave");
    let watch = MemberWatch::resume(client(&etcd).await, "/sy", "logplex", (*earlier).clone());
    wait_for(&watch, "the changes since", &["b"]).await;
    assert_eq!(watch.relists(), 0);
}

#[tokio::test]
async fn a_member_whose_lease_was_expired_registers_again_and_owns_only_under_the_new_lease() {
    let dir = TempDir::new("etcd");
    let etcd = Etcd::start(&dir.0);
    let watch = MemberWatch::start(client(&etcd).await, "/sy", "logplex")
        .await
        .expect("watch");
    let a = join(&etcd, "a", "10.0.0.1:6001").await;
    wait_for(&watch, "a live", &["a"]).await;
    let old = a.fence().expect("fence");
    assert!(
        a.acts_as_owner("app-1", &watch.current()),
        "the only member owns"
    );
    let before = watch.current();

    // etcd drops a's lease behind its back (what expiry does to a paused
    // process).
    client(&etcd)
        .await
        .lease_revoke(old.lease)
        .await
        .expect("revoke");
    // The set as it stood still names a under the old lease: a must not act
    // on it once its fence names another lease.
    let renewed = crate::support::eventually_some("a registers under a new lease", || {
        let fence = a.fence();
        async move { fence.filter(|f| f.lease != old.lease) }
    })
    .await;
    assert!(
        !a.acts_as_owner("app-1", &before),
        "the record under the old lease gives no ownership"
    );
    eventually("the watch shows a under its new lease", || {
        let now = watch.current().get("a").map(|m| m.lease) == Some(renewed.lease);
        async move { now }
    })
    .await;
    assert!(a.acts_as_owner("app-1", &watch.current()));
}

fn member(id: &str, lease: i64) -> Member {
    Member {
        id: id.to_string(),
        info: MemberInfo::default(),
        lease,
        created: 1,
    }
}

fn set(ids: &[&str]) -> Members {
    let mut list: Vec<Member> = ids.iter().map(|id| member(id, 7)).collect();
    list.sort_by(|a, b| a.id.cmp(&b.id));
    Members { revision: 1, list }
}

#[test]
fn every_key_has_one_owner_the_same_everywhere_and_leaving_moves_only_the_leavers_keys() {
    let all = [
        "logplex-1",
        "logplex-2",
        "logplex-3",
        "logplex-4",
        "logplex-5",
    ];
    let members = set(&all);
    let keys: Vec<String> = (0..20_000).map(|n| format!("app-{n:05}")).collect();
    let owners: HashMap<&str, &str> = keys
        .iter()
        .map(|k| {
            (
                k.as_str(),
                owner(k, &members.list).expect("an owner").id.as_str(),
            )
        })
        .collect();

    // Any order of the same set gives the same owner.
    let mut reversed = members.list.clone();
    reversed.reverse();
    for k in &keys {
        assert_eq!(
            owner(k, &reversed).map(|m| m.id.as_str()),
            Some(owners[k.as_str()])
        );
    }
    // Balanced within ±15 % of an even share.
    for id in all {
        let n = owners.values().filter(|o| **o == id).count();
        assert!((3_400..=4_600).contains(&n), "{id} owns {n} of 20000");
    }
    // Removing a member moves only its keys; each to a remaining member.
    for gone in all {
        let rest: Vec<&str> = all.iter().copied().filter(|id| *id != gone).collect();
        let fewer = set(&rest);
        for k in &keys {
            let now = owner(k, &fewer.list).expect("an owner").id.as_str();
            if owners[k.as_str()] == gone {
                assert_ne!(now, gone);
            } else {
                assert_eq!(now, owners[k.as_str()], "{k} moved though {gone} left");
            }
        }
    }
    // Adding a member moves keys only to it.
    let mut more = all.to_vec();
    more.push("logplex-6");
    let more = set(&more);
    let mut moved = 0;
    for k in &keys {
        let now = owner(k, &more.list).expect("an owner").id.as_str();
        if now != owners[k.as_str()] {
            assert_eq!(now, "logplex-6", "{k}");
            moved += 1;
        }
    }
    assert!(moved > 0);
    assert!(owner("app", &[]).is_none(), "no member, no owner");
}

#[test]
fn ownership_needs_a_holding_fence_under_the_listed_lease() {
    let members = set(&["a"]);
    let now = tokio::time::Instant::now();
    let fence = |lease, valid_for: Duration| Fence {
        lease,
        valid_until: now + valid_for,
    };
    let valid = Duration::from_secs(2);
    assert!(acts_as_owner(
        "a",
        Some(fence(7, valid)),
        now,
        "k",
        &members
    ));
    assert!(!acts_as_owner("a", None, now, "k", &members), "no lease");
    assert!(
        !acts_as_owner("a", Some(fence(7, Duration::ZERO)), now, "k", &members),
        "a lapsed fence: etcd may have expired the lease"
    );
    assert!(
        !acts_as_owner("a", Some(fence(8, valid)), now, "k", &members),
        "the listed record is under another lease"
    );
    assert!(
        !acts_as_owner("b", Some(fence(7, valid)), now, "k", &members),
        "not a member"
    );
}

#[tokio::test]
async fn a_record_in_another_prefix_is_not_a_member() {
    let dir = TempDir::new("etcd");
    let etcd = Etcd::start(&dir.0);
    let _a = join(&etcd, "a", "10.0.0.1:6001").await;
    let other = MemberWatch::start(client(&etcd).await, "/elsewhere", "logplex")
        .await
        .expect("watch");
    assert!(other.current().list.is_empty());
    let mut kv = client(&etcd).await;
    let all = kv
        .get("/sy/members/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("get");
    assert_eq!(all.kvs().len(), 1);
    assert_eq!(
        all.kvs()[0].key_str().expect("utf-8"),
        "/sy/members/logplex/a"
    );
}
