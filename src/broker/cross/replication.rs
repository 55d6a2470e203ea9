//! Retained replication: every shard holds a replica of the retained store; a retained
//! PUBLISH is applied locally and broadcast (`Control::Retain`), so SUBSCRIBE reads the
//! local replica without a round trip. Chosen over one owning shard because SUBSCRIBE
//! (with its budgeted wildcard lookup) then never waits on another core, and retained
//! *sets* are rare next to publishes; the cost is N copies of the (shared, `Bytes`)
//! payload references and eventual consistency of microseconds.
//!
//! This module owns the versions that make replicas converge: each set carries a Lamport
//! version (clock, shard), and every replica keeps the highest version per topic, so
//! concurrent sets of one topic on two shards leave the same winner everywhere.
//!
//! The versions stay bounded. A live topic's version lives as long as its retained
//! message. A delete leaves a *tombstone* (the delete's version, so that an older set
//! still on its way cannot bring the topic back), dropped once it is safe: each shard
//! announces its clock to the others after it changed (`Control::RetainClock`, at most
//! once per drain of its outbox), and mailboxes are FIFO, so once every other shard `k`
//! has announced a clock >= `c`, every set `k` made with a clock <= `c` has arrived here,
//! and every set it makes from now on is newer than `c`: a tombstone of clock `c` can go.
//! So 100k deletes of unique topics leave nothing behind once the shards have talked.
//!
//! It never touches the retained store itself (routing owns it) and never sends: it
//! says what to announce and what to apply.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::codec::ByteStr;
use crate::mailbox::ShardId;

/// A retained set's version: (Lamport clock, shard that set it).
pub(in crate::broker) type Version = (u64, ShardId);

#[derive(Debug)]
pub(super) struct Replication {
    me: ShardId,
    clock: u64,
    /// The winning version per topic: live retained messages, and deleted topics until
    /// their tombstone expires.
    versions: crate::hash::Map<ByteStr, Version>,
    /// Deletes that won here, oldest first; an entry whose topic has a newer version
    /// since is skipped when it expires.
    tombstones: BinaryHeap<Reverse<(Version, ByteStr)>>,
    /// The highest clock each shard announced (this shard's own entry unused).
    heard: Vec<u64>,
    /// The clock this shard last announced.
    announced: u64,
}

impl Replication {
    pub(super) fn new(me: ShardId, shards: usize) -> Self {
        Self {
            me,
            clock: 0,
            versions: crate::hash::Map::default(),
            tombstones: BinaryHeap::new(),
            heard: vec![0; shards],
            announced: 0,
        }
    }

    /// A set of `topic` on this shard (`deleted`: an empty payload): its version.
    pub(super) fn local_set(&mut self, topic: &ByteStr, deleted: bool) -> Version {
        self.clock += 1;
        let version = (self.clock, self.me);
        self.record(topic, version, deleted);
        version
    }

    /// A set of `topic` from another shard: whether it wins over what this replica has
    /// (false: a later set of this topic already won here).
    pub(super) fn remote_set(&mut self, topic: &ByteStr, version: Version, deleted: bool) -> bool {
        self.clock = self.clock.max(version.0);
        let newer = self.versions.get(topic).map_or(true, |&v| v < version);
        if newer {
            self.record(topic, version, deleted);
        }
        newer
    }

    fn record(&mut self, topic: &ByteStr, version: Version, deleted: bool) {
        self.versions.insert(topic.clone(), version);
        if deleted {
            self.tombstones.push(Reverse((version, topic.clone())));
        }
    }

    /// The clock to announce to every other shard, if it changed since the last time.
    pub(super) fn announce(&mut self) -> Option<u64> {
        (self.clock > self.announced).then(|| {
            self.announced = self.clock;
            self.clock
        })
    }

    /// Shard `from` announced `clock`: drops the tombstones every shard is past.
    pub(super) fn on_clock(&mut self, from: ShardId, clock: u64) {
        if from == self.me {
            return;
        }
        let Some(heard) = self.heard.get_mut(from) else {
            return;
        };
        *heard = (*heard).max(clock);
        let me = self.me;
        let safe = self
            .heard
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != me)
            .map(|(_, &c)| c)
            .min()
            .unwrap_or(u64::MAX);
        while let Some(Reverse((version, _))) = self.tombstones.peek() {
            if version.0 > safe {
                break;
            }
            let Some(Reverse((version, topic))) = self.tombstones.pop() else {
                break;
            };
            if self.versions.get(&topic) == Some(&version) {
                self.versions.remove(&topic);
            }
        }
        // A burst of unique topics leaves no oversized tables behind.
        if self.versions.capacity() > 4 * self.versions.len().max(64) {
            self.versions.shrink_to_fit();
        }
        if self.tombstones.capacity() > 4 * self.tombstones.len().max(64) {
            self.tombstones.shrink_to_fit();
        }
    }

    /// Topics with a version kept (live and tombstoned).
    #[cfg(test)]
    pub(super) fn versions_len(&self) -> usize {
        self.versions.len()
    }

    /// Tombstones waiting to expire (some may be superseded already).
    #[cfg(test)]
    pub(super) fn tombstones_len(&self) -> usize {
        self.tombstones.len()
    }
}
