//! The coordinator's shared subscription paths (`$share/GROUP/FILTER`): a subscription
//! entering or leaving routing (a plain filter's index entry and interest, or a group's
//! membership and member count on every shard), the member each group's copy of a
//! message goes to, and the hand-over of a leaving member's unacknowledged messages.
//!
//! The choice of shard and the group table are routing's (`routing/shared.rs`); this
//! file judges a member's room (connected, output and QoS 1/2 queue not full, nothing
//! waiting behind its window: a member that stops acknowledging is passed over while
//! another has room, and each time the strategy's member is passed over is counted in
//! `$SYS/broker/shared/skipped`). A member's copy travels the ordinary delivery path
//! (`publish.rs` `deliver`), so ACLs, flow control and session moves apply unchanged: a
//! group's copy reaches one shard only, so it is never "direct" for a move's
//! bookkeeping. It never drops a QoS 1/2 message a member had not acknowledged when it
//! left: another member gets it (on this shard, or on one with members), or it stays
//! with the leaving session when the group has no other member. A message that arrives
//! for a group whose last member here left meanwhile is passed on the same way.
//!
//! An in-process member (a host's `$share/` [`crate::Subscription`]) is held by one
//! shard (its subscription id modulo the shard count), in the group table under a key
//! no session has (`INTERNAL_MEMBER` + id); it has room while its channel is not full,
//! and its copy goes into that channel instead of a session.

use std::sync::Arc;
use std::time::Instant;

use crate::codec::{ByteStr, SubscriptionOptions};
use crate::config::ShareStrategy;
use crate::mailbox::ShardId;
use crate::metrics::DropReason;
use crate::session::{Message, Outgoing, Session, Subscription};
use crate::topic::{matches, SharedFilter, TopicFilter};

use super::embed::{self, InternalSub, Source};
use super::publish::{Fanout, Sent};
use super::routing::{hash_str, Frames, LocalPick, Target};
use super::{Broker, ConnId, ConnState};

/// The high bit marks an in-process member's key in the group table (session keys are
/// slab indexes, far below it).
const INTERNAL_MEMBER: usize = 1 << (usize::BITS - 1);

/// The group table key of in-process member `id`.
fn internal_key(id: u64) -> usize {
    INTERNAL_MEMBER | (id as usize & !INTERNAL_MEMBER)
}

/// The in-process member id of group table key `key`, if it is one.
fn internal_id(key: usize) -> Option<u64> {
    (key & INTERNAL_MEMBER != 0).then_some((key & !INTERNAL_MEMBER) as u64)
}

/// How much room a member has for one more message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Room {
    /// Connected, nothing waiting behind its window.
    Free,
    /// Connected and under its limits, but messages wait behind its window (it is slow
    /// to acknowledge).
    Busy,
    /// Offline, or output / queue full.
    Full,
}

/// The `Sent` of a group's copy: sent to this shard only, by nobody a move tracks.
const GROUP_COPY: Sent = Sent {
    dests: 0,
    source: (usize::MAX, 0),
};

impl Broker {
    /// A host's `$share/` subscription joins its group, if this is the shard that holds
    /// it (every shard is asked; one answers).
    pub(super) fn join_internal(&mut self, sub: InternalSub) {
        let Some(share) = sub.share.clone() else {
            return;
        };
        let Ok(Some(parsed)) = SharedFilter::try_parse(share.as_str()) else {
            return;
        };
        if sub.id % self.cross.shards() as u64 != self.cross.me() as u64 {
            return;
        }
        let key = internal_key(sub.id);
        let member = Subscription {
            options: SubscriptionOptions {
                qos: sub.qos,
                ..SubscriptionOptions::default()
            },
            id: None,
        };
        self.routing.internal_mut().add_member(sub, share.clone());
        if let Some((members, group)) = self.routing.groups_mut().join(&share, &parsed, key, member)
        {
            self.cross.group_changed(&share, members, group, true);
        }
    }

    /// A host's `$share/` subscription leaves its group; false if this shard does not
    /// hold it.
    pub(super) fn leave_internal(&mut self, id: u64) -> bool {
        let Some(member) = self.routing.internal_mut().remove_member(id) else {
            return false;
        };
        let share = member.share;
        if let Some((members, group)) = self
            .routing
            .groups_mut()
            .leave(share.as_str(), internal_key(id))
        {
            self.cross.group_changed(&share, members, group, false);
        }
        true
    }

    /// Delivers a group's copy of `msg` (`local`: published on this shard) to the member
    /// `target` picked: a session through the ordinary path, an in-process member into
    /// its channel. False when that member's host side is gone: it has left the group
    /// and the copy must go to another member.
    fn deliver_member(
        &mut self,
        target: Target,
        msg: &Arc<Message>,
        local: bool,
        frames: &mut Frames,
        fanout: &mut Fanout,
        now: Instant,
    ) -> bool {
        let Some(id) = internal_id(target.key) else {
            self.deliver(target, msg, frames, fanout, now);
            return true;
        };
        fanout.matched = true;
        let source = if local {
            self.source_of_routed(msg)
        } else {
            Source::Unknown
        };
        // The host may keep it for long: a copy that pins no read buffer.
        let kept = Message::detached(msg);
        let delivered = embed::Message::from_publish(&kept.publish, target.qos, &source);
        match self.routing.internal_mut().offer_member(id, delivered) {
            Some(dropped) => {
                self.stats.dropped(DropReason::InProcess, dropped);
                true
            }
            // Gone: it leaves (false only if it was still a member here, so a retry
            // never picks it again).
            None => !self.leave_internal(id),
        }
    }

    /// Who published `msg`, a message being routed on the shard it was published on
    /// (its publisher's connection, if still there, says who it is).
    fn source_of_routed(&self, msg: &Message) -> Source {
        let Some(p) = msg.publisher else {
            return self.source_of(None); // the host's or the broker's
        };
        let conn = p.conn as usize;
        match self.conns.get(conn).filter(|c| c.uid == p.conn_uid.get()) {
            Some(c) => match c.state {
                ConnState::Active(key) => self.source_of(Some((conn, key))),
                _ => Source::Unknown,
            },
            None => Source::Unknown,
        }
    }

    /// Puts session `key`'s subscription to `filter` (validated, possibly
    /// `$share/GROUP/FILTER`) into routing, and tells the other shards what changed.
    pub(super) fn index_subscription(&mut self, key: usize, filter: &ByteStr, sub: Subscription) {
        match SharedFilter::try_parse(filter.as_str()) {
            Ok(Some(share)) => {
                // Kept by the group table and the other shards: its own allocation, not a
                // slice of the read buffer.
                let filter = filter.compact();
                if let Some((members, group)) =
                    self.routing.groups_mut().join(&filter, &share, key, sub)
                {
                    self.cross.group_changed(&filter, members, group, true);
                }
            }
            Ok(None) => {
                if let Ok(parsed) = TopicFilter::try_from(filter.clone()) {
                    if self.routing.subscribe(&parsed, key, sub) {
                        let first = self.routing.subscribers_of(filter.as_str()) == 1;
                        self.cross.filter_added(filter, first);
                    }
                }
            }
            Err(_) => {}
        }
    }

    /// Takes session `key`'s subscription to `filter` out of routing. A member leaving a
    /// group hands the group's unacknowledged QoS 1/2 messages to another member; they
    /// are taken from `session` (a session already out of its slot) or from slot `key`.
    /// Returns whether there was such a subscription.
    pub(super) fn unindex_subscription(
        &mut self,
        key: usize,
        filter: &ByteStr,
        session: Option<&mut Session>,
        now: Instant,
    ) -> bool {
        if !SharedFilter::is_shared(filter.as_str()) {
            let removed = self.routing.unsubscribe(filter.as_str(), key);
            if removed {
                let last = self.routing.subscribers_of(filter.as_str()) == 0;
                self.cross.filter_removed(filter, last);
            }
            return removed;
        }
        let Some((members, group)) = self.routing.groups_mut().leave(filter.as_str(), key) else {
            return false;
        };
        self.cross.group_changed(filter, members, group, false);
        self.hand_over(key, filter, session, now);
        true
    }

    /// The publishing shard's member choice for the groups matching `topic` (see
    /// `routing/shared.rs`); returns the other shards that serve one.
    pub(super) fn route_groups(&mut self, topic: &str, origin: Option<(ConnId, usize)>) -> u64 {
        let client_hash = if self.config.shared_subscription_strategy == ShareStrategy::HashClient {
            origin
                .and_then(|o| self.sessions.get(o.1))
                .map(|s| hash_str(s.session.client_id().as_str()))
        } else {
            None
        };
        self.routing.route_groups(topic, client_hash)
    }

    /// Passes `msg` on for the groups it came for that have no member here any more
    /// (the last one left while it was on its way): to a shard that has members.
    pub(super) fn pass_on_groups(&mut self, msg: &Arc<Message>) {
        for (to, target) in self.routing.groups_mut().take_passed_on() {
            let seq = self.cross.publish_seq(1 << to);
            self.cross.send_group_only(to, Arc::clone(msg), seq, target);
        }
    }

    /// Delivers `msg` to one member of each group routing left for this shard.
    pub(super) fn fanout_groups(
        &mut self,
        msg: &Arc<Message>,
        frames: &mut Frames,
        fanout: &mut Fanout,
        now: Instant,
    ) {
        let picks = self.routing.groups_mut().take_picks();
        let sent = std::mem::replace(&mut fanout.sent, GROUP_COPY);
        let local = sent.source.0 == self.cross.me(); // published on this shard
        for pick in &picks {
            // A member whose host side is gone leaves; the copy goes to another one.
            while let Some(target) = self.pick_member(*pick, msg) {
                if self.deliver_member(target, msg, local, frames, fanout, now) {
                    break;
                }
            }
        }
        fanout.sent = sent;
        self.routing.groups_mut().put_picks(picks);
    }

    /// The member of `pick.group` that gets `msg`: the strategy's, or the next one with
    /// room [`Room::Free`] (else [`Room::Busy`]) when it has none.
    fn pick_member(&mut self, pick: LocalPick, msg: &Message) -> Option<Target> {
        let (_, n) = self.routing.groups().member(pick.group, 0)?;
        let first = pick.start % n;
        let mut chosen = None;
        let mut busy = None;
        for i in 0..n {
            let idx = (first + i) % n;
            let (m, _) = self.routing.groups().member(pick.group, idx)?;
            match self.member_room(m.key) {
                Room::Free => {
                    chosen = Some((idx, m));
                    break;
                }
                Room::Busy if busy.is_none() => busy = Some((idx, m)),
                _ => {}
            }
        }
        let (idx, m) = match chosen.or(busy) {
            Some(c) => c,
            None => (first, self.routing.groups().member(pick.group, first)?.0),
        };
        if idx != first {
            self.stats.shared_skipped += 1;
        }
        self.routing.groups_mut().chosen(pick.group, idx);
        Some(Target {
            key: m.key,
            qos: msg.publish.qos.min(m.sub.options.qos), // [MQTT-3.8.4-6]
            retain: m.sub.options.retain_as_published && msg.publish.retain,
            sub_ids: m.sub.id.into_iter().collect(),
        })
    }

    fn member_room(&self, key: usize) -> Room {
        if let Some(id) = internal_id(key) {
            return if self.routing.internal().member_has_room(id) {
                Room::Free
            } else {
                Room::Full
            };
        }
        let Some(slot) = self.sessions.get(key) else {
            return Room::Full;
        };
        if slot.forward.is_some() {
            return Room::Free; // moving: the copy follows the session
        }
        let Some(conn) = slot.conn.and_then(|c| self.conns.get(c)) else {
            return Room::Full; // offline
        };
        if self.flow.output_full(conn.queued_bytes()) || slot.session.is_backlogged() {
            Room::Full
        } else if slot.session.queued_len() > 0 {
            Room::Busy
        } else {
            Room::Free
        }
    }

    /// Session `key` left the group of `share`: the group's QoS 1/2 messages it has not
    /// acknowledged (those matching the group's filter and none of the session's other
    /// subscriptions) go to another member.
    fn hand_over(
        &mut self,
        key: usize,
        share: &ByteStr,
        session: Option<&mut Session>,
        now: Instant,
    ) {
        let Ok(Some(parsed)) = SharedFilter::try_parse(share.as_str()) else {
            return;
        };
        let Some(to) = self.routing.groups().handover_target(share.as_str()) else {
            return; // no other member anywhere: the messages stay where they are
        };
        let filter = parsed.filter.as_str();
        let taken = match session {
            Some(s) => take_group_messages(s, filter, now),
            None => match self.sessions.get_mut(key) {
                Some(slot) => {
                    let taken = take_group_messages(&mut slot.session, filter, now);
                    self.persist.dirty(key, &slot.session);
                    taken
                }
                None => return,
            },
        };
        if taken.is_empty() {
            return;
        }
        crate::log_info!(
            "Handing {} unacknowledged message(s) of {share} to another member.",
            taken.len()
        );
        self.flush_session(key, now);
        for out in taken {
            self.hand_to_member(share, to, out.msg, now);
        }
    }

    /// Delivers a handed-over message to a member of the group of `share`, on this shard
    /// or (`Some(j)`) on shard j.
    fn hand_to_member(
        &mut self,
        share: &ByteStr,
        to: Option<ShardId>,
        msg: Arc<Message>,
        now: Instant,
    ) {
        match to {
            None => {
                let Some(pick) = self.routing.groups_mut().local_pick(share.as_str()) else {
                    return;
                };
                let mut frames = Frames::default();
                let mut fanout = Fanout::default();
                fanout.sent = GROUP_COPY;
                while let Some(target) = self.pick_member(pick, &msg) {
                    if self.deliver_member(target, &msg, false, &mut frames, &mut fanout, now) {
                        break;
                    }
                }
            }
            Some(j) => {
                let Some(target) = self.routing.groups().remote_target(share.as_str(), j) else {
                    return;
                };
                let seq = self.cross.publish_seq(1 << j);
                self.cross.send_group_only(j, msg, seq, target);
            }
        }
    }
}

/// Takes from `session` the unacknowledged QoS 1/2 messages matching `filter` and none
/// of its remaining plain subscriptions.
fn take_group_messages(session: &mut Session, filter: &str, now: Instant) -> Vec<Outgoing> {
    let others: Vec<ByteStr> = session
        .subscriptions()
        .map(|(f, _)| f.clone())
        .filter(|f| !SharedFilter::is_shared(f.as_str()))
        .collect();
    session.take_unacked(now, |out| {
        let topic = out.msg.publish.topic.as_str();
        matches(filter, topic) && !others.iter().any(|f| matches(f.as_str(), topic))
    })
}
