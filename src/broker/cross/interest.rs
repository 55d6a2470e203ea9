//! The replicated shard-interest protocol and the SUBACKs that wait for it.
//!
//! When this shard's local index gains its first subscription to a filter it broadcasts
//! `Control::Interest{add}` with a fresh sequence number; every other shard records the
//! interest in its index and answers `Control::InterestAck{seq}`. Mailboxes are FIFO, so
//! the acknowledgements of one shard arrive in sequence order and one watermark per shard
//! (`acked[j]`: the highest sequence number shard j applied) says what it knows.
//!
//! A SUBACK means "new publishes matching these filters are delivered from now on", on
//! every shard. So a SUBACK whose filters have an Interest broadcast that some shard has
//! not yet acknowledged is held until every other shard's watermark reaches the filters'
//! sequence number (a second subscriber of a filter whose broadcast is still in flight
//! waits for the same number), and the SUBACKs of one connection leave in order. The
//! retained messages of a held SUBACK follow it (as with one shard: clients commonly
//! expect them after the SUBACK); live matching PUBLISH packets may precede it
//! [MQTT-3.8.4]. UNSUBACK is never held: after it a few extra messages are tolerable.
//! With one shard nothing is broadcast or held.
//!
//! Shared subscription groups (`$share/GROUP/FILTER`, see `routing/shared.rs`) ride the
//! same protocol: every change of this shard's member count of a group is broadcast as
//! `Control::ShareInterest` (the count and this shard's id of the group), so every shard
//! can weigh the members of each shard when it picks one. The group's key counts members
//! here like a filter counts subscriptions; the first member's broadcast carries a
//! sequence number and its SUBACK waits for it as above, the others carry 0 (a count
//! update, not acknowledged).
//!
//! Held SUBACKs are bounded: once a connection has [`MAX_HELD_SUBACKS`] waiting, the
//! broker stops reading it (`Broker::wants_read`) until some leave, so a client pipelining
//! SUBSCRIBEs while another shard is slow to answer costs a bounded amount of memory (the
//! bound is checked between reads: one read, at most 16 KiB of packets, may pass it).
//! Each time a connection reaches the bound is counted (`$SYS/broker/subscribe/paused`).
//!
//! Where the other shards keep that interest: nowhere per shard. Every filter lives once
//! per process in the [`InterestTable`]: a wildcard-free filter (the common case, and the
//! one whose count can grow to millions) under its fingerprint (filter fingerprint ->
//! shard set, see `topic::ShardSets`), a filter with '+' or '#' in a persistent trie of
//! filters (filter -> shard set, see `topic::WildcardSets`). This shard sets its own bit
//! there and broadcasts `Interest{add}`, which leaves with a snapshot of the table taken
//! after the change (an [`InterestSnapshot`], versioned; one for a run of changes, see
//! [`Interest::announce`]); a shard that takes it routes by the newest snapshot it was
//! sent, so the SUBACK rule above holds unchanged, and what a shard sees depends only on
//! the messages it took (never on the table's live state: the model checker's steps on
//! different shards still commute). Each shard thus refers to one version of the shared
//! nodes; a version lives until every shard has moved past it. A shard's own trie holds
//! only its local subscriptions. This shard counts its subscriptions to a wildcard-free
//! filter by fingerprint, so two filters with one fingerprint (a 64-bit hash collision)
//! hold its bit together until both are gone; elsewhere a collision only sends a message
//! to a shard that then finds no subscriber for it. A wildcard filter is counted by its
//! text (two filters whose trie paths collide each set and clear their own bit).
//!
//! State and decisions only: the cross-shard part sends what it returns, the coordinator
//! queues released SUBACKs. It never touches the publish path.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, PoisonError};

use smallvec::SmallVec;

use crate::codec::{ByteStr, QoS, SubAck};
use crate::hash::{FxHashMap, SeededState};
use crate::mailbox::ShardId;
use crate::topic::{ShardSets, TopicFilter, WildcardSets, SHARE_PREFIX};

use crate::broker::ConnId;

/// SUBACKs one connection may have waiting for interest acknowledgements before the
/// broker stops reading it.
pub(in crate::broker) const MAX_HELD_SUBACKS: usize = 256;

/// The process-wide interest of every shard: wildcard-free filter fingerprint, or
/// wildcard filter -> set of shards with a local subscriber (see the module
/// documentation). Written by a
/// shard when its first subscriber to a filter comes or its last one goes (a short lock);
/// read as a snapshot that a shard loads when it takes an `Interest` message, so the
/// publish path takes no lock and no atomic.
#[derive(Debug, Default)]
pub struct InterestTable {
    current: Mutex<InterestSnapshot>,
}

/// A version of the [`InterestTable`]'s contents: what a shard routes publishes by. It
/// shares every node with the table until the table changes. Versions grow with each
/// change, so a shard that gets snapshots in any order keeps the newest.
#[derive(Debug, Clone, Default)]
pub struct InterestSnapshot {
    version: u64,
    /// Wildcard-free filters, by fingerprint.
    sets: ShardSets,
    /// Filters with '+' or '#'.
    wild: WildcardSets,
}

impl InterestSnapshot {
    /// The shards (bit j = shard j) with a filter matching the topic name `topic`: a
    /// hash lookup while some shard has a wildcard-free filter, a walk of the wildcard
    /// trie while some shard has a wildcard filter.
    #[inline]
    pub(in crate::broker) fn shards_for(&self, topic: &str) -> u64 {
        let mut shards = 0;
        if !self.sets.is_empty() {
            shards = self.sets.get(fingerprint(topic));
        }
        if !self.wild.is_empty() {
            shards |= self.wild.shards_matching(topic);
        }
        shards
    }

    /// Replaces `self` by `newer` if it is newer.
    pub(in crate::broker) fn update(&mut self, newer: &Self) {
        if newer.version > self.version {
            *self = newer.clone();
        }
    }
}

impl InterestTable {
    /// One table for all the shards of a broker.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Sets or clears `shard`'s bit for the filter with fingerprint `key`. Changes the
    /// nodes in place unless a snapshot still shares them.
    fn set(&self, key: u64, shard: ShardId, add: bool) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        current.sets.set(key, shard, add);
        current.version += 1;
    }

    /// Sets or clears `shard`'s bit for the wildcard filter `filter`, copying only the
    /// nodes a snapshot still shares.
    fn set_wildcard(&self, filter: &str, shard: ShardId, add: bool) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        current.wild.set(filter, shard, add);
        current.version += 1;
    }

    /// The current contents, for `Interest` broadcasts.
    fn snapshot(&self) -> InterestSnapshot {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether shard `shard` has set its bit for `filter`.
    #[cfg(test)]
    pub(in crate::broker) fn has(&self, filter: &str, shard: ShardId) -> bool {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let set = if is_exact(filter) {
            current.sets.get(fingerprint(filter))
        } else {
            current.wild.get(filter)
        };
        set & (1 << shard) != 0
    }

    /// Changes so far.
    #[cfg(test)]
    pub(in crate::broker) fn version(&self) -> u64 {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .version
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        current.sets.is_empty() && current.wild.is_empty()
    }
}

/// Whether `filter` (a valid filter: a wildcard is a whole level) has no wildcard, so that
/// it matches exactly one topic name, itself, and goes into the [`InterestTable`] by
/// fingerprint.
#[inline]
fn is_exact(filter: &str) -> bool {
    !filter.bytes().any(|b| b == b'+' || b == b'#')
}

/// The key of a wildcard-free filter, or of a topic name, in the [`InterestTable`]: the
/// same for a filter and the one topic it matches. Keyed by the per-process secret, so
/// nobody can aim filters at one leaf of the table.
#[inline]
pub(in crate::broker) fn fingerprint(topic: &str) -> u64 {
    SeededState.hash_one(topic)
}

/// The interest this shard advertises for one filter.
#[derive(Debug, Clone, Copy)]
struct FilterInterest {
    /// Local subscriptions to the filter.
    subscribers: u32,
    /// Sequence number of the `Interest{add}` broadcast for it.
    seq: u64,
}

/// A SUBACK for connection `conn` (uid `conn_uid`) and what follows it, possibly waiting
/// for the other shards to acknowledge an Interest broadcast.
#[derive(Debug)]
pub(in crate::broker) struct HeldSubAck {
    pub(in crate::broker) conn: ConnId,
    pub(in crate::broker) conn_uid: u64,
    /// Sent once every other shard acknowledged Interest broadcasts up to this number.
    seq: u64,
    pub(in crate::broker) suback: SubAck,
    pub(in crate::broker) then: RetainedAfter,
}

impl HeldSubAck {
    pub(in crate::broker) fn new(
        conn: ConnId,
        conn_uid: u64,
        suback: SubAck,
        then: RetainedAfter,
    ) -> Self {
        Self {
            conn,
            conn_uid,
            seq: 0,
            suback,
            then,
        }
    }
}

/// The retained lookups a SUBSCRIBE starts once its SUBACK is queued: (filter, granted
/// QoS) and the subscription identifier.
#[derive(Debug, Default)]
pub(in crate::broker) struct RetainedAfter {
    pub(in crate::broker) filters: SmallVec<[(TopicFilter, QoS); 1]>,
    pub(in crate::broker) sub_id: Option<u32>,
}

/// This shard's side of the interest protocol.
#[derive(Debug)]
pub(super) struct Interest {
    me: ShardId,
    /// Local members per shared subscription group (the interest this shard
    /// advertises). A plain wildcard filter is counted by the local index and kept in
    /// the table's trie only.
    filters: crate::hash::Map<ByteStr, FilterInterest>,
    /// Sequence number of the last Interest addition this shard broadcast.
    seq: u64,
    /// The highest sequence number each shard acknowledged.
    acked: Vec<u64>,
    /// SUBACKs waiting for acknowledgements, in arrival order.
    held: VecDeque<HeldSubAck>,
    /// How many of them each connection has.
    held_by: HashMap<ConnId, usize>,
    /// Times a connection reached [`MAX_HELD_SUBACKS`].
    limit_hits: u64,
    /// The process-wide interest in wildcard-free filters.
    table: Arc<InterestTable>,
    /// Local subscriptions per wildcard-free filter, by fingerprint (`filters` has the
    /// others): 24 bytes an entry instead of a copy of the filter. Two filters with one
    /// fingerprint (a 64-bit collision) count together, so the shard's bit in the table
    /// stays until both are gone.
    exact: FxHashMap<u64, FilterInterest>,
    /// The table's snapshot taken for this shard's broadcasts after its last change
    /// (`None` after a change: the next broadcast takes a new one).
    announce: Option<InterestSnapshot>,
}

impl Interest {
    pub(super) fn new(me: ShardId, shards: usize, table: Arc<InterestTable>) -> Self {
        Self {
            me,
            filters: crate::hash::Map::default(),
            seq: 0,
            acked: vec![0; shards],
            held: VecDeque::new(),
            held_by: HashMap::new(),
            limit_hits: 0,
            table,
            exact: FxHashMap::default(),
            announce: None,
        }
    }

    /// The local index gained a subscription to the plain (not shared) `filter`
    /// (`first`: the only one to it there now). Returns the sequence number to broadcast
    /// `Interest{add}` with when it is the first one; the filter is in the
    /// [`InterestTable`] by then.
    pub(super) fn filter_added(&mut self, filter: &ByteStr, first: bool) -> Option<u64> {
        if !is_exact(filter.as_str()) {
            // Counted by the local index itself (`first`): no copy of the filter here.
            if !first {
                return None;
            }
            self.seq += 1;
            self.table.set_wildcard(filter.as_str(), self.me, true);
            self.announce = None;
            return Some(self.seq);
        }
        let key = fingerprint(filter.as_str());
        if let Some(f) = self.exact.get_mut(&key) {
            f.subscribers += 1;
            return None;
        }
        self.seq += 1;
        let seq = self.seq;
        self.exact.insert(
            key,
            FilterInterest {
                subscribers: 1,
                seq,
            },
        );
        self.table.set(key, self.me, true);
        self.announce = None;
        Some(seq)
    }

    /// The local index lost a subscription to the plain `filter` (`last`: none is left
    /// there). Returns true when it was the last one (broadcast `Interest{remove}`); the
    /// filter has left the [`InterestTable`] by then.
    pub(super) fn filter_removed(&mut self, filter: &ByteStr, last: bool) -> bool {
        if !is_exact(filter.as_str()) {
            if !last {
                return false;
            }
            self.table.set_wildcard(filter.as_str(), self.me, false);
            self.announce = None;
            return true;
        }
        let key = fingerprint(filter.as_str());
        let Some(f) = self.exact.get_mut(&key) else {
            return false;
        };
        f.subscribers = f.subscribers.saturating_sub(1);
        if f.subscribers > 0 {
            return false;
        }
        self.exact.remove(&key);
        self.table.set(key, self.me, false);
        self.announce = None;
        true
    }

    /// A snapshot of the table with every change this shard made so far, for an
    /// `Interest` broadcast leaving now: taken once after each run of changes, so
    /// pipelined SUBSCRIBEs change the table in place and share one snapshot.
    pub(super) fn announce(&mut self) -> InterestSnapshot {
        self.announce
            .get_or_insert_with(|| self.table.snapshot())
            .clone()
    }

    /// A shared subscription group (`filter` is the `$share/GROUP/FILTER` name) gained a
    /// member here. Returns the sequence number to broadcast the addition with when it
    /// is the first.
    pub(super) fn added(&mut self, filter: &ByteStr) -> Option<u64> {
        if let Some(f) = self.filters.get_mut(filter) {
            f.subscribers += 1;
            return None;
        }
        self.seq += 1;
        let seq = self.seq;
        // Kept as long as the subscription: its own allocation, not a slice of the read
        // buffer the SUBSCRIBE came in.
        self.filters.insert(
            filter.compact(),
            FilterInterest {
                subscribers: 1,
                seq,
            },
        );
        Some(seq)
    }

    /// A group lost a member here. Returns true when it was the last one (broadcast the
    /// removal).
    pub(super) fn removed(&mut self, filter: &ByteStr) -> bool {
        let Some(f) = self.filters.get_mut(filter) else {
            return false;
        };
        f.subscribers = f.subscribers.saturating_sub(1);
        if f.subscribers == 0 {
            self.filters.remove(filter);
            return true;
        }
        false
    }

    /// The sequence number of the broadcast that announced this shard's interest in the
    /// plain or group filter `filter` (just subscribed to), if it advertises any. A plain
    /// wildcard filter's own number is not kept: the newest broadcast's stands for it (a
    /// SUBACK may then wait for a few more acknowledgements than it needs, never for
    /// fewer; no lock and no lookup).
    fn interest_in(&self, filter: &ByteStr) -> Option<u64> {
        let f = filter.as_str();
        if f.starts_with(SHARE_PREFIX) {
            self.filters.get(filter).map(|i| i.seq)
        } else if is_exact(f) {
            self.exact.get(&fingerprint(f)).map(|i| i.seq)
        } else {
            Some(self.seq)
        }
    }

    /// Whether this shard advertises interest in `filter`.
    #[cfg(test)]
    pub(super) fn advertises(&self, filter: &ByteStr) -> bool {
        let f = filter.as_str();
        if is_exact(f) || f.starts_with(SHARE_PREFIX) {
            self.interest_in(filter).is_some()
        } else {
            self.table.has(f, self.me)
        }
    }

    /// Shard `from` applied our broadcasts up to `seq`: the SUBACKs that can go now, in
    /// order.
    pub(super) fn on_ack(&mut self, from: ShardId, seq: u64) -> Vec<HeldSubAck> {
        let Some(acked) = self.acked.get_mut(from) else {
            return Vec::new();
        };
        *acked = (*acked).max(seq);
        if self.held.is_empty() {
            return Vec::new();
        }
        let done = self.done();
        let mut ready = Vec::new();
        let mut i = 0;
        while i < self.held.len() {
            if self.held[i].seq <= done {
                if let Some(h) = self.held.remove(i) {
                    self.unheld(h.conn);
                    ready.push(h);
                }
            } else {
                i += 1;
            }
        }
        ready
    }

    /// The highest sequence number every other shard has acknowledged.
    fn done(&self) -> u64 {
        self.acked
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != self.me)
            .map(|(_, &a)| a)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Holds `suback` for `filters` if the Interest broadcasts of those filters (or the
    /// SUBACKs its connection already waits for) are not acknowledged by every other
    /// shard yet; otherwise gives it back.
    pub(super) fn hold_suback(
        &mut self,
        filters: &[ByteStr],
        mut suback: HeldSubAck,
    ) -> Option<HeldSubAck> {
        let mut need = filters
            .iter()
            .filter_map(|f| self.interest_in(f))
            .max()
            .unwrap_or(0);
        // SUBACKs of one connection leave in order.
        for h in &self.held {
            if h.conn == suback.conn && h.conn_uid == suback.conn_uid {
                need = need.max(h.seq);
            }
        }
        if need > self.done() {
            suback.seq = need;
            let count = self.held_by.entry(suback.conn).or_default();
            *count += 1;
            if *count == MAX_HELD_SUBACKS {
                self.limit_hits += 1;
            }
            self.held.push_back(suback);
            return None;
        }
        Some(suback)
    }

    fn unheld(&mut self, conn: ConnId) {
        if let Some(n) = self.held_by.get_mut(&conn) {
            *n -= 1;
            if *n == 0 {
                self.held_by.remove(&conn);
            }
        }
    }

    /// Whether connection `conn` has [`MAX_HELD_SUBACKS`] SUBACKs held (do not read it).
    pub(super) fn at_limit(&self, conn: ConnId) -> bool {
        !self.held_by.is_empty()
            && self
                .held_by
                .get(&conn)
                .is_some_and(|&n| n >= MAX_HELD_SUBACKS)
    }

    /// Times a connection reached the bound.
    pub(super) fn limit_hits(&self) -> u64 {
        self.limit_hits
    }

    /// SUBACKs held for `conn`.
    #[cfg(test)]
    pub(super) fn held_for(&self, conn: ConnId) -> usize {
        self.held_by.get(&conn).copied().unwrap_or(0)
    }

    /// The connection ended: its held SUBACKs go nowhere.
    pub(super) fn drop_held(&mut self, conn: ConnId) {
        if self.held_by.remove(&conn).is_some() {
            self.held.retain(|h| h.conn != conn);
        }
    }

    #[cfg(test)]
    pub(super) fn has_held(&self) -> bool {
        !self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_and_last_local_subscriber_set_and_clear_the_shards_bit() {
        let table = InterestTable::new();
        let mut interest = Interest::new(1, 3, Arc::clone(&table));
        let f = ByteStr::from("a/b");
        assert_eq!(interest.filter_added(&f, true), Some(1));
        assert!(table.has("a/b", 1) && !table.has("a/b", 0));
        assert_eq!(interest.filter_added(&f, true), None);
        assert!(!interest.filter_removed(&f, true));
        assert!(table.has("a/b", 1));
        assert!(interest.filter_removed(&f, true));
        assert!(!table.has("a/b", 1));
    }

    #[test]
    fn wildcard_filters_go_into_the_tables_trie() {
        let table = InterestTable::new();
        let mut interest = Interest::new(0, 2, Arc::clone(&table));
        let mut other = Interest::new(1, 2, Arc::clone(&table));
        let before = interest.announce();
        for f in ["a/+", "a/#", "#", "+/b"] {
            assert!(interest.filter_added(&ByteStr::from(f), true).is_some());
            assert!(table.has(f, 0) && !table.has(f, 1));
        }
        assert!(other.filter_added(&ByteStr::from("+/b"), true).is_some());
        let after = interest.announce();
        assert_eq!(after.shards_for("x/b"), 0b11);
        assert_eq!(after.shards_for("a/c"), 0b01);
        assert_eq!(after.shards_for("$SYS/b"), 0);
        assert_eq!(
            before.shards_for("x/b"),
            0,
            "an older snapshot never changes"
        );
        for f in ["a/+", "a/#", "#", "+/b"] {
            assert!(interest.filter_removed(&ByteStr::from(f), true));
        }
        assert!(other.filter_removed(&ByteStr::from("+/b"), true));
        assert!(table.is_empty());
    }

    /// Subscriptions count per fingerprint: what two colliding filters would share.
    #[test]
    fn a_fingerprint_keeps_the_bit_until_its_last_subscription_goes() {
        let table = InterestTable::new();
        let mut interest = Interest::new(1, 2, Arc::clone(&table));
        let f = ByteStr::from("a/b");
        assert!(interest.filter_added(&f, true).is_some());
        assert!(interest.filter_added(&f, true).is_none());
        assert!(interest.advertises(&f));
        assert!(!interest.filter_removed(&f, true));
        assert!(table.has("a/b", 1));
        assert!(interest.filter_removed(&f, true));
        assert!(!table.has("a/b", 1) && !interest.advertises(&f));
        assert!(!interest.filter_removed(&f, true), "nothing left to remove");
        assert!(interest.exact.is_empty());
    }
}
