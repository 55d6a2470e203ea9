//! Retained replication: every shard holds a replica of the retained store; a retained
//! PUBLISH is applied locally and broadcast (`Control::Retain`), so SUBSCRIBE reads the
//! local replica without a round trip. Chosen over one owning shard because SUBSCRIBE
//! (with its budgeted wildcard lookup) then never waits on another core, and retained
//! *sets* are rare next to publishes; the cost is N copies of the (shared, `Bytes`)
//! payload references and eventual consistency of microseconds.
//!
//! This module owns the versions that make replicas converge: each set carries a Lamport
//! version (clock, shard), and every replica keeps the highest version per topic, so
//! concurrent sets of one topic on two shards leave the same winner everywhere. It never
//! touches the retained store itself (routing owns it) and never sends.

use std::collections::HashMap;

use crate::codec::ByteStr;
use crate::mailbox::ShardId;

/// A retained set's version: (Lamport clock, shard that set it).
pub(in crate::broker) type Version = (u64, ShardId);

#[derive(Debug, Default)]
pub(super) struct Replication {
    clock: u64,
    versions: HashMap<ByteStr, Version>,
}

impl Replication {
    /// A set of `topic` on this shard `me`: its version.
    pub(super) fn local_set(&mut self, topic: &ByteStr, me: ShardId) -> Version {
        self.clock += 1;
        let version = (self.clock, me);
        self.versions.insert(topic.clone(), version);
        version
    }

    /// A set of `topic` from another shard: whether it wins over what this replica has
    /// (false: a later set of this topic already won here).
    pub(super) fn remote_set(&mut self, topic: &ByteStr, version: Version) -> bool {
        self.clock = self.clock.max(version.0);
        let newer = self.versions.get(topic).map_or(true, |&v| v < version);
        if newer {
            self.versions.insert(topic.clone(), version);
        }
        newer
    }
}
