//! Turning messages into bytes, once: a PUBLISH is encoded once per (protocol version,
//! QoS 0 / QoS>0, retain) as a header template; QoS 0 frames are shared by every
//! subscriber as one `Bytes`, QoS 1/2 copy the small header to patch flags and packet id
//! (a QoS 1/2 header is encoded straight into the frame for its first subscriber and
//! cached as a template from the second) and share the payload, or copy it next to the
//! header when it is small. Properties are cloned only when a subscriber needs different
//! ones (subscription identifiers, message expiry). Other packets (acknowledgements,
//! CONNACK, DISCONNECT) go through the same reused buffer. Frames are slices of that
//! buffer and payloads [`Body`]s that know their message: an output queue that keeps
//! them past the loop iteration compacts them (`out_queue.rs`).
//!
//! It never decides who gets what and never queues anything: it returns frames.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::codec::ByteStr;
use crate::codec::{
    self, AckKind, EncodeError, Packet, PacketId, ProtocolVersion, Publish, QoS, ReasonCode,
};
use crate::session::{AliasUse, Message, Outgoing};

use crate::broker::out_queue::Body;

/// Payloads up to this size are copied next to their header so that a QoS 0 frame is one
/// chunk; larger ones are shared.
const INLINE_PAYLOAD: usize = 512;

/// A QoS 0 frame shared by every subscriber of one (version, retain) class.
pub(in crate::broker) type Frame = (Bytes, Option<Body>);

/// The QoS 0 frames of one fan-out, one per (version, retain) class, encoded on first use.
pub(in crate::broker) type Frames = [Option<Frame>; 4];

/// The frame class of a subscriber.
pub(in crate::broker) const fn frame_class(v5: bool, retain: bool) -> usize {
    (v5 as usize) * 2 + (retain as usize)
}

/// The fixed-header byte of a PUBLISH.
pub(in crate::broker) const fn publish_flags(qos: QoS, retain: bool, dup: bool) -> u8 {
    0x30 | ((dup as u8) << 3) | ((qos as u8) << 1) | (retain as u8)
}

/// Offset of the packet identifier in an encoded PUBLISH header.
pub(in crate::broker) fn packet_id_offset(header: &[u8]) -> Option<usize> {
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

/// The shard's encoder: one reused buffer.
#[derive(Debug)]
pub(in crate::broker) struct Encoder {
    scratch: BytesMut,
}

impl Encoder {
    pub(super) fn new() -> Self {
        Self {
            scratch: BytesMut::with_capacity(64 * 1024),
        }
    }

    /// Any packet, as one frame.
    pub(in crate::broker) fn packet(
        &mut self,
        packet: &Packet,
        version: ProtocolVersion,
    ) -> Result<Bytes, EncodeError> {
        self.scratch.clear();
        codec::encode(packet, version, &mut self.scratch)?;
        Ok(self.scratch.split().freeze())
    }

    /// PUBACK, PUBREC, PUBREL or PUBCOMP without properties, as one frame.
    pub(in crate::broker) fn plain_ack(
        &mut self,
        kind: AckKind,
        packet_id: PacketId,
        reason: ReasonCode,
        version: ProtocolVersion,
    ) -> Bytes {
        self.scratch.clear();
        codec::encode_plain_ack(kind, packet_id, reason, version, &mut self.scratch);
        self.scratch.split().freeze()
    }

    /// The QoS 0 frame of `msg` for a (version, retain) class.
    pub(in crate::broker) fn qos0_frame(
        &mut self,
        msg: &Arc<Message>,
        v5: bool,
        retain: bool,
    ) -> Result<Frame, EncodeError> {
        let scratch = &mut self.scratch;
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
            return Ok((template, Some(Body::of(msg))));
        }
        scratch.clear();
        scratch.extend_from_slice(&template);
        scratch[0] = publish_flags(QoS::AtMostOnce, retain, false);
        if payload.len() <= INLINE_PAYLOAD {
            scratch.extend_from_slice(payload);
            Ok((scratch.split().freeze(), None))
        } else {
            Ok((scratch.split().freeze(), Some(Body::of(msg))))
        }
    }

    /// Header + shared payload of one delivery to one subscriber (a payload of up to
    /// [`INLINE_PAYLOAD`] bytes is copied into the header's frame); `alias` is what the
    /// subscriber's session chose for the topic (v5 only).
    pub(in crate::broker) fn delivery(
        &mut self,
        out: &Outgoing,
        version: ProtocolVersion,
        (packet_id, dup): (Option<PacketId>, bool),
        alias: AliasUse,
        now: Instant,
    ) -> Result<Frame, EncodeError> {
        let scratch = &mut self.scratch;
        let v5 = version.is_v5();
        let p = &out.msg.publish;
        let expiry = if v5 { out.msg.expiry_left(now) } else { None };
        let alias = if v5 { alias } else { AliasUse::Topic };
        scratch.clear();
        if !v5 || (out.sub_ids.is_empty() && expiry.is_none() && alias == AliasUse::Topic) {
            let with_id = packet_id.is_some();
            let direct = (p.qos != QoS::AtMostOnce) == with_id && p.packet_id.is_some() == with_id;
            let cached = out.msg.headers[usize::from(v5)].get();
            if let (true, Some(template)) = (direct, cached) {
                // The common case from the second subscriber on: copied from the
                // message's template, not cloned (no refcount traffic per delivery).
                scratch.extend_from_slice(template);
            } else if direct && !out.msg.header_reused(v5) {
                // First use: encoded straight into the frame; a template (an allocation)
                // is cached only once a second subscriber needs the same header.
                codec::encode_publish_header(p, version, scratch)?;
            } else {
                let template = header_template(&out.msg, v5, with_id)?;
                scratch.extend_from_slice(&template);
            }
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
            let topic = match alias {
                AliasUse::Topic => p.topic.clone(),
                AliasUse::Bind(n) => {
                    properties.topic_alias = Some(n);
                    p.topic.clone()
                }
                // [MQTT-3.3.2-11]: `n` is within the client's maximum (the session's
                // table never hands out more).
                AliasUse::Known(n) => {
                    properties.topic_alias = Some(n);
                    ByteStr::default()
                }
            };
            let tmp = Publish {
                dup,
                qos: out.qos,
                retain: out.retain,
                topic,
                packet_id,
                properties,
                payload: p.payload.clone(),
            };
            codec::encode_publish_header(&tmp, version, scratch)?;
        }
        if p.payload.len() <= INLINE_PAYLOAD {
            // A small payload next to its header: one chunk, no payload handle to queue.
            scratch.extend_from_slice(&p.payload);
            return Ok((scratch.split().freeze(), None));
        }
        Ok((scratch.split().freeze(), Some(Body::of(&out.msg))))
    }
}
