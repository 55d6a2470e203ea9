//! The cross-shard part of a shard's broker: everything one shard keeps about the others
//! and says to them. It owns the outbox of [`ShardMsg`]s (drained by the runtime into the
//! mailbox rings), the publish sequence numbers, the messages to hand back for freeing,
//! the allocations of messages handed back (`recycle.rs`), and four protocols, one file
//! each:
//! - `interest.rs`: the process-wide shard-interest table (which filters this shard
//!   advertises) and the SUBACKs held until every shard applied its snapshot;
//! - `handoff.rs`: the home-shard directory, CONNECTs waiting for their home, deferred
//!   takeovers, and the watermarks and per-slot state of a session move;
//! - `replication.rs`: versions of retained sets, so every replica converges, and the
//!   clock announcements that let deleted topics' versions expire;
//! - `reports.rs`: the `$SYS` reports shard 0 sums up.
//!
//! The message types are in `messages.rs`. This part never blocks and never touches a
//! mailbox, a session, a connection or the subscription index: it decides what to send and
//! what it learnt, and the coordinator (`shard_msg.rs`) applies that to the other parts.
//! Nothing is sent to itself except what the runtime loops back.

mod handoff;
mod interest;
mod messages;
mod recycle;
mod replication;
mod reports;

use std::collections::VecDeque;
use std::sync::Arc;

use crate::codec::{ByteStr, Packet};
use crate::mailbox::{ShardId, MAX_SHARDS};
use crate::metrics::Stats;
use crate::retained::RetainedMessage;
use crate::session::Message;

use super::ConnId;

pub(super) use handoff::{Handoff, Offer, PendingConnect};
#[cfg(test)]
pub(super) use interest::MAX_HELD_SUBACKS;
pub(super) use interest::{HeldSubAck, RetainedAfter};
pub use interest::{InterestSnapshot, InterestTable};
pub use messages::{
    home_shard, Control, MovedSession, ShardMsg, ShardReport, SharePublishTargets, ShareTarget,
    SharedPublish,
};
pub(super) use replication::Version;

/// This shard's view of the other shards.
#[derive(Debug)]
pub(super) struct CrossShard {
    me: ShardId,
    shards: usize,
    /// Messages for other shards, in order.
    outbox: VecDeque<(ShardId, ShardMsg)>,
    /// Messages from each shard to hand back for freeing (see `Control::Release`).
    releases: Vec<Vec<Arc<Message>>>,
    releases_pending: bool,
    /// Allocations of this shard's messages that came back, for the next ones.
    recycler: recycle::Recycler,
    watermarks: handoff::Watermarks,
    directory: handoff::Directory,
    interest: interest::Interest,
    replication: replication::Replication,
    reports: reports::Reports,
}

impl CrossShard {
    /// Shard `me` of `shards` (1..=[`MAX_SHARDS`]).
    pub(super) fn new(me: ShardId, shards: usize, table: Arc<InterestTable>) -> Self {
        Self {
            me,
            shards,
            outbox: VecDeque::new(),
            releases: (0..shards).map(|_| Vec::new()).collect(),
            releases_pending: false,
            recycler: recycle::Recycler::default(),
            watermarks: handoff::Watermarks::new(shards),
            directory: handoff::Directory::default(),
            interest: interest::Interest::new(me, shards, table),
            replication: replication::Replication::new(me, shards),
            reports: reports::Reports::new(me, shards),
        }
    }

    pub(super) fn me(&self) -> ShardId {
        self.me
    }

    pub(super) fn shards(&self) -> usize {
        self.shards
    }

    /// More than one shard: the protocols are on.
    pub(super) fn is_multi(&self) -> bool {
        self.shards > 1
    }

    /// The home shard of `client_id`.
    pub(super) fn home_of(&self, client_id: &str) -> ShardId {
        home_shard(client_id, self.shards)
    }

    // --- the outbox ---------------------------------------------------------------------

    /// Next message for another shard (or for this one: the runtime loops it back).
    pub(super) fn poll_message(&mut self) -> Option<(ShardId, ShardMsg)> {
        if self.outbox.is_empty() && self.is_multi() {
            // After this drain's retained sets (FIFO), once per drain.
            if let Some(clock) = self.replication.announce() {
                self.broadcast(|| Control::RetainClock(clock));
            }
        }
        if self.outbox.is_empty() && self.releases_pending {
            self.releases_pending = false;
            for (to, batch) in self.releases.iter_mut().enumerate() {
                if !batch.is_empty() {
                    let batch = std::mem::take(batch);
                    self.outbox
                        .push_back((to, ShardMsg::Control(Box::new(Control::Release(batch)))));
                }
            }
        }
        let mut next = self.outbox.pop_front();
        if let Some((_, ShardMsg::Control(control))) = &mut next {
            if let Control::Interest { snapshot, .. } = control.as_mut() {
                // The table as it is now: one snapshot for all the changes made since
                // the last one (a read of pipelined SUBSCRIBEs changes it in place).
                if snapshot.is_none() {
                    *snapshot = Some(self.interest.announce());
                }
            }
        }
        next
    }

    pub(super) fn send(&mut self, to: ShardId, control: Control) {
        self.outbox
            .push_back((to, ShardMsg::Control(Box::new(control))));
    }

    fn broadcast(&mut self, mut make: impl FnMut() -> Control) {
        for j in 0..self.shards {
            if j != self.me {
                self.send(j, make());
            }
        }
    }

    // --- publishes ----------------------------------------------------------------------

    /// The sequence number of a publish about to go to `dests` (0 when it goes nowhere).
    pub(super) fn publish_seq(&mut self, dests: u64) -> u64 {
        if dests == 0 {
            0
        } else {
            self.watermarks.next_sent()
        }
    }

    /// Sends `msg` to every shard in `dests`; the last one gets the `Arc` itself, so this
    /// shard does not touch the reference count again while the receivers use it.
    /// `groups(j)` names the shared subscription groups shard j serves for it (see
    /// `routing/shared.rs`).
    pub(super) fn send_publish(
        &mut self,
        msg: Arc<Message>,
        dests: u64,
        seq: u64,
        mut groups: impl FnMut(ShardId) -> SharePublishTargets,
    ) {
        let mut remaining = dests;
        let mut msg = Some(msg);
        while remaining != 0 {
            let j = remaining.trailing_zeros() as usize;
            remaining &= remaining - 1;
            let m = if remaining == 0 {
                msg.take()
            } else {
                msg.as_ref().map(Arc::clone)
            };
            if let Some(msg) = m {
                let groups = groups(j);
                let message = if groups.is_empty() {
                    ShardMsg::Publish { msg, dests, seq }
                } else {
                    ShardMsg::Shared(Box::new(SharedPublish {
                        msg,
                        dests,
                        seq,
                        groups,
                        groups_only: false,
                    }))
                };
                self.outbox.push_back((j, message));
            }
        }
    }

    /// Sends `msg` to shard `to` for one group only (a member's hand-over).
    pub(super) fn send_group_only(
        &mut self,
        to: ShardId,
        msg: Arc<Message>,
        seq: u64,
        target: ShareTarget,
    ) {
        let shared = SharedPublish {
            msg,
            dests: 1 << to,
            seq,
            groups: smallvec::smallvec![target],
            groups_only: true,
        };
        self.outbox
            .push_back((to, ShardMsg::Shared(Box::new(shared))));
    }

    /// A publish from shard `from` with sequence number `seq` was taken.
    pub(super) fn on_publish_taken(&mut self, from: ShardId, seq: u64) {
        self.watermarks.seen(from, seq);
    }

    /// A publish from another shard was delivered: if this shard holds the last
    /// reference, it goes back to its sender to be freed there.
    pub(super) fn release(&mut self, from: ShardId, msg: Arc<Message>) {
        if Arc::strong_count(&msg) == 1 && from != self.me {
            if let Some(batch) = self.releases.get_mut(from) {
                batch.push(msg);
                self.releases_pending = true;
            }
        }
    }

    /// Messages this shard published came back from the last shard that held them
    /// (`Control::Release`): their allocations serve the next messages.
    pub(super) fn on_release(&mut self, batch: Vec<Arc<Message>>) {
        self.recycler.recycle(batch);
    }

    /// A message record for routing, in the allocation of one that came back when there
    /// is one (see `recycle.rs`).
    #[inline]
    pub(super) fn new_message(&mut self, msg: Message) -> Arc<Message> {
        self.recycler.wrap(msg)
    }

    /// Allocations kept for the next messages.
    #[cfg(test)]
    pub(super) fn recycled(&self) -> usize {
        self.recycler.len()
    }

    // --- interest -----------------------------------------------------------------------

    /// The local index gained a subscription to `filter`, its `first` one there
    /// (broadcasts the first one).
    pub(super) fn filter_added(&mut self, filter: &ByteStr, first: bool) {
        if !self.is_multi() {
            return;
        }
        if let Some(seq) = self.interest.filter_added(filter, first) {
            // The table's snapshot is attached as it leaves (`poll_message`).
            self.broadcast(|| Control::Interest {
                filter: filter.clone(),
                add: true,
                seq,
                snapshot: None,
            });
        }
    }

    /// The local index lost a subscription to `filter`, its `last` one there
    /// (broadcasts the last one).
    pub(super) fn filter_removed(&mut self, filter: &ByteStr, last: bool) {
        if self.is_multi() && self.interest.filter_removed(filter, last) {
            self.broadcast(|| Control::Interest {
                filter: filter.clone(),
                add: false,
                seq: 0,
                snapshot: None,
            });
        }
    }

    /// This shard has `members` members of the shared subscription group `share` (id
    /// `group`) now, after one joined (`joined`) or left: every other shard learns the
    /// count; the first member's broadcast is acknowledged (SUBACKs wait for it as for
    /// an `Interest`).
    pub(super) fn group_changed(
        &mut self,
        share: &ByteStr,
        members: u32,
        group: u64,
        joined: bool,
    ) {
        if !self.is_multi() {
            return;
        }
        let seq = if joined {
            self.interest.added(share).unwrap_or(0)
        } else {
            self.interest.removed(share);
            0
        };
        self.broadcast(|| Control::ShareInterest {
            share: share.clone(),
            members,
            group,
            seq,
        });
    }

    /// Whether this shard advertises interest in `filter`.
    #[cfg(test)]
    pub(super) fn advertises(&self, filter: &ByteStr) -> bool {
        self.interest.advertises(filter)
    }

    /// Whether an Interest change from `from` may be applied (not from this shard or
    /// an impossible one).
    pub(super) fn accepts_interest_from(&self, from: ShardId) -> bool {
        from != self.me && from < MAX_SHARDS
    }

    /// The Interest change from `from` was applied: acknowledge an addition.
    pub(super) fn interest_applied(&mut self, from: ShardId, seq: u64) {
        if seq != 0 {
            // Applied: publishes from here on reach `from`'s new subscriber.
            self.send(from, Control::InterestAck { seq });
        }
    }

    /// Shard `from` applied our broadcasts up to `seq`: the SUBACKs that go now.
    pub(super) fn on_interest_ack(&mut self, from: ShardId, seq: u64) -> Vec<HeldSubAck> {
        self.interest.on_ack(from, seq)
    }

    /// Holds `suback` until every other shard applied the Interest broadcasts of
    /// `filters` (and the SUBACKs its connection already waits for left); gives it back
    /// when it may go now. See `interest.rs`.
    pub(super) fn hold_suback(
        &mut self,
        filters: &[ByteStr],
        suback: HeldSubAck,
    ) -> Option<HeldSubAck> {
        if !self.is_multi() {
            return Some(suback);
        }
        self.interest.hold_suback(filters, suback)
    }

    /// The connection ended: its held SUBACKs go nowhere.
    pub(super) fn drop_held_subacks(&mut self, conn: ConnId) {
        self.interest.drop_held(conn);
    }

    /// Whether `conn` has as many SUBACKs held as it may (it is not read meanwhile).
    pub(super) fn held_subacks_at_limit(&self, conn: ConnId) -> bool {
        self.interest.at_limit(conn)
    }

    /// Times a connection reached the held-SUBACK bound.
    pub(super) fn held_suback_limit_hits(&self) -> u64 {
        self.interest.limit_hits()
    }

    #[cfg(test)]
    pub(super) fn held_subacks_for(&self, conn: ConnId) -> usize {
        self.interest.held_for(conn)
    }

    #[cfg(test)]
    pub(super) fn has_held_subacks(&self) -> bool {
        self.interest.has_held()
    }

    // --- sessions: directory and handoff ------------------------------------------------

    /// Asks the home shard of `pending`'s client id where its session is; the CONNECT
    /// waits here until the answer (`Moved`). `claim` is the connection's uid.
    pub(super) fn claim(&mut self, claim: u64, clean_start: bool, pending: Box<PendingConnect>) {
        let client_id = pending.accepted.client_id.clone();
        let control = Control::Claim {
            client_id: client_id.clone(),
            conn: pending.conn,
            conn_uid: claim,
            clean_start,
        };
        self.directory.add_pending(claim, pending);
        let home = self.home_of(client_id.as_str());
        self.send(home, control);
    }

    /// Home shard: `from` claims `client_id`; the shard of the previous claim is told to
    /// hand the session over (after that claim completes), or `from` is told there is
    /// none.
    pub(super) fn on_claim(
        &mut self,
        from: ShardId,
        client_id: ByteStr,
        conn: ConnId,
        conn_uid: u64,
        clean_start: bool,
    ) {
        match self.directory.claim(client_id.clone(), from, conn_uid) {
            Some((owner, prev)) => self.send(
                owner,
                Control::Takeover {
                    client_id,
                    to: from,
                    conn,
                    conn_uid,
                    clean_start,
                    prev,
                },
            ),
            None => self.send(
                from,
                Control::Moved {
                    client_id,
                    conn,
                    conn_uid,
                    session: None,
                },
            ),
        }
    }

    /// Home shard: `from` says the session that `claim` placed there ended.
    pub(super) fn on_forget(&mut self, from: ShardId, client_id: &ByteStr, claim: u64) {
        self.directory.forget(client_id, from, claim);
    }

    /// The session of `client_id` that `claim` placed on this shard ended: tell its home.
    pub(super) fn forget(&mut self, client_id: ByteStr, claim: u64) {
        let home = self.home_of(client_id.as_str());
        self.send(home, Control::Forget { client_id, claim });
    }

    /// A restored session of `client_id` lives here: record it if this is its home.
    pub(super) fn restored(&mut self, client_id: &ByteStr) {
        if self.home_of(client_id.as_str()) == self.me {
            self.directory.claim(client_id.clone(), self.me, 0);
        }
    }

    /// A packet pipelined after the pending CONNECT of claim `claim`.
    pub(super) fn queue_pipelined(&mut self, claim: u64, packet: Packet) {
        self.directory.queue_pipelined(claim, packet);
    }

    /// The pending CONNECT of claim `claim`, made by connection `conn`.
    pub(super) fn take_pending(&mut self, conn: ConnId, claim: u64) -> Option<Box<PendingConnect>> {
        self.directory.take_pending(conn, claim)
    }

    /// Whether claim `claim` of this shard still waits for its home shard.
    pub(super) fn is_pending(&self, claim: u64) -> bool {
        self.directory.is_pending(claim)
    }

    /// Postpones a takeover until pending claim `prev` completes here.
    pub(super) fn defer_takeover(&mut self, prev: u64, takeover: Control) {
        self.directory.defer(prev, takeover);
    }

    /// The takeover that waited for claim `claim`, now that it completed.
    pub(super) fn take_deferred(&mut self, claim: u64) -> Option<Control> {
        self.directory.take_deferred(claim)
    }

    /// The shard the latest claim of `client_id` names (home shard; model checks).
    #[cfg(test)]
    pub(super) fn claim_owner(&self, client_id: &ByteStr) -> Option<ShardId> {
        self.directory.owner(client_id)
    }

    /// No claim waits for its home and no takeover for a claim (model checks).
    #[cfg(test)]
    pub(super) fn claims_quiet(&self) -> bool {
        self.directory.is_quiet()
    }

    /// The last sequence number taken from each shard, this shard's last sent for itself.
    pub(super) fn watermarks(&self) -> Vec<u64> {
        self.watermarks.snapshot(self.me)
    }

    // --- retained replication -----------------------------------------------------------

    /// Sends a retained set made on this shard to every other replica.
    pub(super) fn replicate_retained(&mut self, msg: &RetainedMessage) {
        if self.is_multi() {
            let deleted = msg.payload.is_empty();
            let version = self.replication.local_set(&msg.topic, deleted);
            self.broadcast(|| Control::Retain(Box::new(msg.clone()), version));
        }
    }

    /// A retained set from another shard: whether to apply it to this replica.
    pub(super) fn accept_retained(&mut self, msg: &RetainedMessage, version: Version) -> bool {
        self.replication
            .remote_set(&msg.topic, version, msg.payload.is_empty())
    }

    /// Shard `from` announced its retained clock: expired tombstones go.
    pub(super) fn on_retain_clock(&mut self, from: ShardId, clock: u64) {
        self.replication.on_clock(from, clock);
    }

    /// (versions kept, tombstones waiting) of the retained replication.
    #[cfg(test)]
    pub(super) fn retain_versions(&self) -> (usize, usize) {
        (
            self.replication.versions_len(),
            self.replication.tombstones_len(),
        )
    }

    // --- $SYS reports -------------------------------------------------------------------

    pub(super) fn on_report(&mut self, report: ShardReport) {
        self.reports.store(report);
    }

    pub(super) fn note_loop_lag(&mut self, us: u64) {
        self.reports.note_loop_lag(us);
    }

    pub(super) fn loop_lag_us(&self) -> u64 {
        self.reports.loop_lag_us()
    }

    pub(super) fn reset_loop_lag(&mut self) {
        self.reports.reset_loop_lag();
    }

    /// Shard 0: every shard's counters summed with `own`.
    pub(super) fn aggregate_stats(&self, own: &Stats) -> Stats {
        self.reports.aggregate(own)
    }

    /// Per-shard `(shard, loop lag us, clients connected)`.
    pub(super) fn shard_lags(&self, own_connected: u64) -> Vec<(ShardId, u64, u64)> {
        self.reports.lags(own_connected)
    }
}
