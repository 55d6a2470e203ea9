//! The messages shards exchange through their mailboxes: [`ShardMsg`] (a publish, the hot
//! case, or a boxed [`Control`]), the session on its way between shards, a shard's
//! `$SYS` report and the home shard of a client id.
//!
//! Types and pure functions only: nothing here keeps state, sends or receives.

use std::sync::Arc;

use smallvec::SmallVec;

use crate::codec::ByteStr;
use crate::mailbox::{Lane, ShardId};
use crate::metrics::Stats;
use crate::retained::RetainedMessage;
use crate::session::{Message, Outgoing, Session};

use crate::broker::ConnId;

/// One message between shards. Publishes are the hot case and stay small; control
/// messages are boxed.
#[derive(Debug)]
pub enum ShardMsg {
    /// Deliver to the receiver's local subscribers. `dests` is the set of shards the
    /// sender addressed (bit j = shard j).
    Publish {
        msg: Arc<Message>,
        dests: u64,
        /// The sender's sequence number (handoff watermarks).
        seq: u64,
    },
    /// A publish that also asks the receiver to serve shared subscription groups (see
    /// `routing/shared.rs`): as `Publish`, plus the groups whose member the receiver
    /// picks. Boxed so the hot `Publish` stays small.
    Shared(Box<SharedPublish>),
    Control(Box<Control>),
}

/// The shared subscription groups one shard serves for one message.
pub type SharePublishTargets = SmallVec<[ShareTarget; 1]>;

/// A [`ShardMsg::Shared`] publish.
#[derive(Debug)]
pub struct SharedPublish {
    pub msg: Arc<Message>,
    pub dests: u64,
    pub seq: u64,
    pub groups: SharePublishTargets,
    /// Only for the groups: the receiver's plain subscribers already had it (a message
    /// handed over by a member that left its group).
    pub groups_only: bool,
}

/// A shared subscription group the receiving shard serves for one message: the
/// receiver's id of the group (as its `ShareInterest` named it) and the member number the
/// sender's strategy picked among the receiver's members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareTarget {
    pub group: u64,
    pub pick: u32,
}

impl ShardMsg {
    /// The mailbox lane it travels on: control never waits behind data, except
    /// `Installed` and `DrainAck`, which must not overtake the publishes sent before them
    /// (the mailbox documentation says why, message by message).
    pub fn lane(&self) -> Lane {
        match self {
            Self::Publish { .. } | Self::Shared(_) => Lane::Data,
            Self::Control(c)
                if matches!(**c, Control::Installed { .. } | Control::DrainAck { .. }) =>
            {
                Lane::Data
            }
            Self::Control(_) => Lane::Control,
        }
    }

    /// Whether it must wake a sleeping receiver. Only `Release` need not: it hands
    /// memory back and nobody waits for it, so it rides along with the receiver's next
    /// wake-up (or loop iteration) instead of costing one of its own: in a stream of
    /// cross-shard publishes that is one wake of the publishing shard per batch saved.
    pub fn wakes(&self) -> bool {
        !matches!(self, Self::Control(c) if matches!(**c, Control::Release(_)))
    }
}

/// Rare cross-shard messages.
#[derive(Debug)]
pub enum Control {
    /// The sender's local index gained (or lost) its only subscriptions to `filter`.
    /// An addition carries a sequence number (`seq > 0`) for the receiver to acknowledge
    /// once applied (see `interest.rs`).
    /// It leaves with the interest table's snapshot taken after the change (see
    /// `interest.rs`); the receiver routes by the newest it was sent.
    Interest {
        filter: ByteStr,
        add: bool,
        seq: u64,
        snapshot: Option<super::InterestSnapshot>,
    },
    /// The sender has `members` members of the shared subscription group `share`
    /// (`$share/GROUP/FILTER`) now, and names the group `group` in [`ShareTarget`]s. The
    /// first member's broadcast carries a sequence number (`seq > 0`) to acknowledge
    /// with `InterestAck`, as `Interest` does.
    ShareInterest {
        share: ByteStr,
        members: u32,
        group: u64,
        seq: u64,
    },
    /// The sender applied the receiver's Interest broadcasts up to `seq`.
    InterestAck { seq: u64 },
    /// A retained message was set (empty payload: deleted) on the sender, with its
    /// version (Lamport clock, sender): every replica keeps the highest version per
    /// topic, so concurrent sets on two shards converge to the same winner everywhere.
    Retain(Box<RetainedMessage>, (u64, ShardId)),
    /// The sender's retained clock after the `Retain`s it sent before this: no set it
    /// makes from now on is older (tombstones of deleted topics expire on it).
    RetainClock(u64),
    /// To the home shard: a CONNECT for `client_id` arrived on the sender.
    Claim {
        client_id: ByteStr,
        conn: ConnId,
        conn_uid: u64,
        clean_start: bool,
    },
    /// From the home shard to the owner the previous claim `prev` named: hand the
    /// session to `to` once claim `prev` has completed there.
    Takeover {
        client_id: ByteStr,
        to: ShardId,
        conn: ConnId,
        conn_uid: u64,
        clean_start: bool,
        prev: u64,
    },
    /// To the connecting shard: the previous session (resumed) or none.
    Moved {
        client_id: ByteStr,
        conn: ConnId,
        conn_uid: u64,
        session: Option<MovedSession>,
    },
    /// To the previous owner: the moved session is installed (under claim `claim`); the
    /// stub forwards what the new shard had taken before (`upto[j]`: the last sequence
    /// number it had taken from shard j, its own for itself) and drains (see
    /// `handoff.rs`).
    Installed {
        client_id: ByteStr,
        uid: u64,
        upto: Vec<u64>,
        claim: u64,
    },
    /// From the new shard to each third shard, behind the `Interest` its install sent:
    /// answer `reply_to` (the old shard) with a `DrainAck` behind what you sent it.
    Drain {
        client_id: ByteStr,
        uid: u64,
        reply_to: ShardId,
    },
    /// To the old shard, on the data lane: everything the sender sent it before is in,
    /// and the sender knows the new shard's interest.
    DrainAck { client_id: ByteStr, uid: u64 },
    /// From the old shard to the new one, behind every `Forward`: the move of session
    /// `uid` (installed under `claim`) is complete; deliver what you held.
    HandoffDone {
        client_id: ByteStr,
        uid: u64,
        claim: u64,
    },
    /// To the home shard: the session of `client_id` on the sender ended.
    /// (`claim`: the claim that placed it there; ignored by the home shard if a later
    /// claim of the client id was recorded since).
    Forget { client_id: ByteStr, claim: u64 },
    /// From a stub: a message for the moved session `uid`.
    Forward {
        client_id: ByteStr,
        uid: u64,
        out: Outgoing,
    },
    /// To shard 0 every `sys_interval`: the sender's counters.
    Report(Box<ShardReport>),
    /// Flow control: the sender's session `session` (uid) is over its limit with messages
    /// that the receiver's connection `conn` (uid `conn_uid`) published: stop reading it.
    Pause {
        conn: ConnId,
        conn_uid: u64,
        session: u64,
    },
    /// Flow control: the session of an earlier `Pause` drained, was cut, ended or moved
    /// away: it no longer holds the connection back.
    Resume {
        conn: ConnId,
        conn_uid: u64,
        session: u64,
    },
    /// Messages the sender published to us and we were the last to hold: dropped here,
    /// on the thread that allocated them, so allocator caches stay per-thread and no
    /// free takes another thread's arena lock.
    Release(Vec<Arc<Message>>),
}

/// A session on its way between shards, with the old shard's watermarks: `floor[j]` is
/// the last sequence number it had taken from shard j (its own last sent for itself)
/// before the move, so those messages are already in the session.
#[derive(Debug)]
pub struct MovedSession {
    pub session: Box<Session>,
    pub floor: Vec<u64>,
    /// Its ACL, user name and listener (as in its slot on the old shard).
    pub security: Option<Box<crate::auth::ClientSecurity>>,
    pub username: Option<ByteStr>,
    pub listener: usize,
}

/// What one shard tells shard 0 for `$SYS`.
#[derive(Debug, Clone)]
pub struct ShardReport {
    pub shard: ShardId,
    pub stats: Stats,
    /// Event-loop lag (readiness to handling, worst of the last interval), microseconds.
    pub loop_lag_us: u64,
}

/// FNV-1a: stable across shards and runs, cheap for short client ids.
pub fn home_shard(client_id: &str, shards: usize) -> ShardId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in client_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % shards.max(1) as u64) as usize
}
