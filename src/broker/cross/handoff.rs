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
//! one cannot erase a newer entry. s closes the old connection, and for a resumed
//! persistent session moves the `Session` itself (subscriptions, inflight, queue) to k in
//! `Moved`, leaving a stub until k says `Installed`. Watermarks make the handoff exact:
//! every cross-shard publish carries its sender's sequence number; `Moved` carries how far
//! s had read from each shard (k skips direct messages at or below it: already queued),
//! and `Installed` how far k had read when it installed. The stub forwards at once what k
//! will never get directly, holds what k might, and on `Installed` forwards only those k
//! had read before the install (k could not deliver them then).
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
    /// Old shard: the session moved to `to`. Messages `to` may also get directly (it
    /// was a destination, or it sent them) wait in `held` for its `Installed`
    /// watermarks; the others are forwarded at once.
    Stub {
        to: ShardId,
        held: Vec<((ShardId, u64), Outgoing)>,
    },
    /// New shard: skip direct messages the old shard had already queued.
    Arrived { floor: Vec<u64> },
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
    /// Decides for a message from `source` (shard, sequence number) that was sent
    /// directly to the shards in `dests`; `me` is this shard.
    pub(in crate::broker) fn offer(
        &self,
        me: ShardId,
        dests: u64,
        source: (ShardId, u64),
    ) -> Offer {
        match self {
            Self::Stub { to, .. } => {
                let direct = *to < MAX_SHARDS && dests & (1 << to) != 0;
                if direct || source.0 == *to {
                    Offer::Hold
                } else {
                    Offer::Forward(*to)
                }
            }
            Self::Arrived { floor } => {
                let (from, seq) = source;
                let queued = from != me && seq != 0 && floor.get(from).is_some_and(|&f| seq <= f);
                if queued {
                    Offer::Skip
                } else {
                    Offer::Deliver
                }
            }
        }
    }

    pub(in crate::broker) fn hold(&mut self, source: (ShardId, u64), out: Outgoing) {
        if let Self::Stub { held, .. } = self {
            held.push((source, out));
        }
    }

    /// The shard this stub forwards to (`None`: not a stub).
    pub(in crate::broker) fn stub_to(&self) -> Option<ShardId> {
        match self {
            Self::Stub { to, .. } => Some(*to),
            Self::Arrived { .. } => None,
        }
    }

    /// On the stub, when the new shard installed with watermarks `upto`: the held
    /// messages the new shard had not taken directly before the install, in order, and
    /// the shard to forward them to. `None`: not a stub.
    pub(in crate::broker) fn take_unseen(
        &mut self,
        upto: &[u64],
    ) -> Option<(ShardId, Vec<Outgoing>)> {
        let Self::Stub { to, held } = self else {
            return None;
        };
        let unseen = std::mem::take(held)
            .into_iter()
            // Taken by the new shard after it installed: it delivered them itself.
            .filter(|((shard, seq), _)| !upto.get(*shard).is_some_and(|&u| *seq > u))
            .map(|(_, out)| out)
            .collect();
        Some((*to, unseen))
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
    owners: HashMap<ByteStr, (ShardId, u64)>,
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
