//! Membership in etcd: which processes of a kind are alive, and which one
//! owns a key.
//!
//! # Layout
//!
//! A process registers itself under `<prefix>/members/<kind>/<id>` (kind
//! `logplex` or `router`; `id` unique per process, e.g. its advertised
//! address) with a JSON [`MemberInfo`] value, attached to an etcd lease of a
//! few seconds' TTL that it keeps alive ([`Registration`]). When the process
//! stops keeping it alive (crash, `kill -9`, a partition) etcd expires the
//! lease after the TTL and deletes the key; a clean exit revokes the lease and
//! the key goes at once ([`Registration::leave`]).
//!
//! # The live set
//!
//! [`MemberWatch`] lists `<prefix>/members/<kind>/` at etcd revision R and
//! watches it from R + 1: every put and delete arrives once, in revision
//! order, so every watcher goes through the same sequence of sets. The
//! resume point advances only from events' `mod_revision` (never from
//! progress responses, which etcd 3.4 may send out of step). When etcd
//! answers that the resume revision is compacted, the watcher lists again
//! (counted in [`MemberWatch::relists`]); a broken stream is re-opened from
//! the resume point with back-off. The current set is an `ArcSwap`, read
//! without a lock ([`MemberWatch::current`]). Give both a client connected
//! with HTTP/2 keep-alive (as [`crate::EtcdStore`] connects), so a hung etcd
//! breaks the watch stream instead of leaving it silent; the registration
//! bounds every keep-alive by a third of the TTL itself.
//!
//! # Ownership
//!
//! [`owner`] picks the owner of a key among the live members by rendezvous
//! (highest-random-weight) hashing: each member scores the key with a stable
//! hash of `(member id, key)` — 64-bit FNV-1a finished with the SplitMix64
//! mixer, the same on every machine and build, unlike std's randomly keyed
//! SipHash — and the highest score wins (ties, which need equal 64-bit
//! hashes, go to the smaller id). Every node with the same set computes the
//! same owner; a member leaving moves only its own keys, each to the member
//! that scored second; a member joining takes only keys it now scores
//! highest on.
//!
//! # The fence
//!
//! A node acts as the owner of a key ([`Registration::acts_as_owner`]) only
//! while all three hold:
//!
//! 1. **its lease is surely alive**: its [`Fence`] holds, i.e. less than the
//!    TTL has passed since it *sent* the last keep-alive (or grant) that etcd
//!    acknowledged. etcd counts the TTL from when it *received* that request,
//!    which is later, so when the fence lapses locally etcd may expire the
//!    lease but cannot have done so earlier;
//! 2. **the live set shows it under that lease**: its own record in the set
//!    it watches carries the fence's lease id, so its registration is one
//!    every other watcher has seen at the same revision;
//! 3. **rendezvous over that set picks it**.
//!
//! A node that comes back after its lease expired (a long pause, a
//! partition) fails (1) at once: its fence lapsed on its own clock while it
//! was away. It grants a new lease and puts its record again, and fails (2)
//! until that new record reaches its watch, by which time every other
//! watcher has seen, in revision order, the delete of its old record (the
//! expiry) before the put of the new one. So a dead node's keys are taken
//! over only after its fence has lapsed, and a returning node never owns
//! under a lease etcd has expired. What this rule alone does not close is
//! the short handover on a *join* between two live nodes (the old owner acts
//! until its watch delivers the join): where one owner at a time must hold
//! strictly, claim the key in etcd under the lease
//! (`create_revision == 0` on an owner key, as `reference/engine-and-style.md`
//! §A.6.4 describes) on top of this rule.

mod lease;
mod watch;

pub use self::lease::{acts_as_owner, Fence, OwnerCheck, Registration};
pub use self::watch::MemberWatch;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a member publishes about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Its advertised addresses by purpose, e.g. `"syslog": "10.0.0.7:6001"`.
    pub addresses: BTreeMap<String, String>,
}

/// One live member, as the watched set shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its id (the last segment of its key).
    pub id: String,
    /// What it published.
    pub info: MemberInfo,
    /// The lease its record is attached to.
    pub lease: i64,
    /// The etcd revision its record was created at (a new registration
    /// makes a new one).
    pub created: i64,
}

/// The live members of one kind, as of an etcd revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members {
    /// The etcd revision this set reflects; a watch resumes after it.
    pub revision: i64,
    /// The members, by id.
    pub list: Vec<Member>,
}

impl Members {
    /// The member with this id.
    pub fn get(&self, id: &str) -> Option<&Member> {
        self.list
            .binary_search_by(|m| m.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.list[i])
    }

    /// The owner of `key` among these members (see [`owner`]).
    pub fn owner(&self, key: &str) -> Option<&Member> {
        owner(key, &self.list)
    }

    fn upsert(&mut self, member: Member) {
        match self
            .list
            .binary_search_by(|m| m.id.as_str().cmp(&member.id))
        {
            Ok(i) => self.list[i] = member,
            Err(i) => self.list.insert(i, member),
        }
    }

    fn remove(&mut self, id: &str) {
        if let Ok(i) = self.list.binary_search_by(|m| m.id.as_str().cmp(id)) {
            self.list.remove(i);
        }
    }
}

/// 64-bit FNV-1a: a fixed, documented function, so every node and every
/// build scores alike.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    }
    h
}

/// SplitMix64's finaliser: spreads FNV's weak high bits over the word, so
/// the scores of different members for one key are independent enough for
/// rendezvous to balance.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A member's score for a key: stable across processes, builds and machines.
pub fn weight(member_id: &str, key: &str) -> u64 {
    // 0xff never occurs in UTF-8, so ("ab", "c") and ("a", "bc") differ.
    mix(fnv1a(&[member_id.as_bytes(), &[0xff], key.as_bytes()]))
}

/// The owner of `key` among `members`: the highest [`weight`], ties to the
/// smaller id; `None` when there is no member.
pub fn owner<'a>(key: &str, members: &'a [Member]) -> Option<&'a Member> {
    members.iter().max_by(|a, b| {
        weight(&a.id, key)
            .cmp(&weight(&b.id, key))
            .then_with(|| b.id.cmp(&a.id))
    })
}

/// The directory of one kind's records: `<prefix>/members/<kind>/`.
fn directory(prefix: &str, kind: &str) -> String {
    format!("{}/members/{kind}/", prefix.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fnv1a_and_does_not_change() {
        // FNV-1a 64 reference values.
        assert_eq!(fnv1a(&[b""]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(&[b"foo", b"bar"]), fnv1a(&[b"foobar"]));
        // Pinned: a change here would move channels between nodes of
        // different builds.
        // (An independent FNV-1a + SplitMix64 computes the same.)
        assert_eq!(weight("node-a", "app-1"), 0xa142_2dca_f989_c7b7);
        assert_eq!(weight("node-b", "app-1"), 0xb264_a071_0fac_ac3f);
        assert_ne!(weight("ab", "c"), weight("a", "bc"));
    }
}
