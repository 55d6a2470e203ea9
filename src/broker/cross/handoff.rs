//! Where sessions live across shards, and moving them: the home-shard directory (client
//! id -> shard holding its session), CONNECTs waiting for their home shard, takeovers
//! deferred behind them, the sequence-number watermarks that make a move exact, and the
//! per-session [`Handoff`] state a slot carries while its session moves.
//!
//! The protocol: client id -> home shard `fnv(id) % N` holds the directory. CONNECT on k
//! sends `Claim` to the home, which records the claim (k, connection uid) as the latest
//! and sends `Takeover` naming the previous claim to that claim's shard s (or
//! `Moved{None}` straight to k). If that previous claim is still pending on s, the
//! takeover waits for it (see [`Directory`]: waits form a chain, never a cycle); a claim
//! whose client left before it completed still takes effect (the older connection is
//! closed, the session stays offline under it), and `Forget` names the claim so a stale
//! one cannot erase a newer entry. s closes the old connection, and for a resumed persistent
//! session moves the `Session` itself (subscriptions, inflight, queue) to k in `Moved`,
//! leaving a stub.
//!
//! Every message of one publisher reaches the moved session exactly once and in order
//! [MQTT-4.6.0-6], whatever the order in which the shards take their mail. Every
//! cross-shard publish carries its sender's sequence number, and a move splits each
//! publisher's messages in three:
//! - A, taken by s before the move: in the moved session's queue. `Moved` carries how
//!   far s had read from each shard (`floor`); k skips direct messages at or below it.
//! - B, taken by k before it installed (it could not deliver them) or never sent to k (by
//!   a shard that did not know k's interest yet): the stub on s forwards them. `Installed`
//!   carries how far k had read from each shard (`upto`): the stub forwards what it holds
//!   at or below it and drops the rest (k delivers those itself).
//! - C, taken by k after it installed: k holds them until s says `HandoffDone`, then
//!   delivers them after every forwarded B.
//!
//! A third shard j may still have B messages on their way to s when `Installed` arrives,
//! so k, right after installing (and after the `Interest` its install broadcast, on the
//! same lane), asks each such j to `Drain`; j answers s with `DrainAck` on its data lane,
//! behind everything it sent s before, and from then on sends k its messages directly. The
//! stub forwards B messages as they come until every `DrainAck` is in, then sends
//! `HandoffDone` (behind its forwards) and ends. Until `HandoffDone` k defers any takeover
//! of the session, so a session never moves again in the middle of a move.
//!
//! A message still in s's data lane when the reconnect's `Takeover` (control lane) reaches
//! s is a B message: it follows the session to its live connection, even a QoS 0 message
//! published while the session was offline, which an offline session without
//! `queue_qos0_messages` would have skipped. That is within QoS 0's at-most-once (as if it
//! had been published a moment later); QoS 1/2 are exactly once either way.
//!
//! State and decisions only: it never sends (the cross-shard part does), never touches a
//! session or a connection.

use std::collections::HashMap;

use crate::codec::{ByteStr, Connect, Packet};
use crate::mailbox::{ShardId, MAX_SHARDS};
use crate::session::{Accepted, Outgoing};

use super::messages::Control;
use crate::broker::ConnId;

/// Per-slot state of a session handoff (see the module documentation).
#[derive(Debug)]
pub(in crate::broker) enum Handoff {
    /// Old shard, before `Installed`: the session moved to `to`. Messages `to` may also
    /// get directly (it was a destination, or it sent them) wait in `held` for its
    /// watermarks; the others are forwarded at once. `acked`: shards whose `DrainAck`
    /// came before `Installed` (they travel different lanes).
    Stub {
        to: ShardId,
        held: Vec<((ShardId, u64), Outgoing)>,
        acked: u64,
    },
    /// Old shard, after `Installed`: forwards what `to` took before it installed (at or
    /// below `upto`) and what was not sent to `to`, skips the rest, until a `DrainAck`
    /// came from every shard in `waiting` (bit j = shard j). `claim` is the claim that
    /// installed the session on `to` (for `HandoffDone`).
    Draining {
        to: ShardId,
        upto: Vec<u64>,
        waiting: u64,
        claim: u64,
    },
    /// New shard: skips direct messages the old shard had already queued (`floor`) and,
    /// until `HandoffDone`, holds what it would deliver (`held` is `Some`).
    Arrived {
        floor: Vec<u64>,
        held: Option<Vec<Outgoing>>,
    },
}

/// What a slot in handoff does with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::broker) enum Offer {
    Deliver,
    Skip,
    Forward(ShardId),
    Hold,
}

impl Handoff {
    /// A session that just arrived: holds its deliveries until `HandoffDone`.
    pub(in crate::broker) fn arrived(floor: Vec<u64>) -> Self {
        Self::Arrived {
            floor,
            held: Some(Vec::new()),
        }
    }

    /// Decides for a message from `source` (shard, sequence number) that was sent
    /// directly to the shards in `dests`; `me` is this shard.
    pub(in crate::broker) fn offer(
        &self,
        me: ShardId,
        dests: u64,
        source: (ShardId, u64),
    ) -> Offer {
        // Whether `to` gets the message directly (it was a destination, or it sent it).
        let direct = |to: ShardId| (to < MAX_SHARDS && dests & (1 << to) != 0) || source.0 == to;
        match self {
            Self::Stub { to, .. } => {
                if direct(*to) {
                    Offer::Hold
                } else {
                    Offer::Forward(*to)
                }
            }
            Self::Draining { to, upto, .. } => {
                let (from, seq) = source;
                let taken_before_install = upto.get(from).is_some_and(|&u| seq <= u);
                if direct(*to) && !taken_before_install {
                    Offer::Skip // `to` takes it after its install and delivers it
                } else {
                    Offer::Forward(*to)
                }
            }
            Self::Arrived { floor, held } => {
                let (from, seq) = source;
                let queued = from != me && seq != 0 && floor.get(from).is_some_and(|&f| seq <= f);
                if queued {
                    Offer::Skip
                } else if held.is_some() {
                    Offer::Hold
                } else {
                    Offer::Deliver
                }
            }
        }
    }

    pub(in crate::broker) fn hold(&mut self, source: (ShardId, u64), out: Outgoing) {
        match self {
            Self::Stub { held, .. } => held.push((source, out)),
            Self::Arrived {
                held: Some(held), ..
            } => held.push(out),
            _ => {}
        }
    }

    /// The shard this stub forwards to (`None`: not a stub).
    pub(in crate::broker) fn stub_to(&self) -> Option<ShardId> {
        match self {
            Self::Stub { to, .. } | Self::Draining { to, .. } => Some(*to),
            Self::Arrived { .. } => None,
        }
    }

    /// On the stub, when the new shard installed with watermarks `upto` (under claim
    /// `claim`): the held messages it had taken before the install, in order, to forward
    /// to it (it delivers the later ones itself). The stub then drains until the shards
    /// in `waiting` acknowledged. `None`: not a stub waiting for `Installed`.
    pub(in crate::broker) fn installed(
        &mut self,
        upto: Vec<u64>,
        waiting: u64,
        claim: u64,
    ) -> Option<(ShardId, Vec<Outgoing>)> {
        let Self::Stub { to, held, acked } = self else {
            return None;
        };
        let (to, waiting) = (*to, waiting & !*acked);
        let forward = std::mem::take(held)
            .into_iter()
            .filter(|((shard, seq), _)| upto.get(*shard).is_some_and(|&u| *seq <= u))
            .map(|(_, out)| out)
            .collect();
        *self = Self::Draining {
            to,
            upto,
            waiting,
            claim,
        };
        Some((to, forward))
    }

    /// On a draining stub: shard `from` acknowledged (`None` for none, to check).
    /// Returns the new shard and its claim once nobody is left to wait for.
    pub(in crate::broker) fn drain_ack(&mut self, from: Option<ShardId>) -> Option<(ShardId, u64)> {
        if let Self::Stub { acked, .. } = self {
            if let Some(j) = from.filter(|&j| j < MAX_SHARDS) {
                *acked |= 1 << j;
            }
            return None;
        }
        let Self::Draining {
            to, waiting, claim, ..
        } = self
        else {
            return None;
        };
        if let Some(j) = from.filter(|&j| j < MAX_SHARDS) {
            *waiting &= !(1 << j);
        }
        (*waiting == 0).then_some((*to, *claim))
    }

    /// On the new shard, at `HandoffDone`: what it held, in order, to deliver now.
    pub(in crate::broker) fn take_held(&mut self) -> Vec<Outgoing> {
        match self {
            Self::Arrived { held, .. } => held.take().unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Whether this is an arrived session still waiting for `HandoffDone`.
    pub(in crate::broker) fn is_arriving(&self) -> bool {
        matches!(self, Self::Arrived { held: Some(_), .. })
    }
}

/// A CONNECT waiting for its home shard's answer.
#[derive(Debug)]
pub(in crate::broker) struct PendingConnect {
    /// The connection (its uid is the claim, the key of [`Directory::pending`]).
    pub(in crate::broker) conn: ConnId,
    pub(in crate::broker) connect: Box<Connect>,
    pub(in crate::broker) accepted: Accepted,
    /// Packets the client pipelined after CONNECT, replayed once it completes.
    pub(in crate::broker) queued: Vec<Packet>,
}

/// The home-shard directory and the claims in flight on this shard.
///
/// A claim is identified by the uid of the connection that made it (uids are unique
/// across shards). The home shard orders the claims of a client id: each new claim is
/// recorded as the latest and the `Takeover` goes to the shard of the claim before it,
/// naming that claim (`prev`). That shard hands the session over at once if claim `prev`
/// has completed there, or after it completes (the session may still be on its way).
/// So a takeover only ever waits for the claim directly before it, the waits form a
/// chain in claim order and never a cycle, and every claim completes.
#[derive(Debug, Default)]
pub(super) struct Directory {
    /// Client id -> the latest claim of it: (shard, claim), for the ids whose home is
    /// this shard.
    owners: crate::hash::Map<ByteStr, (ShardId, u64)>,
    /// CONNECTs of this shard waiting for their home shard, by claim.
    pending: HashMap<u64, Box<PendingConnect>>,
    /// Takeovers waiting for the pending claim they supersede (the key) to complete.
    deferred: Vec<(u64, Control)>,
}

impl Directory {
    /// Records claim `claim` of `client_id` from `shard` as the latest; returns the
    /// previous latest claim (shard, claim).
    pub(super) fn claim(
        &mut self,
        client_id: ByteStr,
        shard: ShardId,
        claim: u64,
    ) -> Option<(ShardId, u64)> {
        self.owners.insert(client_id, (shard, claim))
    }

    /// `from` says the session that claim `claim` placed there ended.
    pub(super) fn forget(&mut self, client_id: &ByteStr, from: ShardId, claim: u64) {
        if self.owners.get(client_id) == Some(&(from, claim)) {
            self.owners.remove(client_id);
        }
    }

    /// The shard the latest claim of `client_id` names (home shard only).
    #[cfg(test)]
    pub(super) fn owner(&self, client_id: &ByteStr) -> Option<ShardId> {
        self.owners.get(client_id).map(|o| o.0)
    }

    pub(super) fn add_pending(&mut self, claim: u64, pending: Box<PendingConnect>) {
        self.pending.insert(claim, pending);
    }

    /// Queues a packet pipelined after the pending CONNECT of claim `claim`.
    pub(super) fn queue_pipelined(&mut self, claim: u64, packet: Packet) {
        if let Some(p) = self.pending.get_mut(&claim) {
            p.queued.push(packet);
        }
    }

    /// The pending CONNECT of claim `claim`, made by connection `conn`.
    pub(super) fn take_pending(&mut self, conn: ConnId, claim: u64) -> Option<Box<PendingConnect>> {
        self.pending.remove(&claim).filter(|p| p.conn == conn)
    }

    /// Whether claim `claim` waits for its home shard here.
    pub(super) fn is_pending(&self, claim: u64) -> bool {
        self.pending.contains_key(&claim)
    }

    /// Postpones `takeover` until pending claim `prev` completes.
    pub(super) fn defer(&mut self, prev: u64, takeover: Control) {
        self.deferred.push((prev, takeover));
    }

    /// The takeover that waited for claim `claim`, now that it completed.
    pub(super) fn take_deferred(&mut self, claim: u64) -> Option<Control> {
        let at = self.deferred.iter().position(|(prev, _)| *prev == claim)?;
        Some(self.deferred.swap_remove(at).1)
    }

    /// Nothing in flight (for the model checks).
    #[cfg(test)]
    pub(super) fn is_quiet(&self) -> bool {
        self.pending.is_empty() && self.deferred.is_empty()
    }
}

/// Sequence numbers of cross-shard publishes: the last this shard sent, and the last it
/// took from each shard.
#[derive(Debug)]
pub(super) struct Watermarks {
    sent: u64,
    seen: Vec<u64>,
}

impl Watermarks {
    pub(super) fn new(shards: usize) -> Self {
        Self {
            sent: 0,
            seen: vec![0; shards],
        }
    }

    /// The sequence number of the next publish this shard sends.
    pub(super) fn next_sent(&mut self) -> u64 {
        self.sent += 1;
        self.sent
    }

    pub(super) fn seen(&mut self, from: ShardId, seq: u64) {
        if let Some(s) = self.seen.get_mut(from) {
            *s = seq;
        }
    }

    /// The last sequence number taken from each shard, `me`'s last sent for itself.
    pub(super) fn snapshot(&self, me: ShardId) -> Vec<u64> {
        let mut v = self.seen.clone();
        if let Some(m) = v.get_mut(me) {
            *m = self.sent;
        }
        v
    }
}
