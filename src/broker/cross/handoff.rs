//! Where sessions live across shards, and moving them: the home-shard directory (client
//! id -> shard holding its session), CONNECTs waiting for their home shard, takeovers
//! deferred behind them, the sequence-number watermarks that make a move exact, and the
//! per-session [`Handoff`] state a slot carries while its session moves.
//!
//! The protocol: client id -> home shard `fnv(id) % N` holds the directory. CONNECT on k
//! sends `Claim` to the home, which records k and sends `Takeover` to the previous owner
//! s (or `Moved{None}` straight to k). s closes the old connection, and for a resumed
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
    pub(in crate::broker) uid: u64,
    pub(in crate::broker) connect: Box<Connect>,
    pub(in crate::broker) accepted: Accepted,
    /// Packets the client pipelined after CONNECT, replayed once it completes.
    pub(in crate::broker) queued: Vec<Packet>,
}

/// The home-shard directory and the CONNECTs in flight on this shard.
#[derive(Debug, Default)]
pub(super) struct Directory {
    /// Client id -> shard holding its session (for the ids whose home is this shard).
    owners: HashMap<ByteStr, ShardId>,
    /// CONNECTs waiting for their home shard, by connection.
    pending: HashMap<ConnId, Box<PendingConnect>>,
    /// Takeovers postponed until a pending CONNECT of the same client completes.
    deferred: Vec<Control>,
}

impl Directory {
    /// Records that `client_id`'s session now lives on `shard`; returns the previous
    /// owner.
    pub(super) fn claim(&mut self, client_id: ByteStr, shard: ShardId) -> Option<ShardId> {
        self.owners.insert(client_id, shard)
    }

    /// `from` says the session of `client_id` ended there.
    pub(super) fn forget(&mut self, client_id: &ByteStr, from: ShardId) {
        if self.owners.get(client_id) == Some(&from) {
            self.owners.remove(client_id);
        }
    }

    pub(super) fn add_pending(&mut self, conn: ConnId, pending: Box<PendingConnect>) {
        self.pending.insert(conn, pending);
    }

    /// Queues a packet pipelined after the pending CONNECT of `conn`.
    pub(super) fn queue_pipelined(&mut self, conn: ConnId, packet: Packet) {
        if let Some(p) = self.pending.get_mut(&conn) {
            p.queued.push(packet);
        }
    }

    /// The pending CONNECT of connection `conn`, if it is still connection `uid`.
    pub(super) fn take_pending(&mut self, conn: ConnId, uid: u64) -> Option<Box<PendingConnect>> {
        match self.pending.remove(&conn) {
            Some(p) if p.uid == uid => Some(p),
            Some(p) => {
                self.pending.insert(conn, p);
                None
            }
            None => None,
        }
    }

    /// Whether a CONNECT of `client_id` other than `except` (connection, uid) waits for
    /// its home shard here.
    pub(super) fn pending_for(&self, client_id: &ByteStr, except: Option<(ConnId, u64)>) -> bool {
        self.pending
            .iter()
            .any(|(&c, p)| &p.accepted.client_id == client_id && except != Some((c, p.uid)))
    }

    pub(super) fn defer(&mut self, takeover: Control) {
        self.deferred.push(takeover);
    }

    /// The deferred takeovers, once no CONNECT of `client_id` is pending any more.
    pub(super) fn take_deferred(&mut self, client_id: &ByteStr) -> Vec<Control> {
        if self.deferred.is_empty() || self.pending_for(client_id, None) {
            return Vec::new();
        }
        std::mem::take(&mut self.deferred)
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
