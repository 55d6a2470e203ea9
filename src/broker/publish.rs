//! The coordinator's publish path: a PUBLISH (from a client, a will, the host, `$SYS` or
//! another shard) is matched by routing, encoded once, offered to each local subscriber's
//! session or output queue, and handed to the other interested shards; the session's
//! transmits are encoded into its connection's output. Flow control is told what fan-out
//! saw (full outputs, backlogged sessions, with the publisher of the message, local or on
//! another shard) and decides who stops being read; this file applies its decisions
//! (wakes, `Control::Pause` / `Resume`, stall timers).
//!
//! Nothing here blocks or drops a QoS 1/2 message for a connected subscriber; QoS 0 to a
//! full output is dropped and counted.

use crate::metrics::DropReason;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use smallvec::SmallVec;

use crate::codec::{Packet, PacketId, ProtocolVersion, Publish, QoS};
use crate::mailbox::ShardId;
use crate::retained::RetainedMessage;
use crate::session::{AliasUse, Delivery, Message, Outgoing, PublishedBy, Transmit};

use super::connections::{Conn, Connections};
use super::cross::{Control, Offer};
use super::flow::{Load, Output, Publisher};
use super::out_queue::Body;
use super::routing::{frame_class, Frame, Frames, Routing, Target};
use super::sessions::Sessions;
use super::trace;
use super::{Broker, ConnId};

/// QoS 1/2 messages whose topic and payload take at most this many bytes are compacted
/// when routed (`Message::compacted`); larger ones are detached only when a queue or a
/// window keeps them (a QoS 0 subscriber of a large QoS 1 message needs no copy).
const EAGER_COMPACT: usize = 1024;

/// The load of connected session `key` if it is still `uid` (flow control's input).
pub(super) fn load_of(
    sessions: &Sessions,
    conns: &Connections,
    key: usize,
    uid: u64,
) -> Option<Load> {
    let slot = sessions.get(key)?;
    if slot.session.uid() != uid {
        return None;
    }
    let conn = conns.get(slot.conn?)?;
    Some(Load {
        queued_bytes: conn.queued_bytes(),
        backlogged: slot.session.is_backlogged(),
    })
}

/// A connection's unsent output (flow control's input).
pub(super) fn output_of(c: &Conn) -> Output {
    Output {
        bytes: c.queued_bytes(),
        chunks: c.queued_chunks(),
    }
}

/// How a message came to this shard's fan-out; both fields steer session hand-offs.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Sent {
    /// Shards the message was sent to directly (bit j = shard j).
    pub(super) dests: u64,
    /// (sending shard, its sequence number) of the message.
    pub(super) source: (ShardId, u64),
}

/// What one fan-out did, for back-pressure and the v5 "no matching subscribers" code.
#[derive(Debug, Default)]
pub(super) struct Fanout {
    pub(super) matched: bool,
    pub(super) sent: Sent,
    /// QoS 0 subscribers offered the message, and those (key, uid) whose output was full.
    qos0: usize,
    qos0_full: SmallVec<[(usize, u64); 4]>,
    /// QoS 0 frames for subscribers that take topic aliases, by (retain, what the
    /// subscriber's alias table chose): every subscriber that knows the topic as alias
    /// `n` gets the same bytes, encoded once per fan-out.
    aliased: AliasFrames,
}

/// A fan-out's QoS 0 frames for alias-taking subscribers, by (retain, alias use).
type AliasFrames = SmallVec<[(bool, AliasUse, Frame); 2]>;

impl Broker {
    /// Routes a message to every matching subscription (and the retained store when
    /// RETAIN is set). `origin` is the publishing (connection, session). Returns whether
    /// any subscription matched.
    pub(super) fn route(
        &mut self,
        mut publish: Publish,
        origin: Option<(ConnId, usize)>,
        now: Instant,
    ) -> bool {
        publish.dup = false;
        if publish.qos != QoS::AtMostOnce && publish.packet_id.is_none() {
            // Injected or will messages: a placeholder id keeps the header template direct.
            publish.packet_id = Some(1);
        }
        publish.properties.clear_connection_scoped();
        if publish.retain {
            // [MQTT-3.3.1-5] [MQTT-3.3.1-10]: store, replace, or delete on empty payload.
            // Stored until replaced: compact copies, so the read buffer is not pinned.
            let source = origin.and_then(|(_, key)| self.retain_source(key));
            let retained = RetainedMessage {
                topic: publish.topic.compact(),
                payload: Bytes::copy_from_slice(&publish.payload),
                qos: publish.qos,
                properties: publish.properties.clone(),
                source,
                expires_at: RetainedMessage::expiry_from(&publish.properties, now),
            };
            self.persist_retain(&publish, retained.source.as_deref());
            self.cross.replicate_retained(&retained);
            self.routing.set_retained(retained);
            self.stats.retained = self.routing.retained_len() as u64;
        }
        let mut dests = self.routing.match_topic(publish.topic.as_str(), true);
        // Shared subscription groups: this shard picks the member of each (shared.rs).
        dests |= self.route_groups(publish.topic.as_str(), origin);
        let local = self.routing.has_targets() || self.routing.groups().has_picks();
        // In-process subscribers (embedding API): only the shard a message is published
        // on delivers it to them.
        let (internal, dropped) = if self.routing.has_internal() {
            let source = self.source_of(origin);
            self.routing.deliver_internal(&publish, &source)
        } else {
            (false, 0)
        };
        self.stats.dropped(DropReason::InProcess, dropped);
        if dests == 0 && !local {
            return internal;
        }
        let origin_uid = origin.and_then(|o| self.sessions.uid_of(o.1));
        // A small QoS 1/2 message is kept by (almost) every subscriber: copied out of the
        // read buffer now, once, rather than as a second, detached record on first keep.
        let eager = publish.qos != QoS::AtMostOnce
            && publish.topic.len() + publish.payload.len() <= EAGER_COMPACT;
        let mut msg = if eager {
            Message::compacted(&publish, now, origin_uid)
        } else {
            Message::new(publish, now, origin_uid)
        };
        if let Some((conn, _)) = origin {
            self.flow.on_publish(conn, dests);
            msg.publisher = self.published_by(conn);
        }
        let msg = self.cross.new_message(msg);
        self.persist.routed(self.cross.me(), &msg, dests); // before the publisher's ack
        let seq = self.cross.publish_seq(dests);
        let source = (self.cross.me(), seq);
        // Local subscribers first, then the other shards: the last destination gets the
        // Arc itself, so this shard does not touch the reference count again while the
        // receivers are using it.
        let sent = Sent { dests, source };
        let matched = local && self.fanout_targets(&msg, sent, now);
        let groups = self.routing.groups_mut();
        self.cross
            .send_publish(msg, dests, seq, |j| groups.take_out(j));
        matched || internal || dests != 0
    }

    /// The tag of connection `conn` of this shard as a message's publisher.
    fn published_by(&self, conn: ConnId) -> Option<PublishedBy> {
        Some(PublishedBy {
            shard: u16::try_from(self.cross.me()).ok()?,
            conn: u32::try_from(conn).ok()?,
            conn_uid: std::num::NonZeroU64::new(self.conns.get(conn)?.uid)?,
        })
    }

    /// Delivers `msg`, which came from another shard (or from the persisted state), to
    /// this shard's matching subscribers and to a member of each shared subscription
    /// group in `groups` (those the sender picked this shard for).
    pub(super) fn fanout_local(
        &mut self,
        msg: &Arc<Message>,
        sent: Sent,
        groups: &[super::cross::ShareTarget],
        groups_only: bool,
        now: Instant,
    ) -> bool {
        if groups_only {
            self.routing.clear_targets();
        } else {
            self.routing.match_received(msg.publish.topic.as_str());
        }
        self.routing.groups_mut().received(groups);
        if !groups.is_empty() {
            self.pass_on_groups(msg);
        }
        (self.routing.has_targets() || self.routing.groups().has_picks())
            && self.fanout_targets(msg, sent, now)
    }

    /// Delivers `msg` to the local subscriptions routing matched last. Its publisher (on
    /// this shard or another) is paused where a subscriber cannot take more.
    fn fanout_targets(&mut self, msg: &Arc<Message>, sent: Sent, now: Instant) -> bool {
        let targets = self.routing.take_targets();
        let mut frames = Frames::default();
        let mut fanout = Fanout {
            sent,
            ..Fanout::default()
        };
        let mut i = 0;
        while i < targets.len() {
            let sessions = &self.sessions;
            let upgrade = self.config.upgrade_outgoing_qos;
            let target = Routing::next_target(&targets, &mut i, msg, upgrade, |key| {
                sessions.uid_of(key) == msg.origin
            });
            if let Some(target) = target {
                self.deliver(target, msg, &mut frames, &mut fanout, now);
            }
        }
        self.routing.put_targets(targets);
        if self.routing.groups().has_picks() {
            self.fanout_groups(msg, &mut frames, &mut fanout, now);
        }
        // Never read only to drop: every QoS 0 subscriber was full and no other shard
        // got the message, pause its local publisher.
        let local = msg
            .publisher
            .map(Publisher::from)
            .filter(|p| p.shard == self.cross.me());
        if let Some(p) = local {
            let all_full = fanout.qos0 > 0 && fanout.qos0_full.len() == fanout.qos0;
            if all_full && sent.dests == 0 {
                self.flow.on_qos0_all_full(p.conn, p.uid, &fanout.qos0_full);
            }
        }
        fanout.matched
    }

    /// One subscriber's delivery: QoS 0 straight into its output (the shared frame),
    /// anything else through its session.
    pub(super) fn deliver(
        &mut self,
        target: Target,
        msg: &Arc<Message>,
        frames: &mut Frames,
        fanout: &mut Fanout,
        now: Instant,
    ) {
        let Target {
            key,
            qos,
            retain,
            sub_ids,
        } = target;
        let Some(slot) = self.sessions.get_mut(key) else {
            return;
        };
        // ACL: read rights are checked per delivered message (cached per topic), so a
        // wildcard subscription spanning denied topics does not leak them.
        if let Some(sec) = slot.security.as_mut() {
            if !sec.may_read(&msg.publish.topic) {
                return;
            }
        }
        fanout.matched = true;
        if let Some(handoff) = slot.forward.as_deref_mut() {
            // A session in handoff: a stub forwards or holds, the new home drops what the
            // old one had already queued.
            match handoff.offer(self.cross.me(), fanout.sent.dests, fanout.sent.source) {
                Offer::Deliver => {}
                Offer::Skip => return,
                offer => {
                    let out = Outgoing {
                        msg: Arc::clone(msg),
                        qos,
                        retain,
                        sub_ids,
                    };
                    if let Offer::Forward(to) = offer {
                        let control = Control::Forward {
                            client_id: slot.session.client_id().clone(),
                            uid: slot.session.uid(),
                            out,
                        };
                        self.cross.send(to, control);
                    } else {
                        handoff.hold(fanout.sent.source, out);
                    }
                    return;
                }
            }
        }
        let v5 = slot.session.version().is_v5();
        if let Some(conn) = slot.conn {
            // A client under a mount point gets frames of its own (`mount.rs`).
            let mounted = super::mount::mount_point(&self.config, slot.listener).is_some();
            let fast = qos == QoS::AtMostOnce
                && !mounted
                && (!v5
                    || (sub_ids.is_empty()
                        && msg.publish.properties.message_expiry_interval.is_none()));
            if fast {
                fanout.qos0 += 1;
                let max_out = slot.session.client_max_packet_size() as usize;
                let uid = slot.session.uid();
                let Some(c) = self.conns.get(conn) else {
                    return;
                };
                if self.flow.output_full(c.queued_bytes()) {
                    crate::log_limited!(
                        crate::log::Level::Notice,
                        now,
                        "Outgoing messages are being dropped for client {}.",
                        slot.session.client_id()
                    );
                    self.stats.dropped(DropReason::QueueFull, 1);
                    fanout.qos0_full.push((key, uid));
                    self.arm_stall(conn, now);
                    return;
                }
                if slot.session.takes_topic_aliases() {
                    // This client takes topic aliases: a frame of its own.
                    let out = Outgoing {
                        msg: Arc::clone(msg),
                        qos,
                        retain,
                        sub_ids,
                    };
                    let shared = v5.then_some(&mut fanout.aliased);
                    self.write_publish(key, conn, &out, (None, false), shared, now);
                    return;
                }
                let class = frame_class(v5, retain);
                if frames[class].is_none() {
                    match self.routing.encoder().qos0_frame(msg, v5, retain) {
                        Ok(f) => frames[class] = Some(f),
                        Err(e) => {
                            crate::log_warning!(
                                "Unable to encode PUBLISH to {}: {e}",
                                msg.publish.topic
                            );
                            self.stats.dropped(DropReason::Encode, 1);
                            return;
                        }
                    }
                }
                let Some((head, body)) = &frames[class] else {
                    return;
                };
                if head.len() + body.as_ref().map_or(0, Body::len) > max_out {
                    self.stats.dropped(DropReason::TooLarge, 1); // [MQTT-3.1.2-25]
                    return;
                }
                let (head, body) = (head.clone(), body.clone());
                if trace::on() {
                    let mut line = trace::PublishLine::of(&msg.publish);
                    (line.qos, line.retain, line.packet_id) = (QoS::AtMostOnce, retain, None);
                    line.sending(slot.session.client_id());
                }
                self.push_frame(conn, head, body);
                self.stats.publish_out(0, msg.publish.payload.len());
                return;
            }
        }
        let out = Outgoing {
            msg: Arc::clone(msg),
            qos,
            retain,
            sub_ids,
        };
        self.deliver_outgoing(key, out, now);
    }

    /// Offers `out` to session `key` through its QoS window and queue; tells flow
    /// control when the session's queue is full (it pauses the message's publisher, here
    /// or on its shard).
    pub(super) fn deliver_outgoing(&mut self, key: usize, out: Outgoing, now: Instant) {
        let Some(slot) = self.sessions.get_mut(key) else {
            return;
        };
        // ACL (cached): also covers messages forwarded from another shard.
        if let Some(sec) = slot.security.as_mut() {
            if !sec.may_read(&out.msg.publish.topic) {
                return;
            }
        }
        let publisher = out.msg.publisher.map(Publisher::from);
        let persisted = self.persist.wants(&slot.session).then(|| out.clone());
        match slot.session.deliver(out) {
            Delivery::Sent | Delivery::Queued => {
                if let Some(o) = persisted {
                    self.persist
                        .message(key, &slot.session, &o.msg, (o.qos, o.retain, &o.sub_ids));
                }
            }
            Delivery::Skipped => {}
            Delivery::Dropped => {
                self.stats.dropped(DropReason::QueueFull, 1);
                crate::log_limited!(
                    crate::log::Level::Notice,
                    now,
                    "Outgoing messages are being dropped for client {}.",
                    slot.session.client_id()
                );
            }
        }
        let connected = slot.conn.is_some();
        if connected {
            let backlogged = slot.session.is_backlogged();
            let uid = slot.session.uid();
            self.flush_session(key, now);
            if backlogged {
                let remote = publisher.and_then(|p| self.flow.on_backlogged(key, uid, p));
                if let Some(p) = remote {
                    let pause = Control::Pause {
                        conn: p.conn,
                        conn_uid: p.uid,
                        session: uid,
                    };
                    self.cross.send(p.shard, pause);
                }
                if let Some(conn) = self.sessions.get(key).and_then(|s| s.conn) {
                    self.arm_stall(conn, now);
                }
            }
        }
    }

    /// Drains the session's transmits into its connection's output.
    pub(super) fn flush_session(&mut self, key: usize, now: Instant) {
        let Some(slot) = self.sessions.get(key) else {
            return;
        };
        let Some(conn) = slot.conn else { return };
        loop {
            let Some(slot) = self.sessions.get_mut(key) else {
                return;
            };
            let Some(t) = slot.session.poll_transmit() else {
                break;
            };
            self.write_transmit(key, conn, t, now);
        }
    }

    /// Encodes one transmit of session `key` into connection `conn`'s output.
    pub(super) fn write_transmit(&mut self, key: usize, conn: ConnId, t: Transmit, now: Instant) {
        let Some(slot) = self.sessions.get_mut(key) else {
            return;
        };
        let version = slot.session.version();
        let max_out = slot.session.client_max_packet_size() as usize;
        match t {
            Transmit::Publish {
                out,
                packet_id,
                dup,
            } => self.write_publish(key, conn, &out, (packet_id, dup), None, now),
            Transmit::Ack(kind, packet_id, reason) if self.acks.gathers(conn) && !trace::on() => {
                // The connection being read: one chunk for all of this read's acks.
                // (Queued by `on_read` before it returns; an oversized one is left out.)
                let _ = self.acks.push((kind, packet_id, reason), version, max_out);
            }
            Transmit::Ack(kind, packet_id, reason) if !trace::on() => {
                // One per QoS 1/2 message: written straight, no `Packet` built.
                let frame = self
                    .routing
                    .encoder()
                    .plain_ack(kind, packet_id, reason, version);
                if frame.len() <= max_out {
                    self.push_frame(conn, frame, None);
                }
            }
            other => {
                let Some(packet) = other.into_packet() else {
                    return;
                };
                let frame = match self.routing.encoder().packet(&packet, version) {
                    Ok(frame) => frame,
                    Err(e) => {
                        crate::log_warning!(
                            "Unable to encode {} for {}: {e}",
                            packet.name(),
                            slot.session.client_id()
                        );
                        return;
                    }
                };
                if frame.len() > max_out {
                    return;
                }
                if trace::on() {
                    trace::sending(slot.session.client_id(), &packet, version);
                }
                self.push_frame(conn, frame, None);
            }
        }
    }

    /// Encodes one PUBLISH to session `key` (with the topic alias its session chooses)
    /// into connection `conn`'s output. One too large for the client is dropped and
    /// counted, and completes as if sent [MQTT-3.1.2-25].
    fn write_publish(
        &mut self,
        key: usize,
        conn: ConnId,
        out: &Outgoing,
        (packet_id, dup): (Option<PacketId>, bool),
        shared: Option<&mut AliasFrames>,
        now: Instant,
    ) {
        let Some(slot) = self.sessions.get_mut(key) else {
            return;
        };
        let version = slot.session.version();
        let max_out = slot.session.client_max_packet_size() as usize;
        let topic = &out.msg.publish.topic;
        // Under a mount point the client sees the topic without it, and nothing outside
        // it: such a message completes as if sent, uncounted (as Mosquitto drops it).
        let mount = super::mount::mount_point(&self.config, slot.listener);
        let shown = match mount {
            None => topic.as_str(),
            Some(m) => match super::mount::unmounted(m, topic) {
                Some(rest) => rest,
                None => {
                    if let Some(id) = packet_id {
                        slot.session.discard_inflight(id);
                    }
                    return;
                }
            },
        };
        // Keyed by the full topic: one mount point per connection, so it maps one to one
        // to the topic the client sees.
        let alias = slot.session.choose_topic_alias(topic);
        let encoded = if mount.is_some() {
            super::mount::frame(out, shown, version, (packet_id, dup), alias, now)
                .map(|(head, body)| (head, Some(body)))
        } else if let Some(cache) = shared {
            // A QoS 0 fan-out's v5 frame without subscription identifiers or expiry (the
            // caller checked): its bytes depend on RETAIN and the alias use only.
            let hit = cache
                .iter()
                .find(|(retain, a, _)| *retain == out.retain && *a == alias);
            match hit {
                Some((_, _, frame)) => Ok(frame.clone()),
                None => {
                    let encoded =
                        self.routing
                            .encoder()
                            .delivery(out, version, (None, false), alias, now);
                    if let Ok(frame) = &encoded {
                        cache.push((out.retain, alias, frame.clone()));
                    }
                    encoded
                }
            }
        } else {
            self.routing
                .encoder()
                .delivery(out, version, (packet_id, dup), alias, now)
        };
        let frame = match encoded {
            Ok(f) if f.0.len() + f.1.as_ref().map_or(0, Body::len) <= max_out => f,
            result => {
                if let Err(e) = result {
                    crate::log_warning!(
                        "Unable to encode PUBLISH for {}: {e}",
                        slot.session.client_id()
                    );
                }
                self.stats.dropped(DropReason::TooLarge, 1);
                if let Some(id) = packet_id {
                    slot.session.discard_inflight(id);
                }
                return;
            }
        };
        if trace::on() {
            let line = trace::PublishLine {
                dup,
                qos: out.qos,
                retain: out.retain,
                packet_id,
                topic: shown,
                payload_len: out.msg.publish.payload.len(),
            };
            line.sending(slot.session.client_id());
        }
        if let AliasUse::Bind(n) = alias {
            // In the output, ahead of anything that relies on it.
            slot.session.topic_alias_bound(topic, n);
        }
        self.push_frame(conn, frame.0, frame.1);
        self.stats
            .publish_out(out.qos as u8, out.msg.publish.payload.len());
    }

    /// Queues `packet` for `conn` directly (used when no session is attached).
    pub(super) fn send_packet(&mut self, conn: ConnId, packet: &Packet, version: ProtocolVersion) {
        if trace::on() {
            // Before CONNECT succeeded the peer is named by its address, as Mosquitto.
            let name = self.conns.get(conn).map(|c| match c.state {
                super::ConnState::Active(key) => self
                    .sessions
                    .get(key)
                    .map_or_else(String::new, |s| s.session.client_id().to_string()),
                _ => c.peer.ip().to_string(),
            });
            trace::sending(&name.unwrap_or_default(), packet, version);
        }
        match self.routing.encoder().packet(packet, version) {
            Ok(frame) => self.push_frame(conn, frame, None),
            Err(e) => crate::log_warning!(
                "Unable to encode {} for connection {conn}: {e}",
                packet.name()
            ),
        }
    }

    /// Appends encoded bytes to a connection's output (flagging it for `poll_transmit`),
    /// behind the acknowledgements gathered for it in this read.
    fn push_frame(&mut self, conn: ConnId, head: Bytes, body: Option<Body>) {
        if self.acks.holds(conn) {
            self.queue_acks();
        }
        if let Some(n) = self.conns.push(conn, head, body) {
            self.stats.messages_sent += 1;
            self.stats.bytes_sent += n as u64;
        }
    }

    /// Queues the acknowledgements gathered in this read as one chunk.
    pub(super) fn queue_acks(&mut self) {
        if let Some((conn, frame, count)) = self.acks.take() {
            if let Some(n) = self.conns.push(conn, frame, None) {
                self.stats.messages_sent += count;
                self.stats.bytes_sent += n as u64;
            }
        }
    }

    // --- back-pressure glue: flow control decides, this applies -----------------------

    /// Whether session `key` (if it is still `uid`) is connected and congested.
    pub(super) fn is_congested(&self, key: usize, uid: u64) -> bool {
        load_of(&self.sessions, &self.conns, key, uid).is_some_and(|l| self.flow.is_congested(l))
    }

    /// If session `key` is no longer congested, lets its paused publishers read again.
    pub(super) fn maybe_release(&mut self, key: usize) {
        let Some(uid) = self.sessions.uid_of(key) else {
            return;
        };
        if !self.flow.has_paused(key) || self.is_congested(key, uid) {
            return;
        }
        self.release_paused(key);
    }

    /// Lets the publishers paused on session `key` read again: those of this shard are
    /// yielded from `poll_transmit` so the runtime re-asks `wants_read`, those of other
    /// shards get `Control::Resume`.
    pub(super) fn release_paused(&mut self, key: usize) {
        let released = self.flow.release(key);
        for (conn, uid) in released.wake {
            self.conns.wake(conn, uid);
        }
        for p in released.resume {
            let resume = Control::Resume {
                conn: p.conn,
                conn_uid: p.uid,
                session: released.session_uid,
            };
            self.cross.send(p.shard, resume);
        }
    }

    /// A connection is stuck (backlogged session, output over the bound): arms its
    /// slow-subscriber timer once.
    pub(super) fn arm_stall(&mut self, conn: ConnId, now: Instant) {
        let Some(c) = self.conns.get(conn) else {
            return;
        };
        let (uid, written) = (c.uid, c.written());
        if let Some(at) = self.flow.arm_stall(conn, written, now) {
            self.timers.push(at, super::Timer::Stall { conn, uid });
        }
    }
}
