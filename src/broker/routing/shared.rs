//! Shared subscription groups (`$share/GROUP/FILTER`, MQTT 5 4.8.2, also offered to 3.1.1
//! clients as Mosquitto does): each message matching a group's filter goes to exactly
//! one member of the group, wherever its members are.
//!
//! A group is known on every shard that has members or hears of members elsewhere: the
//! interest protocol (`cross/interest.rs`) carries each shard's member count of each
//! group and that shard's id for it. The shard a message is published on picks the
//! member for each matching group over all members (the configured [`ShareStrategy`]
//! maps a member number to a shard by the counts); if the member is on another shard,
//! the message goes there once, naming the groups that shard serves
//! ([`ShareTarget`], in the same mailbox message as any normal delivery), so the choice
//! costs no more cross-shard traffic than a normal subscription. The shard that serves a
//! group picks its local member, starting at the one the strategy named and skipping
//! members that have no room (the coordinator judges room: output, queue, connection).
//!
//! A member is a subscriber key (a session's slab key today; an in-process subscriber
//! can be one too) with its subscription options. State and decisions only: it never
//! sends, never looks at sessions and never allocates per publish once its lists have
//! grown.

use std::collections::HashMap;

use slab::Slab;
use smallvec::SmallVec;

use crate::codec::ByteStr;
use crate::config::ShareStrategy;
use crate::mailbox::ShardId;
use crate::session::Subscription;
use crate::topic::{SharedFilter, TopicIndex};

pub use crate::broker::cross::ShareTarget;

/// One member of a group on this shard.
#[derive(Debug, Clone, Copy)]
pub(in crate::broker) struct Member {
    /// The subscriber (session slab key).
    pub(in crate::broker) key: usize,
    pub(in crate::broker) sub: Subscription,
}

/// A group this shard must serve for the message being routed: its local key and the
/// member number to start from.
#[derive(Debug, Clone, Copy)]
pub(in crate::broker) struct LocalPick {
    pub(in crate::broker) group: usize,
    pub(in crate::broker) start: u32,
}

#[derive(Debug)]
struct Group {
    /// `$share/GROUP/FILTER` as subscribed (the key other shards know it by).
    share: ByteStr,
    /// Distinguishes this group from an earlier one in the same slab entry.
    generation: u32,
    members: Vec<Member>,
    /// Per shard: (members there, that shard's id of the group). This shard's is unused.
    remote: Vec<(u32, u64)>,
    remote_total: u32,
    /// Round robin over every member (publishing side).
    cursor: u32,
    /// Sticky: the shard messages published here go to, and the local member.
    sticky_shard: Option<ShardId>,
    sticky_member: u32,
}

impl Group {
    fn is_empty(&self) -> bool {
        self.members.is_empty() && self.remote_total == 0
    }
}

/// The shared subscription groups of one shard.
#[derive(Debug)]
pub(in crate::broker) struct Groups {
    me: ShardId,
    shards: usize,
    strategy: ShareStrategy,
    groups: Slab<Group>,
    by_share: HashMap<Box<str>, usize, crate::hash::SeededState>,
    /// Each group's filter -> group key.
    index: TopicIndex<usize, ()>,
    generation: u32,
    rng: u64,
    /// Groups this shard serves for the message being routed.
    picks: Vec<LocalPick>,
    /// Groups each other shard serves for it (indexed by shard).
    out: Vec<SmallVec<[ShareTarget; 1]>>,
    /// Groups of a received message this shard has no member of any more (its last one
    /// left while the message was on its way): the shard to pass each on to.
    passed_on: Vec<(ShardId, ShareTarget)>,
}

/// splitmix64: a cheap, well-spread step for `random` and for hashing strings to a
/// member number.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A stable hash of `s` (FNV-1a, mixed): the same on every shard and run.
pub(in crate::broker) fn hash_str(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

/// `x % n` as a member number (`n` > 0).
fn modulo(x: u64, n: u32) -> u32 {
    u32::try_from(x % u64::from(n.max(1))).unwrap_or(0)
}

impl Groups {
    pub(in crate::broker) fn new(me: ShardId, shards: usize, strategy: ShareStrategy) -> Self {
        Self {
            me,
            shards,
            strategy,
            groups: Slab::new(),
            by_share: HashMap::default(),
            index: TopicIndex::new(),
            generation: 0,
            rng: mix(me as u64 ^ 0x5_4a5e),
            picks: Vec::new(),
            out: (0..shards).map(|_| SmallVec::new()).collect(),
            passed_on: Vec::new(),
        }
    }

    /// Whether any group exists here (the publish path skips the rest when not).
    #[inline]
    pub(in crate::broker) fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The id other shards name group `key` by (key and generation).
    fn id_of(&self, key: usize) -> u64 {
        let generation = self.groups.get(key).map_or(0, |g| g.generation);
        (u64::from(generation) << 32) | (key as u64 & 0xffff_ffff)
    }

    fn get_or_create(&mut self, share: &ByteStr, parsed: &SharedFilter) -> usize {
        if let Some(&key) = self.by_share.get(share.as_str()) {
            return key;
        }
        self.generation = self.generation.wrapping_add(1);
        let key = self.groups.insert(Group {
            share: share.clone(),
            generation: self.generation,
            members: Vec::new(),
            remote: vec![(0, 0); self.shards],
            remote_total: 0,
            cursor: 0,
            sticky_shard: None,
            sticky_member: 0,
        });
        self.index.insert(&parsed.filter, key, ());
        self.by_share.insert(Box::from(share.as_str()), key);
        key
    }

    fn remove_if_empty(&mut self, key: usize) {
        if !self.groups.get(key).is_some_and(Group::is_empty) {
            return;
        }
        let g = self.groups.remove(key);
        self.by_share.remove(g.share.as_str());
        if let Ok(Some(parsed)) = SharedFilter::try_parse(g.share.as_str()) {
            self.index.remove(parsed.filter.as_str(), &key);
        }
    }

    /// Subscriber `key` joins (or, already a member, changes its options in) the group
    /// of `share`. Returns (members here now, the group's id) when it joined: the count
    /// other shards must learn.
    pub(in crate::broker) fn join(
        &mut self,
        share: &ByteStr,
        parsed: &SharedFilter,
        key: usize,
        sub: Subscription,
    ) -> Option<(u32, u64)> {
        let g = self.get_or_create(share, parsed);
        let group = self.groups.get_mut(g)?;
        if let Some(m) = group.members.iter_mut().find(|m| m.key == key) {
            m.sub = sub; // [MQTT-3.8.4-3]
            return None;
        }
        group.members.push(Member { key, sub });
        let n = u32::try_from(group.members.len()).unwrap_or(u32::MAX);
        Some((n, self.id_of(g)))
    }

    /// Subscriber `key` leaves the group of `share`. Returns (members here now, the
    /// group's id) when it was a member.
    pub(in crate::broker) fn leave(&mut self, share: &str, key: usize) -> Option<(u32, u64)> {
        let g = *self.by_share.get(share)?;
        let id = self.id_of(g);
        let group = self.groups.get_mut(g)?;
        let at = group.members.iter().position(|m| m.key == key)?;
        // Order kept: the round robin position of the others does not jump.
        group.members.remove(at);
        let n = u32::try_from(group.members.len()).unwrap_or(u32::MAX);
        self.remove_if_empty(g);
        Some((n, id))
    }

    /// Shard `from` has `members` members of the group of `share` now, which it names
    /// `id`.
    pub(in crate::broker) fn set_remote(
        &mut self,
        from: ShardId,
        share: &ByteStr,
        members: u32,
        id: u64,
    ) {
        if from == self.me || from >= self.shards {
            return;
        }
        let key = match self.by_share.get(share.as_str()) {
            Some(&k) => k,
            None if members == 0 => return,
            None => match SharedFilter::try_parse(share.as_str()) {
                Ok(Some(parsed)) => self.get_or_create(share, &parsed),
                _ => return,
            },
        };
        let Some(g) = self.groups.get_mut(key) else {
            return;
        };
        if let Some(entry) = g.remote.get_mut(from) {
            g.remote_total = g.remote_total - entry.0 + members;
            *entry = (members, id);
        }
        self.remove_if_empty(key);
    }

    /// Local members of every group (for the subscription count).
    pub(in crate::broker) fn local_members(&self) -> usize {
        self.groups.iter().map(|(_, g)| g.members.len()).sum()
    }

    // --- routing one message ----------------------------------------------------------

    /// The publishing shard's choice for `topic`: for each matching group, the member
    /// number the strategy names (over all members, on every shard). Groups served here
    /// go to [`Groups::take_picks`], the others into the per-shard lists
    /// ([`Groups::take_out`]). `client_hash` is the publisher's client id hashed (for
    /// `hash_client`). Returns the shards that serve some group (bit j = shard j).
    pub(in crate::broker) fn route(&mut self, topic: &str, client_hash: Option<u64>) -> u64 {
        self.picks.clear();
        let mut dests = 0u64;
        let mut matched: SmallVec<[usize; 4]> = SmallVec::new();
        self.index.for_each_match(topic, |&k, ()| matched.push(k));
        for key in matched {
            let strategy = self.strategy;
            let me = self.me;
            let rng = if strategy == ShareStrategy::Random {
                self.rng = mix(self.rng);
                self.rng
            } else {
                0
            };
            let Some(g) = self.groups.get_mut(key) else {
                continue;
            };
            let local = u32::try_from(g.members.len()).unwrap_or(u32::MAX);
            let total = local.saturating_add(g.remote_total);
            if total == 0 {
                continue;
            }
            let n = match strategy {
                ShareStrategy::RoundRobin => {
                    let n = g.cursor % total;
                    g.cursor = (n + 1) % total;
                    n
                }
                ShareStrategy::Random => modulo(rng, total),
                ShareStrategy::HashClient => {
                    modulo(client_hash.unwrap_or_else(|| hash_str(topic)), total)
                }
                ShareStrategy::HashTopic => modulo(hash_str(topic), total),
                ShareStrategy::Sticky => {
                    let keep = match g.sticky_shard {
                        Some(j) if j == me => local > 0,
                        Some(j) => g.remote.get(j).is_some_and(|r| r.0 > 0),
                        None => false,
                    };
                    if !keep {
                        g.sticky_shard = if local > 0 {
                            Some(me)
                        } else {
                            g.remote.iter().position(|r| r.0 > 0)
                        };
                    }
                    match g.sticky_shard {
                        Some(j) if j == me => 0,
                        // The first member number of shard j (this shard's entry is 0).
                        Some(j) => local + g.remote.iter().take(j).map(|r| r.0).sum::<u32>(),
                        None => 0,
                    }
                }
            };
            let sticky = strategy == ShareStrategy::Sticky;
            if n < local {
                let start = if sticky { g.sticky_member } else { n };
                self.picks.push(LocalPick { group: key, start });
                continue;
            }
            let mut rest = n - local;
            for (j, &(count, id)) in g.remote.iter().enumerate() {
                if j == me || count == 0 {
                    continue;
                }
                if rest < count {
                    if let Some(out) = self.out.get_mut(j) {
                        out.push(ShareTarget {
                            group: id,
                            pick: rest,
                        });
                        dests |= 1 << j;
                    }
                    break;
                }
                rest -= count;
            }
        }
        dests
    }

    /// A message from another shard names the groups this shard serves for it. A group
    /// whose last member here left meanwhile is passed on to a shard that has members
    /// ([`Groups::take_passed_on`]); one that no shard has members of any more is dropped.
    pub(in crate::broker) fn received(&mut self, targets: &[ShareTarget]) {
        self.picks.clear();
        for t in targets {
            let key = (t.group & 0xffff_ffff) as usize;
            let generation = (t.group >> 32) as u32;
            let Some(g) = self.groups.get(key) else {
                continue;
            };
            if g.generation != generation {
                continue;
            }
            if g.members.is_empty() {
                let to = g
                    .remote
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.0 > 0)
                    .max_by_key(|(j, r)| (r.0, std::cmp::Reverse(*j)));
                if let Some((j, &(_, id))) = to {
                    let pick = t.pick;
                    self.passed_on.push((j, ShareTarget { group: id, pick }));
                }
                continue;
            }
            let start = if self.strategy == ShareStrategy::Sticky {
                g.sticky_member
            } else {
                t.pick
            };
            self.picks.push(LocalPick { group: key, start });
        }
    }

    /// The groups of the last received message to pass on, with the shard to pass each
    /// to (emptied).
    pub(in crate::broker) fn take_passed_on(&mut self) -> Vec<(ShardId, ShareTarget)> {
        std::mem::take(&mut self.passed_on)
    }

    /// Whether the last [`Groups::route`] / [`Groups::received`] left groups to serve here.
    #[inline]
    pub(in crate::broker) fn has_picks(&self) -> bool {
        !self.picks.is_empty()
    }

    /// The groups to serve here; give the list back with [`Groups::put_picks`].
    pub(in crate::broker) fn take_picks(&mut self) -> Vec<LocalPick> {
        std::mem::take(&mut self.picks)
    }

    pub(in crate::broker) fn put_picks(&mut self, mut picks: Vec<LocalPick>) {
        picks.clear();
        self.picks = picks;
    }

    /// The groups shard `j` serves for the message just routed (emptied).
    pub(in crate::broker) fn take_out(&mut self, j: ShardId) -> SmallVec<[ShareTarget; 1]> {
        self.out.get_mut(j).map(std::mem::take).unwrap_or_default()
    }

    /// Member `i` (modulo the member count) of group `group`, and the member count.
    pub(in crate::broker) fn member(&self, group: usize, i: u32) -> Option<(Member, u32)> {
        let g = self.groups.get(group)?;
        let n = u32::try_from(g.members.len()).ok().filter(|&n| n > 0)?;
        let m = *g.members.get((i % n) as usize)?;
        Some((m, n))
    }

    /// Member `i` of group `group` got the message: the sticky member from now on.
    pub(in crate::broker) fn chosen(&mut self, group: usize, i: u32) {
        if let Some(g) = self.groups.get_mut(group) {
            g.sticky_member = i;
        }
    }

    /// Where a message handed over by a member that left the group of `share` goes:
    /// `Some(None)` to a member here, `Some(Some(j))` to shard j (the one with the most
    /// members), `None` when the group has no member left anywhere.
    pub(in crate::broker) fn handover_target(&self, share: &str) -> Option<Option<ShardId>> {
        let g = self.by_share.get(share).and_then(|&k| self.groups.get(k))?;
        if !g.members.is_empty() {
            return Some(None);
        }
        let (j, _) = g
            .remote
            .iter()
            .enumerate()
            .filter(|(_, r)| r.0 > 0)
            .max_by_key(|(j, r)| (r.0, std::cmp::Reverse(*j)))?;
        Some(Some(j))
    }

    /// A pick of the next member here of the group of `share` (round robin).
    pub(in crate::broker) fn local_pick(&mut self, share: &str) -> Option<LocalPick> {
        let key = *self.by_share.get(share)?;
        let g = self.groups.get_mut(key)?;
        if g.members.is_empty() {
            return None;
        }
        let start = if self.strategy == ShareStrategy::Sticky {
            g.sticky_member
        } else {
            g.cursor = g.cursor.wrapping_add(1);
            g.cursor
        };
        Some(LocalPick { group: key, start })
    }

    /// The target naming the group of `share` on shard `j`.
    pub(in crate::broker) fn remote_target(&self, share: &str, j: ShardId) -> Option<ShareTarget> {
        let g = self.by_share.get(share).and_then(|&k| self.groups.get(k))?;
        let &(count, id) = g.remote.get(j)?;
        (count > 0).then_some(ShareTarget { group: id, pick: 0 })
    }

    /// Members of the group of `share` on each shard, this one included (tests).
    #[cfg(test)]
    pub(in crate::broker) fn counts(&self, share: &str) -> Vec<u32> {
        let Some(g) = self.by_share.get(share).and_then(|&k| self.groups.get(k)) else {
            return vec![0; self.shards];
        };
        let mut c: Vec<u32> = g.remote.iter().map(|r| r.0).collect();
        if let Some(x) = c.get_mut(self.me) {
            *x = u32::try_from(g.members.len()).unwrap_or(u32::MAX);
        }
        c
    }
}
