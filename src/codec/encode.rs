//! Encoder, for both roles (server and client). Writes exactly [`encoded_len`] bytes into
//! a caller-supplied `BytesMut`, reserving once.
//!
//! Every length is computed and checked first (fields ≤ 65535 bytes, remaining length ≤
//! 268,435,455), then the bytes are written without further checks, so an error never
//! leaves a partial packet in `out`. Properties are ignored for 3.1 / 3.1.1; they are
//! written as given for 5.0 (the caller puts only properties valid for the packet).
//! This module must never panic.

use bytes::{BufMut, BytesMut};

use super::packet::{Ack, AckKind, ConnAck, Connect, QoS, ReasonCode, SubAck, Subscribe};
use super::packet::{SubscriptionOptions, Unsubscribe};
use super::property_codec::{block_len, properties_len, put_properties};
use super::wire::{self, field_len, put_field, VARINT_MAX};
use super::{EncodeError, Packet, Properties, ProtocolVersion, Publish};

type Result<T> = std::result::Result<T, EncodeError>;

/// Lengths computed (and checked) before writing.
#[derive(Debug, Clone, Copy, Default)]
struct Sizes {
    remaining: usize,
    /// Body length of the packet's property block (5.0).
    props: usize,
    /// Body length of the will property block (CONNECT, 5.0).
    will_props: usize,
}

fn check_remaining(remaining: usize) -> Result<usize> {
    if remaining > VARINT_MAX as usize {
        return Err(EncodeError::PacketTooLarge {
            size: remaining,
            max: VARINT_MAX,
        });
    }
    Ok(remaining)
}

fn props_len(p: &Properties, version: ProtocolVersion) -> Result<usize> {
    if version.is_v5() {
        properties_len(p)
    } else {
        Ok(0)
    }
}

/// Number of bytes `encode` writes for `packet`.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> Result<usize> {
    let s = sizes(packet, version)?;
    Ok(1 + wire::varint_len(s.remaining) + s.remaining)
}

/// Appends the encoding of `packet` for `version` to `out`.
///
/// CONNECT is encoded for its own `protocol` field (it is self-describing). A QoS 0
/// PUBLISH is always written with DUP 0 [MQTT-3.3.1-2] and without a packet identifier.
pub fn encode(packet: &Packet, version: ProtocolVersion, out: &mut BytesMut) -> Result<()> {
    let s = sizes(packet, version)?;
    out.reserve(1 + wire::varint_len(s.remaining) + s.remaining);
    match packet {
        Packet::Publish(p) => {
            write_publish_header(p, version, s, out);
            out.put_slice(&p.payload);
        }
        Packet::Connect(c) => write_connect(c, s, out),
        Packet::ConnAck(c) => write_connack(c, version, s, out),
        Packet::Ack(a) => write_ack(a, version, s, out),
        Packet::Subscribe(sub) => write_subscribe(sub, version, s, out),
        Packet::SubAck(a) => write_suback(a, version, s, 0x90, out),
        Packet::Unsubscribe(u) => write_unsubscribe(u, version, s, out),
        Packet::UnsubAck(a) => write_suback(a, version, s, 0xB0, out),
        Packet::PingReq => out.put_slice(&[0xC0, 0]),
        Packet::PingResp => out.put_slice(&[0xD0, 0]),
        Packet::Disconnect(d) => write_reason_packet(0xE0, d.reason, &d.properties, s, out),
        Packet::Auth(a) => write_reason_packet(0xF0, a.reason, &a.properties, s, out),
    }
    Ok(())
}

/// Appends everything of a PUBLISH except its payload (fixed header with the remaining
/// length that includes the payload, topic, packet id, properties), so that a fan-out can
/// send the header from a small buffer and share the payload `Bytes` zero-copy.
pub fn encode_publish_header(
    publish: &Publish,
    version: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<()> {
    let s = publish_sizes(publish, version)?;
    out.reserve(1 + wire::varint_len(s.remaining) + s.remaining - publish.payload.len());
    write_publish_header(publish, version, s, out);
    Ok(())
}

fn sizes(packet: &Packet, version: ProtocolVersion) -> Result<Sizes> {
    let v5 = version.is_v5();
    let s = match packet {
        Packet::Publish(p) => return publish_sizes(p, version),
        Packet::Connect(c) => return connect_sizes(c),
        Packet::ConnAck(c) => {
            let props = props_len(&c.properties, version)?;
            let remaining = 2 + if v5 { block_len(props) } else { 0 };
            Sizes {
                remaining,
                props,
                ..Sizes::default()
            }
        }
        Packet::Ack(a) => {
            let props = props_len(&a.properties, version)?;
            let remaining = if !v5 || (a.reason == ReasonCode::SUCCESS && props == 0) {
                2
            } else if props == 0 {
                3
            } else {
                3 + block_len(props)
            };
            Sizes {
                remaining,
                props,
                ..Sizes::default()
            }
        }
        Packet::Subscribe(sub) => {
            if sub.filters.is_empty() {
                return Err(EncodeError::Invalid("SUBSCRIBE without topic filters"));
            }
            let props = props_len(&sub.properties, version)?;
            let mut remaining = 2 + if v5 { block_len(props) } else { 0 };
            for (f, o) in &sub.filters {
                if o.retain_handling > 2 {
                    return Err(EncodeError::Invalid("retain handling above 2"));
                }
                remaining += field_len(f.len())? + 1;
            }
            Sizes {
                remaining,
                props,
                ..Sizes::default()
            }
        }
        Packet::Unsubscribe(u) => {
            if u.filters.is_empty() {
                return Err(EncodeError::Invalid("UNSUBSCRIBE without topic filters"));
            }
            let props = props_len(&u.properties, version)?;
            let mut remaining = 2 + if v5 { block_len(props) } else { 0 };
            for f in &u.filters {
                remaining += field_len(f.len())?;
            }
            Sizes {
                remaining,
                props,
                ..Sizes::default()
            }
        }
        Packet::SubAck(a) => suback_sizes(a, version, false)?,
        Packet::UnsubAck(a) => suback_sizes(a, version, true)?,
        Packet::PingReq | Packet::PingResp => Sizes::default(),
        Packet::Disconnect(d) if v5 => reason_packet_sizes(d.reason, &d.properties)?,
        Packet::Disconnect(_) => Sizes::default(),
        Packet::Auth(a) if v5 => reason_packet_sizes(a.reason, &a.properties)?,
        Packet::Auth(_) => return Err(EncodeError::NotInVersion("AUTH")),
    };
    check_remaining(s.remaining)?;
    Ok(s)
}

fn publish_sizes(p: &Publish, version: ProtocolVersion) -> Result<Sizes> {
    let props = props_len(&p.properties, version)?;
    let mut remaining = field_len(p.topic.len())? + p.payload.len();
    if p.qos != QoS::AtMostOnce {
        if p.packet_id.is_none() {
            return Err(EncodeError::Invalid(
                "QoS > 0 PUBLISH without packet identifier",
            ));
        }
        remaining += 2;
    }
    if version.is_v5() {
        remaining += block_len(props);
    }
    Ok(Sizes {
        remaining: check_remaining(remaining)?,
        props,
        will_props: 0,
    })
}

fn connect_sizes(c: &Connect) -> Result<Sizes> {
    let version = c.protocol;
    let v5 = version.is_v5();
    if !v5 && c.password.is_some() && c.username.is_none() {
        // [MQTT-3.1.2-22]
        return Err(EncodeError::Invalid("password without user name"));
    }
    let props = props_len(&c.properties, version)?;
    let name = if version == ProtocolVersion::V31 {
        6
    } else {
        4
    };
    // name, level, flags, keep alive
    let mut remaining = 2 + name + 1 + 1 + 2;
    if v5 {
        remaining += block_len(props);
    }
    remaining += field_len(c.client_id.len())?;
    let mut will_props = 0;
    if let Some(w) = &c.will {
        will_props = props_len(&w.properties, version)?;
        if v5 {
            remaining += block_len(will_props);
        }
        remaining += field_len(w.topic.len())? + field_len(w.payload.len())?;
    }
    if let Some(u) = &c.username {
        remaining += field_len(u.len())?;
    }
    if let Some(p) = &c.password {
        remaining += field_len(p.len())?;
    }
    Ok(Sizes {
        remaining: check_remaining(remaining)?,
        props,
        will_props,
    })
}

fn suback_sizes(a: &SubAck, version: ProtocolVersion, unsuback: bool) -> Result<Sizes> {
    if !version.is_v5() {
        if unsuback {
            // 3.1.1 UNSUBACK: packet identifier only.
            return Ok(Sizes {
                remaining: 2,
                ..Sizes::default()
            });
        }
        if a.reasons.is_empty() {
            return Err(EncodeError::Invalid("SUBACK without return codes"));
        }
        return Ok(Sizes {
            remaining: 2 + a.reasons.len(),
            ..Sizes::default()
        });
    }
    if a.reasons.is_empty() {
        return Err(EncodeError::Invalid("SUBACK/UNSUBACK without reason codes"));
    }
    let props = properties_len(&a.properties)?;
    Ok(Sizes {
        remaining: 2 + block_len(props) + a.reasons.len(),
        props,
        will_props: 0,
    })
}

/// DISCONNECT and AUTH in 5.0: reason code and properties are omitted when the reason is
/// 0x00 and there are no properties.
fn reason_packet_sizes(reason: ReasonCode, p: &Properties) -> Result<Sizes> {
    let props = properties_len(p)?;
    let remaining = if props > 0 {
        1 + block_len(props)
    } else if reason != ReasonCode::SUCCESS {
        1
    } else {
        0
    };
    Ok(Sizes {
        remaining,
        props,
        will_props: 0,
    })
}

fn put_header(out: &mut BytesMut, byte: u8, remaining: usize) {
    out.put_u8(byte);
    wire::put_varint(out, remaining);
}

fn write_publish_header(p: &Publish, version: ProtocolVersion, s: Sizes, out: &mut BytesMut) {
    let qos = p.qos as u8;
    let dup = p.dup && qos > 0;
    let byte = 0x30 | (u8::from(dup) << 3) | (qos << 1) | u8::from(p.retain);
    put_header(out, byte, s.remaining);
    put_field(out, p.topic.as_bytes());
    if qos > 0 {
        out.put_u16(p.packet_id.unwrap_or_default());
    }
    if version.is_v5() {
        put_properties(out, &p.properties, s.props);
    }
}

fn write_connect(c: &Connect, s: Sizes, out: &mut BytesMut) {
    let v5 = c.protocol.is_v5();
    put_header(out, 0x10, s.remaining);
    if c.protocol == ProtocolVersion::V31 {
        put_field(out, b"MQIsdp");
    } else {
        put_field(out, b"MQTT");
    }
    out.put_u8(c.protocol.level());
    let mut flags = u8::from(c.clean_start) << 1;
    if let Some(w) = &c.will {
        flags |= 0x04 | ((w.qos as u8) << 3) | (u8::from(w.retain) << 5);
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    out.put_u8(flags);
    out.put_u16(c.keep_alive);
    if v5 {
        put_properties(out, &c.properties, s.props);
    }
    put_field(out, c.client_id.as_bytes());
    if let Some(w) = &c.will {
        if v5 {
            put_properties(out, &w.properties, s.will_props);
        }
        put_field(out, w.topic.as_bytes());
        put_field(out, &w.payload);
    }
    if let Some(u) = &c.username {
        put_field(out, u.as_bytes());
    }
    if let Some(p) = &c.password {
        put_field(out, p);
    }
}

fn write_connack(c: &ConnAck, version: ProtocolVersion, s: Sizes, out: &mut BytesMut) {
    put_header(out, 0x20, s.remaining);
    out.put_u8(u8::from(c.session_present));
    out.put_u8(c.reason.0);
    if version.is_v5() {
        put_properties(out, &c.properties, s.props);
    }
}

const fn ack_byte(kind: AckKind) -> u8 {
    match kind {
        AckKind::PubAck => 0x40,
        AckKind::PubRec => 0x50,
        AckKind::PubRel => 0x62,
        AckKind::PubComp => 0x70,
    }
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP without properties, the same bytes [`encode`] writes
/// for such an [`Ack`], without building a [`Packet`] (the QoS 1/2 acknowledgement path
/// writes one per message).
pub fn encode_plain_ack(
    kind: AckKind,
    packet_id: u16,
    reason: ReasonCode,
    version: ProtocolVersion,
    out: &mut BytesMut,
) {
    let [hi, lo] = packet_id.to_be_bytes();
    if version.is_v5() && reason != ReasonCode::SUCCESS {
        out.extend_from_slice(&[ack_byte(kind), 3, hi, lo, reason.0]);
    } else {
        out.extend_from_slice(&[ack_byte(kind), 2, hi, lo]);
    }
}

fn write_ack(a: &Ack, version: ProtocolVersion, s: Sizes, out: &mut BytesMut) {
    let byte = ack_byte(a.kind);
    put_header(out, byte, s.remaining);
    out.put_u16(a.packet_id);
    if version.is_v5() && s.remaining > 2 {
        out.put_u8(a.reason.0);
        if s.remaining > 3 {
            put_properties(out, &a.properties, s.props);
        }
    }
}

const fn options_byte(o: SubscriptionOptions, v5: bool) -> u8 {
    let qos = o.qos as u8;
    if !v5 {
        return qos;
    }
    qos | ((o.no_local as u8) << 2)
        | ((o.retain_as_published as u8) << 3)
        | ((o.retain_handling & 0x03) << 4)
}

fn write_subscribe(sub: &Subscribe, version: ProtocolVersion, s: Sizes, out: &mut BytesMut) {
    let v5 = version.is_v5();
    put_header(out, 0x82, s.remaining);
    out.put_u16(sub.packet_id);
    if v5 {
        put_properties(out, &sub.properties, s.props);
    }
    for (f, o) in &sub.filters {
        put_field(out, f.as_bytes());
        out.put_u8(options_byte(*o, v5));
    }
}

fn write_unsubscribe(u: &Unsubscribe, version: ProtocolVersion, s: Sizes, out: &mut BytesMut) {
    put_header(out, 0xA2, s.remaining);
    out.put_u16(u.packet_id);
    if version.is_v5() {
        put_properties(out, &u.properties, s.props);
    }
    for f in &u.filters {
        put_field(out, f.as_bytes());
    }
}

fn write_suback(a: &SubAck, version: ProtocolVersion, s: Sizes, byte: u8, out: &mut BytesMut) {
    put_header(out, byte, s.remaining);
    out.put_u16(a.packet_id);
    if version.is_v5() {
        put_properties(out, &a.properties, s.props);
    } else if byte == 0xB0 {
        return; // 3.1.1 UNSUBACK has no payload.
    }
    for r in &a.reasons {
        out.put_u8(r.0);
    }
}

fn write_reason_packet(
    byte: u8,
    reason: ReasonCode,
    props: &Properties,
    s: Sizes,
    out: &mut BytesMut,
) {
    put_header(out, byte, s.remaining);
    if s.remaining > 0 {
        out.put_u8(reason.0);
        if s.remaining > 1 {
            put_properties(out, props, s.props);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::decode;

    /// The direct acknowledgement encoder writes exactly what the packet encoder writes
    /// (and what the decoder reads back), for every kind, version and reason.
    #[test]
    fn plain_ack_matches_the_packet_encoder() {
        let kinds = [
            AckKind::PubAck,
            AckKind::PubRec,
            AckKind::PubRel,
            AckKind::PubComp,
        ];
        let versions = [
            ProtocolVersion::V31,
            ProtocolVersion::V311,
            ProtocolVersion::V5,
        ];
        let reasons = [ReasonCode::SUCCESS, ReasonCode(0x10), ReasonCode(0x80)];
        for kind in kinds {
            for version in versions {
                for reason in reasons {
                    for packet_id in [1u16, 0x1234, u16::MAX] {
                        // 3.1 / 3.1.1 acknowledgements carry no reason: always SUCCESS.
                        let reason = if version.is_v5() {
                            reason
                        } else {
                            ReasonCode::SUCCESS
                        };
                        let packet = Packet::Ack(Ack {
                            kind,
                            packet_id,
                            reason,
                            properties: Properties::default(),
                        });
                        let mut want = BytesMut::new();
                        encode(&packet, version, &mut want).unwrap();
                        let mut got = BytesMut::new();
                        encode_plain_ack(kind, packet_id, reason, version, &mut got);
                        assert_eq!(got, want, "{kind:?} {version:?} {reason:?} {packet_id}");
                        let back = decode(&mut got, version, u32::MAX).unwrap();
                        assert_eq!(back, Some(packet));
                        assert!(got.is_empty());
                    }
                }
            }
        }
    }
}
