//! The replicated shard-interest protocol and the SUBACKs that wait for it.
//!
//! When this shard's local index gains its first subscription to a filter it broadcasts
//! `Control::Interest{add}` with a fresh sequence number; every other shard records the
//! interest in its index and answers `Control::InterestAck{seq}`. Mailboxes are FIFO, so
//! the acknowledgements of one shard arrive in sequence order and one watermark per shard
//! (`interest_acked[j]`: the highest sequence number shard j applied) says what it knows.
//!
//! A SUBACK means "new publishes matching these filters are delivered from now on", on
//! every shard. So a SUBACK whose filters have an Interest broadcast that some shard has
//! not yet acknowledged is held in `held_subacks` until every other shard's watermark
//! reaches the filters' sequence number (a second subscriber of a filter whose broadcast
//! is still in flight waits for the same number), and the SUBACKs of one connection
//! leave in order. The retained messages of a held SUBACK follow it (as with one shard:
//! clients commonly expect them after the SUBACK); live matching PUBLISH packets may
//! precede it [MQTT-3.8.4]. UNSUBACK is never held: after it a few extra messages are
//! tolerable.
//! With one shard nothing is broadcast or held.
//!
//! It never touches the publish path: only SUBSCRIBE, UNSUBSCRIBE and control messages.

use std::time::Instant;

use smallvec::SmallVec;

use crate::codec::{ByteStr, Packet, QoS, SubAck};
use crate::topic::TopicFilter;

use super::shards::{remote_key, Control, ShardId, MAX_SHARDS};
use super::{Broker, ConnId, ConnState};

/// The interest this shard advertises for one filter.
#[derive(Debug, Clone, Copy)]
pub(super) struct FilterInterest {
    /// Local subscriptions to the filter.
    pub subscribers: u32,
    /// Sequence number of the `Interest{add}` broadcast for it.
    pub seq: u64,
}

/// A SUBACK waiting for the other shards to acknowledge an Interest broadcast.
#[derive(Debug)]
pub(super) struct HeldSubAck {
    conn: ConnId,
    conn_uid: u64,
    /// Sent once every other shard acknowledged Interest broadcasts up to this number.
    seq: u64,
    suback: SubAck,
    then: RetainedAfter,
}

/// The retained lookups a SUBSCRIBE starts once its SUBACK is queued: (filter, granted
/// QoS) and the subscription identifier.
#[derive(Debug, Default)]
pub(super) struct RetainedAfter {
    pub filters: SmallVec<[(TopicFilter, QoS); 1]>,
    pub sub_id: Option<u32>,
}

impl Broker {
    /// The local index gained a subscription to `filter`.
    pub(super) fn filter_added(&mut self, filter: &ByteStr) {
        if self.shards <= 1 {
            return;
        }
        if let Some(f) = self.filter_counts.get_mut(filter) {
            f.subscribers += 1;
            return;
        }
        self.interest_seq += 1;
        let seq = self.interest_seq;
        self.filter_counts.insert(
            filter.clone(),
            FilterInterest {
                subscribers: 1,
                seq,
            },
        );
        self.broadcast(|| Control::Interest {
            filter: filter.clone(),
            add: true,
            seq,
        });
    }

    /// The local index lost a subscription to `filter`.
    pub(super) fn filter_removed(&mut self, filter: &ByteStr) {
        if self.shards <= 1 {
            return;
        }
        let Some(f) = self.filter_counts.get_mut(filter) else {
            return;
        };
        f.subscribers = f.subscribers.saturating_sub(1);
        if f.subscribers == 0 {
            self.filter_counts.remove(filter);
            self.broadcast(|| Control::Interest {
                filter: filter.clone(),
                add: false,
                seq: 0,
            });
        }
    }

    /// Another shard's interest changed: update the index, acknowledge an addition.
    pub(super) fn on_interest(&mut self, from: ShardId, filter: ByteStr, add: bool, seq: u64) {
        if from == self.shard || from >= MAX_SHARDS {
            return;
        }
        if add {
            if let Ok(f) = TopicFilter::try_from(filter) {
                let interest = crate::session::Subscription {
                    options: crate::codec::SubscriptionOptions::default(),
                    id: None,
                };
                if self.index.insert(&f, remote_key(from), interest).is_none() {
                    self.remote_entries += 1;
                }
            }
        } else if self
            .index
            .remove(filter.as_str(), &remote_key(from))
            .is_some()
        {
            self.remote_entries -= 1;
        }
        if seq != 0 {
            // Applied: publishes from here on reach `from`'s new subscriber.
            self.send_control(from, Control::InterestAck { seq });
        }
    }

    /// Shard `from` applied our Interest broadcasts up to `seq`: send the SUBACKs that
    /// waited for it.
    pub(super) fn on_interest_ack(&mut self, from: ShardId, seq: u64, now: Instant) {
        let Some(acked) = self.interest_acked.get_mut(from) else {
            return;
        };
        *acked = (*acked).max(seq);
        if self.held_subacks.is_empty() {
            return;
        }
        let done = self.interest_done();
        let mut ready = Vec::new();
        let mut i = 0;
        while i < self.held_subacks.len() {
            if self.held_subacks[i].seq <= done {
                if let Some(h) = self.held_subacks.remove(i) {
                    ready.push(h);
                }
            } else {
                i += 1;
            }
        }
        for h in ready {
            let Some(c) = self.conn(h.conn) else { continue };
            let ConnState::Active(key) = c.state else {
                continue;
            };
            if c.uid != h.conn_uid {
                continue; // another connection now: the subscriber left
            }
            if let Some(slot) = self.sessions.get_mut(key) {
                slot.session.send(Packet::SubAck(h.suback));
                self.flush_session(key, now);
                for (filter, granted) in h.then.filters {
                    self.send_retained(key, &filter, granted, h.then.sub_id, now);
                }
            }
        }
    }

    /// The highest sequence number every other shard has acknowledged.
    fn interest_done(&self) -> u64 {
        self.interest_acked
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != self.shard)
            .map(|(_, &a)| a)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Queues the SUBACK for session `key` now and returns `then` for the caller to
    /// start, or holds both until the Interest broadcasts of `filters` (and the SUBACKs
    /// this connection is already waiting for) are acknowledged by every other shard.
    pub(super) fn send_suback(
        &mut self,
        key: usize,
        filters: &[ByteStr],
        suback: SubAck,
        then: RetainedAfter,
    ) -> Option<RetainedAfter> {
        let mut need = 0;
        if self.shards > 1 {
            need = filters
                .iter()
                .filter_map(|f| self.filter_counts.get(f))
                .map(|f| f.seq)
                .max()
                .unwrap_or(0);
        }
        let conn = self
            .sessions
            .get(key)
            .and_then(|s| s.conn)
            .and_then(|c| self.conn(c).map(|x| (c, x.uid)));
        if let Some((conn, conn_uid)) = conn {
            // SUBACKs of one connection leave in order.
            for h in &self.held_subacks {
                if h.conn == conn && h.conn_uid == conn_uid {
                    need = need.max(h.seq);
                }
            }
            if need > self.interest_done() {
                self.held_subacks.push_back(HeldSubAck {
                    conn,
                    conn_uid,
                    seq: need,
                    suback,
                    then,
                });
                return None;
            }
        }
        let slot = self.sessions.get_mut(key)?;
        slot.session.send(Packet::SubAck(suback));
        Some(then)
    }

    /// The connection ended: its held SUBACKs go nowhere.
    pub(super) fn drop_held_subacks(&mut self, conn: ConnId) {
        if !self.held_subacks.is_empty() {
            self.held_subacks.retain(|h| h.conn != conn);
        }
    }
}
