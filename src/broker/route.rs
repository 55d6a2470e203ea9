//! Fan-out: matching a PUBLISH against the subscription index, merging a client's
//! overlapping subscriptions into one delivery, and turning deliveries into bytes.
//!
//! A message is encoded once per (protocol version, QoS 0 / QoS>0, retain) as a header
//! template; QoS 0 frames are shared by every subscriber as one `Bytes`, QoS 1/2 copy the
//! small header to patch flags and packet id and share the payload. Properties are cloned
//! only when a subscriber needs different ones (subscription identifiers, message expiry).
//! Nothing here blocks or drops a QoS 1/2 message for a connected subscriber.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;

use crate::codec::{self, EncodeError, PacketId, ProtocolVersion, Publish, QoS};
use crate::session::{Delivery, Message, Outgoing, Transmit};

use super::{Broker, ConnId, ShardId};
use crate::retained::RetainedMessage;

/// Payloads up to this size are copied next to their header so that a QoS 0 frame is one
/// chunk; larger ones are shared.
const INLINE_PAYLOAD: usize = 512;

/// A QoS 0 frame shared by every subscriber of one (version, retain) class.
type Frame = (Bytes, Option<Bytes>);

/// The fixed-header byte of a PUBLISH.
const fn publish_flags(qos: QoS, retain: bool, dup: bool) -> u8 {
    0x30 | ((dup as u8) << 3) | ((qos as u8) << 1) | (retain as u8)
}

/// Offset of the packet identifier in an encoded PUBLISH header.
fn packet_id_offset(header: &[u8]) -> Option<usize> {
    let mut i = 1;
    while *header.get(i)? & 0x80 != 0 {
        i += 1;
    }
    i += 1;
    let len = u16::from_be_bytes([*header.get(i)?, *header.get(i + 1)?]);
    let off = i + 2 + usize::from(len);
    (off + 2 <= header.len()).then_some(off)
}

/// The cached header of `msg` for a version class, with a packet id slot or without,
/// flags QoS 1 / 0, no retain, no DUP.
fn header_template(msg: &Message, v5: bool, with_id: bool) -> Result<Bytes, EncodeError> {
    let slot = &msg.headers[usize::from(v5)];
    let version = if v5 {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V311
    };
    let p = &msg.publish;
    // The stored PUBLISH can be encoded as is when its QoS class matches (a QoS > 0
    // message without an id, e.g. a will, takes the copy path).
    let direct = (p.qos != QoS::AtMostOnce) == with_id && p.packet_id.is_some() == with_id;
    if direct {
        if let Some(b) = slot.get() {
            return Ok(b.clone());
        }
    }
    let mut buf = BytesMut::new();
    if direct {
        codec::encode_publish_header(p, version, &mut buf)?;
    } else {
        let tmp = Publish {
            dup: false,
            qos: if with_id {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            },
            retain: false,
            topic: p.topic.clone(),
            packet_id: with_id.then_some(1),
            properties: p.properties.clone(),
            payload: p.payload.clone(),
        };
        codec::encode_publish_header(&tmp, version, &mut buf)?;
    }
    if let Some(first) = buf.first_mut() {
        *first = publish_flags(
            if with_id {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            },
            false,
            false,
        );
    }
    let b = buf.freeze();
    if direct {
        let _ = slot.set(b.clone());
    }
    Ok(b)
}

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
        publish.properties.topic_alias = None;
        publish.properties.subscription_identifiers.clear();
        if publish.retain {
            // [MQTT-3.3.1-5] [MQTT-3.3.1-10]: store, replace, or delete on empty payload.
            // Stored until replaced: compact copies, so the read buffer is not pinned.
            let retained = RetainedMessage {
                topic: publish.topic.compact(),
                payload: bytes::Bytes::copy_from_slice(&publish.payload),
                qos: publish.qos,
                properties: publish.properties.clone(),
            };
            self.replicate_retained(&retained);
            self.retained.set(retained);
            self.stats.retained = self.retained.len() as u64;
            self.persist_retain(&publish);
        }
        let mut targets = std::mem::take(&mut self.targets);
        targets.clear();
        let mut dests = 0u64;
        self.index.for_each_match(
            publish.topic.as_str(),
            |k, s| match super::shards::remote_shard(*k) {
                Some(j) => dests |= 1 << j,
                None => targets.push((*k, *s)),
            },
        );
        let local = !targets.is_empty();
        self.targets = targets;
        // In-process subscribers (embedding API): only the shard a message is published
        // on delivers it to them; one length check when there are none.
        let internal = !self.internal.is_empty() && self.deliver_internal(&publish);
        if dests == 0 && !local {
            return internal;
        }
        let origin_uid = origin
            .and_then(|o| self.sessions.get(o.1))
            .map(|s| s.session.uid());
        let msg = Arc::new(Message::new(publish, now, origin_uid));
        self.persist.routed(self.shard, &msg, dests); // before the publisher's ack
                                                      // Local subscribers first, then the other shards: the last destination gets the
                                                      // Arc itself, so this shard does not touch the reference count again while the
                                                      // receivers are using it.
        let seq = if dests == 0 {
            0
        } else {
            self.send_seq += 1;
            self.send_seq
        };
        let source = (self.shard, seq);
        let matched = local && self.fanout_targets(&msg, origin, dests, source, now);
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
            if let Some(m) = m {
                self.outbox
                    .push_back((j, super::ShardMsg::Publish { msg: m, dests, seq }));
            }
        }
        matched || internal || dests != 0
    }

    /// Delivers `msg` to this shard's matching subscribers. `origin` is the local
    /// publisher (for back-pressure), `dests` the shards the message was sent to and
    /// `source` its (sending shard, sequence number): both steer session handoffs.
    pub(super) fn fanout_local(
        &mut self,
        msg: &Arc<Message>,
        origin: Option<(ConnId, usize)>,
        dests: u64,
        source: (ShardId, u64),
        now: Instant,
    ) -> bool {
        let mut targets = std::mem::take(&mut self.targets);
        targets.clear();
        self.index
            .for_each_match(msg.publish.topic.as_str(), |k, s| {
                if super::shards::remote_shard(*k).is_none() {
                    targets.push((*k, *s));
                }
            });
        let any = !targets.is_empty();
        self.targets = targets;
        any && self.fanout_targets(msg, origin, dests, source, now)
    }

    /// Delivers `msg` to the subscriptions already collected in `self.targets`.
    fn fanout_targets(
        &mut self,
        msg: &Arc<Message>,
        origin: Option<(ConnId, usize)>,
        dests: u64,
        source: (ShardId, u64),
        now: Instant,
    ) -> bool {
        let mut targets = std::mem::take(&mut self.targets);
        targets.sort_unstable_by_key(|t| t.0);
        let mut frames: [Option<Frame>; 4] = Default::default();
        let mut fanout = Fanout {
            dests,
            source,
            ..Fanout::default()
        };
        let mut i = 0;
        while i < targets.len() {
            let key = targets[i].0;
            let mut granted: Option<QoS> = None;
            let mut retain_as_published = false;
            let mut sub_ids: SmallVec<[u32; 1]> = SmallVec::new();
            while i < targets.len() && targets[i].0 == key {
                let sub = targets[i].1;
                i += 1;
                if sub.options.no_local
                    && msg.origin.is_some()
                    && self.sessions.get(key).map(|s| s.session.uid()) == msg.origin
                {
                    continue; // [MQTT-3.8.3-3]
                }
                // One copy at the highest QoS of the overlapping subscriptions [MQTT-3.3.5-1].
                granted = granted.max(Some(sub.options.qos));
                retain_as_published |= sub.options.retain_as_published;
                if let Some(id) = sub.id {
                    sub_ids.push(id);
                }
            }
            let Some(granted) = granted else { continue };
            let qos = msg.publish.qos.min(granted); // [MQTT-3.8.4-6]
                                                    // [MQTT-3.3.1-9] / v5 Retain As Published [MQTT-3.3.1-12] [MQTT-3.3.1-13].
            let retain = retain_as_published && msg.publish.retain;
            self.deliver(
                key,
                msg,
                qos,
                retain,
                sub_ids,
                origin.map(|o| o.0),
                &mut frames,
                &mut fanout,
                now,
            );
        }
        self.targets = targets;
        // Never read only to drop: every QoS 0 subscriber was full, pause the publisher.
        if let Some(publisher) = origin.map(|o| o.0) {
            if fanout.qos0 > 0 && fanout.qos0_full.len() == fanout.qos0 {
                for key in fanout.qos0_full {
                    self.pause(publisher, key);
                }
            }
        }
        fanout.matched
    }

    #[allow(clippy::too_many_arguments)] // one call site, the fan-out loop
    fn deliver(
        &mut self,
        key: usize,
        msg: &Arc<Message>,
        qos: QoS,
        retain: bool,
        sub_ids: SmallVec<[u32; 1]>,
        publisher: Option<ConnId>,
        frames: &mut [Option<Frame>; 4],
        fanout: &mut Fanout,
        now: Instant,
    ) {
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
            match handoff.offer(self.shard, fanout.dests, fanout.source) {
                super::shards::Offer::Deliver => {}
                super::shards::Offer::Skip => return,
                offer => {
                    let out = Outgoing {
                        msg: Arc::clone(msg),
                        qos,
                        retain,
                        sub_ids,
                    };
                    if let super::shards::Offer::Forward(to) = offer {
                        let control = super::Control::Forward {
                            client_id: slot.session.client_id().clone(),
                            uid: slot.session.uid(),
                            out,
                        };
                        self.send_control(to, control);
                    } else {
                        handoff.hold(fanout.source, out);
                    }
                    return;
                }
            }
        }
        let v5 = slot.session.version().is_v5();
        if let Some(conn) = slot.conn {
            let fast = qos == QoS::AtMostOnce
                && (!v5
                    || (sub_ids.is_empty()
                        && msg.publish.properties.message_expiry_interval.is_none()));
            if fast {
                fanout.qos0 += 1;
                let max_out = slot.session.client_max_packet_size() as usize;
                let Some(c) = self.conns.get(conn).and_then(Option::as_ref) else {
                    return;
                };
                if c.out.len() >= self.out_limit {
                    crate::log_limited!(
                        crate::log::Level::Notice,
                        now,
                        "Outgoing messages are being dropped for client {}.",
                        slot.session.client_id()
                    );
                    self.stats.publish_dropped += 1;
                    fanout.qos0_full.push(key);
                    self.arm_stall(conn, now);
                    return;
                }
                let class = usize::from(v5) * 2 + usize::from(retain);
                if frames[class].is_none() {
                    match qos0_frame(&mut self.scratch, msg, v5, retain) {
                        Ok(f) => frames[class] = Some(f),
                        Err(e) => {
                            crate::log_warning!(
                                "Unable to encode PUBLISH to {}: {e}",
                                msg.publish.topic
                            );
                            self.stats.publish_dropped += 1;
                            return;
                        }
                    }
                }
                let Some((head, body)) = &frames[class] else {
                    return;
                };
                if head.len() + body.as_ref().map_or(0, Bytes::len) > max_out {
                    self.stats.publish_dropped += 1; // [MQTT-3.1.2-25]
                    return;
                }
                let (head, body) = (head.clone(), body.clone());
                self.push_frame(conn, head, body);
                self.stats.publish_sent += 1;
                return;
            }
        }
        let out = Outgoing {
            msg: Arc::clone(msg),
            qos,
            retain,
            sub_ids,
        };
        self.deliver_outgoing(key, out, publisher, now);
    }

    /// Offers `out` to session `key` through its QoS window and queue; back-pressures
    /// the local `publisher` (or, for messages from other shards, this shard's inboxes)
    /// when the session's queue is full.
    pub(super) fn deliver_outgoing(
        &mut self,
        key: usize,
        out: Outgoing,
        publisher: Option<ConnId>,
        now: Instant,
    ) {
        let Some(slot) = self.sessions.get_mut(key) else {
            return;
        };
        // ACL (cached): also covers messages forwarded from another shard.
        if let Some(sec) = slot.security.as_mut() {
            if !sec.may_read(&out.msg.publish.topic) {
                return;
            }
        }
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
                self.stats.publish_dropped += 1;
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
                if let Some(p) = publisher {
                    self.pause(p, key);
                } else if !self.remote_congested.contains(&(key, uid)) {
                    self.remote_congested.push((key, uid));
                }
                if let Some(conn) = self.sessions.get(key).and_then(|s| s.conn) {
                    self.arm_stall(conn, now);
                }
            }
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
            } => {
                let encoded =
                    encode_delivery(&mut self.scratch, &out, version, packet_id, dup, now);
                let frame = match encoded {
                    Ok(f) if f.0.len() + f.1.len() <= max_out => f,
                    result => {
                        if let Err(e) = result {
                            crate::log_warning!(
                                "Unable to encode PUBLISH for {}: {e}",
                                slot.session.client_id()
                            );
                        }
                        // Too large for the client: behave as if sent [MQTT-3.1.2-25].
                        self.stats.publish_dropped += 1;
                        if let Some(id) = packet_id {
                            slot.session.discard_inflight(id);
                        }
                        return;
                    }
                };
                self.push_frame(conn, frame.0, Some(frame.1));
                self.stats.publish_sent += 1;
            }
            other => {
                let Some(packet) = other.into_packet() else {
                    return;
                };
                self.scratch.clear();
                if let Err(e) = codec::encode(&packet, version, &mut self.scratch) {
                    crate::log_warning!(
                        "Unable to encode {} for {}: {e}",
                        packet.name(),
                        slot.session.client_id()
                    );
                    return;
                }
                let frame = self.scratch.split().freeze();
                if frame.len() > max_out {
                    return;
                }
                self.push_frame(conn, frame, None);
            }
        }
    }
}

/// What one fan-out did, for back-pressure and the v5 "no matching subscribers" code.
#[derive(Debug, Default)]
struct Fanout {
    matched: bool,
    /// Shards the message was sent to directly.
    dests: u64,
    /// (sending shard, its sequence number) of the message.
    source: (usize, u64),
    qos0: usize,
    qos0_full: SmallVec<[usize; 4]>,
}

fn qos0_frame(
    scratch: &mut BytesMut,
    msg: &Message,
    v5: bool,
    retain: bool,
) -> Result<Frame, EncodeError> {
    let payload = &msg.publish.payload;
    let p = &msg.publish;
    if p.qos == QoS::AtMostOnce && p.packet_id.is_none() && payload.len() <= INLINE_PAYLOAD {
        // The common small QoS 0 case: header and payload straight into one frame, no
        // cached template (it would cost an allocation and a copy for one use).
        let version = if v5 {
            ProtocolVersion::V5
        } else {
            ProtocolVersion::V311
        };
        scratch.clear();
        codec::encode_publish_header(p, version, scratch)?;
        scratch[0] = publish_flags(QoS::AtMostOnce, retain, false);
        scratch.extend_from_slice(payload);
        return Ok((scratch.split().freeze(), None));
    }
    let template = header_template(msg, v5, false)?;
    if !retain && payload.len() > INLINE_PAYLOAD {
        return Ok((template, Some(payload.clone())));
    }
    scratch.clear();
    scratch.extend_from_slice(&template);
    scratch[0] = publish_flags(QoS::AtMostOnce, retain, false);
    if payload.len() <= INLINE_PAYLOAD {
        scratch.extend_from_slice(payload);
        Ok((scratch.split().freeze(), None))
    } else {
        Ok((scratch.split().freeze(), Some(payload.clone())))
    }
}

/// Header + shared payload of one delivery.
fn encode_delivery(
    scratch: &mut BytesMut,
    out: &Outgoing,
    version: ProtocolVersion,
    packet_id: Option<PacketId>,
    dup: bool,
    now: Instant,
) -> Result<(Bytes, Bytes), EncodeError> {
    let v5 = version.is_v5();
    let p = &out.msg.publish;
    let expiry = if v5 { out.msg.expiry_left(now) } else { None };
    scratch.clear();
    if !v5 || (out.sub_ids.is_empty() && expiry.is_none()) {
        let template = header_template(&out.msg, v5, packet_id.is_some())?;
        scratch.extend_from_slice(&template);
        scratch[0] = publish_flags(out.qos, out.retain, dup);
        if let Some(id) = packet_id {
            if let Some(off) = packet_id_offset(scratch) {
                scratch[off..off + 2].copy_from_slice(&id.to_be_bytes());
            }
        }
    } else {
        let mut properties = p.properties.clone();
        properties.subscription_identifiers.clone_from(&out.sub_ids);
        if let Some(left) = expiry {
            properties.message_expiry_interval = Some(left.max(1));
        }
        let tmp = Publish {
            dup,
            qos: out.qos,
            retain: out.retain,
            topic: p.topic.clone(),
            packet_id,
            properties,
            payload: p.payload.clone(),
        };
        codec::encode_publish_header(&tmp, version, scratch)?;
    }
    Ok((scratch.split().freeze(), p.payload.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_id_offset_skips_varint_and_topic() {
        // PUBLISH qos1, remaining length 200 (2-byte varint), topic "a/b", id 0x0102.
        let h = [0x32, 0xC8, 0x01, 0x00, 0x03, b'a', b'/', b'b', 0x01, 0x02];
        assert_eq!(packet_id_offset(&h), Some(8));
        assert_eq!(packet_id_offset(&h[..9]), None);
        assert_eq!(packet_id_offset(&[]), None);
    }

    #[test]
    fn flags_byte() {
        assert_eq!(publish_flags(QoS::ExactlyOnce, true, true), 0x3D);
        assert_eq!(publish_flags(QoS::AtMostOnce, false, false), 0x30);
    }
}
