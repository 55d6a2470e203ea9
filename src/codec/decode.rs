//! Decoder: check, then parse. `Ok(None)` means "need more bytes" and consumes nothing.
//!
//! [`frame_len`] looks only at the fixed header, so an oversized or garbage frame is
//! rejected before its body arrives. [`decode`] then splits the complete frame off the
//! read buffer, freezes it and parses it through [`wire::Reader`], so strings, topics and
//! payloads are `Bytes` slices of the read buffer (no copy, no allocation per PUBLISH).
//! After an error the buffer position is unspecified: the connection must be closed.
//! This module must never panic, whatever the input.

use bytes::{Buf, BytesMut};
use smallvec::SmallVec;

use super::bytestr::ByteStr;
use super::packet::{
    Ack, AckKind, Auth, ConnAck, Connect, Disconnect, PacketId, Publish, QoS, ReasonCode, SubAck,
    Subscribe, SubscriptionOptions, Unsubscribe, Will,
};
use super::property_codec::{decode_properties, PropCtx};
use super::wire::{self, Reader, VarInt};
use super::{DecodeError, Packet, Properties, ProtocolVersion};

type Result<T> = std::result::Result<T, DecodeError>;

/// A complete fixed header: first byte, header length, remaining length.
#[derive(Debug, Clone, Copy)]
struct FixedHeader {
    byte: u8,
    header_len: usize,
    remaining: usize,
}

impl FixedHeader {
    const fn total(self) -> usize {
        self.header_len + self.remaining
    }
}

/// Checks the first byte: packet type 0 is reserved, and the flag bits must be the ones
/// the spec fixes for the type [MQTT-2.2.2-2] (PUBLISH flags are checked while parsing).
fn check_first_byte(byte: u8) -> Result<()> {
    let flags = byte & 0x0F;
    match byte >> 4 {
        0 => Err(DecodeError::Malformed("reserved packet type 0")),
        3 => Ok(()),
        // PUBREL, SUBSCRIBE, UNSUBSCRIBE: 0b0010 [MQTT-3.6.1-1] [MQTT-3.8.1-1] [MQTT-3.10.1-1].
        6 | 8 | 10 if flags == 0b0010 => Ok(()),
        6 | 8 | 10 => Err(DecodeError::Malformed("reserved fixed header flags")),
        _ if flags == 0 => Ok(()),
        _ => Err(DecodeError::Malformed("reserved fixed header flags")),
    }
}

fn fixed_header(buf: &[u8], max_packet_size: u32) -> Result<Option<FixedHeader>> {
    let Some((&byte, rest)) = buf.split_first() else {
        return Ok(None);
    };
    check_first_byte(byte)?;
    let (remaining, n) = match wire::parse_varint(rest)? {
        VarInt::Complete(v, n) => (v as usize, n),
        VarInt::Incomplete => return Ok(None),
    };
    let header = FixedHeader {
        byte,
        header_len: 1 + n,
        remaining,
    };
    // Maximum Packet Size counts the whole packet, fixed header included (MQTT 5 3.1.2.11.4).
    if max_packet_size != 0 && header.total() > max_packet_size as usize {
        return Err(DecodeError::PacketTooLarge {
            size: header.total(),
            max: max_packet_size,
        });
    }
    Ok(Some(header))
}

/// Length of the complete frame (fixed header + remaining length) at the front of `buf`,
/// `Ok(None)` if the frame is not complete yet. Fails fast on a malformed remaining length
/// or a frame larger than `max_packet_size`, before the body has arrived.
/// `max_packet_size == 0` means no limit (as Mosquitto's `max_packet_size 0`).
pub fn frame_len(buf: &[u8], max_packet_size: u32) -> Result<Option<usize>> {
    Ok(fixed_header(buf, max_packet_size)?
        .map(FixedHeader::total)
        .filter(|&total| total <= buf.len()))
}

/// Decodes one packet from the front of `buf` and advances `buf` past it.
///
/// `version` is the version negotiated by CONNECT; CONNECT itself is self-describing and
/// decodes whatever `version` says. Returns `Ok(None)` (consuming nothing) for a partial frame.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: u32,
) -> Result<Option<Packet>> {
    let Some(h) = fixed_header(buf, max_packet_size)? else {
        return Ok(None);
    };
    if buf.len() < h.total() {
        return Ok(None);
    }
    let kind = h.byte >> 4;
    // Fast path: the common tiny packets (acks, pings, bare DISCONNECT) are parsed in
    // place without turning the frame into shared `Bytes`.
    if h.remaining <= 2 {
        let body = buf.get(h.header_len..h.total()).unwrap_or_default();
        if let Some(packet) = decode_short(kind, body, version) {
            let packet = packet?;
            buf.advance(h.total());
            return Ok(Some(packet));
        }
    }
    if kind == 3 {
        if let Some(packet) = decode_publish_fast(buf, h, version) {
            return packet.map(Some);
        }
    }
    let frame = buf.split_to(h.total()).freeze();
    let mut r = Reader::new(&frame, h.header_len);
    let packet = match kind {
        1 => Packet::Connect(Box::new(decode_connect(&mut r)?)),
        2 => Packet::ConnAck(decode_connack(&mut r, version)?),
        3 => Packet::Publish(decode_publish(h.byte, &mut r, version)?),
        4..=7 => Packet::Ack(decode_ack(ack_kind(kind), &mut r, version)?),
        8 => Packet::Subscribe(decode_subscribe(&mut r, version)?),
        9 => Packet::SubAck(decode_suback(&mut r, version, false)?),
        10 => Packet::Unsubscribe(decode_unsubscribe(&mut r, version)?),
        11 => Packet::UnsubAck(decode_suback(&mut r, version, true)?),
        12 | 13 => return Err(DecodeError::Malformed("PINGREQ/PINGRESP with a body")),
        14 => Packet::Disconnect(decode_disconnect(&mut r, version)?),
        _ => Packet::Auth(decode_auth(&mut r, version)?),
    };
    r.finish("trailing bytes in packet")?;
    Ok(Some(packet))
}

/// Peeks the protocol level of a CONNECT frame at the front of `buf` without consuming it.
/// `None` if `buf` does not start with (enough of) a CONNECT to tell.
pub fn decode_connect_version(buf: &[u8]) -> Option<u8> {
    let (&byte, rest) = buf.split_first()?;
    if byte != 0x10 {
        return None;
    }
    let VarInt::Complete(_, n) = wire::parse_varint(rest).ok()? else {
        return None;
    };
    let body = rest.get(n..)?;
    let name_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    body.get(2 + name_len).copied()
}

const fn ack_kind(kind: u8) -> AckKind {
    match kind {
        4 => AckKind::PubAck,
        5 => AckKind::PubRec,
        6 => AckKind::PubRel,
        _ => AckKind::PubComp,
    }
}

fn packet_id(r: &mut Reader<'_>) -> Result<PacketId> {
    match r.u16("packet identifier")? {
        // [MQTT-2.3.1-1]
        0 => Err(DecodeError::Protocol("packet identifier 0")),
        id => Ok(id),
    }
}

/// The common packets with a body of 0..=2 bytes; `None` leaves the frame to the
/// general path (which also produces the precise error for anything unusual).
fn decode_short(kind: u8, body: &[u8], version: ProtocolVersion) -> Option<Result<Packet>> {
    let v5 = version.is_v5();
    let nonzero_id = |a: u8, b: u8| match u16::from_be_bytes([a, b]) {
        // [MQTT-2.3.1-1]
        0 => Err(DecodeError::Protocol("packet identifier 0")),
        id => Ok(id),
    };
    Some(match (kind, body) {
        (2, &[flags, code]) if !v5 => connack_flags(flags).map(|session_present| {
            Packet::ConnAck(ConnAck {
                session_present,
                reason: ReasonCode(code),
                properties: Properties::default(),
            })
        }),
        (4..=7, &[a, b]) => nonzero_id(a, b).map(|packet_id| {
            Packet::Ack(Ack {
                kind: ack_kind(kind),
                packet_id,
                reason: ReasonCode::SUCCESS,
                properties: Properties::default(),
            })
        }),
        (11, &[a, b]) if !v5 => nonzero_id(a, b).map(|packet_id| {
            Packet::UnsubAck(SubAck {
                packet_id,
                reasons: SmallVec::new(),
                properties: Properties::default(),
            })
        }),
        (12, []) => Ok(Packet::PingReq),
        (13, []) => Ok(Packet::PingResp),
        (14, []) => Ok(Packet::Disconnect(Disconnect::default())),
        _ => return None,
    })
}

/// CONNACK acknowledge flags: bits 7-1 reserved [MQTT-3.2.2-1].
fn connack_flags(flags: u8) -> Result<bool> {
    if flags & 0xFE != 0 {
        return Err(DecodeError::Malformed("reserved CONNACK flags"));
    }
    Ok(flags & 1 == 1)
}

fn decode_connect(r: &mut Reader<'_>) -> Result<Connect> {
    let name = r.binary_slice("protocol name")?;
    let level = r.u8("protocol level")?;
    let protocol = match (name, level) {
        (b"MQTT", 4) => ProtocolVersion::V311,
        (b"MQTT", 5) => ProtocolVersion::V5,
        (b"MQIsdp", 3) => ProtocolVersion::V31,
        _ => return Err(DecodeError::UnsupportedProtocolVersion { level }),
    };
    let v5 = protocol.is_v5();
    let flags = r.u8("connect flags")?;
    if flags & 0x01 != 0 {
        // [MQTT-3.1.2-3]
        return Err(DecodeError::Malformed("reserved CONNECT flag"));
    }
    let will_flag = flags & 0x04 != 0;
    let will_qos_bits = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    if !will_flag && will_qos_bits != 0 {
        // [MQTT-3.1.2-11]
        return Err(DecodeError::Malformed("will QoS without will flag"));
    }
    if !will_flag && will_retain {
        // [MQTT-3.1.2-13]
        return Err(DecodeError::Malformed("will retain without will flag"));
    }
    // [MQTT-3.1.2-12]
    let will_qos = QoS::from_u8(will_qos_bits).ok_or(DecodeError::Malformed("will QoS 3"))?;
    if password_flag && !username_flag && !v5 {
        // [MQTT-3.1.2-22]
        return Err(DecodeError::Malformed("password without user name"));
    }
    let keep_alive = r.u16("keep alive")?;
    let properties = properties_if(v5, r, PropCtx::CONNECT)?;
    // May be empty: whether that is acceptable is the session's decision.
    let client_id = r.string("client identifier")?;
    let will = if will_flag {
        let properties = properties_if(v5, r, PropCtx::WILL)?;
        let topic = r.string("will topic")?;
        if !wire::is_valid_topic_name(topic.as_bytes()) {
            return Err(topic_name_error(topic.as_bytes()));
        }
        let payload = r.binary("will payload")?;
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if username_flag {
        Some(r.string("user name")?)
    } else {
        None
    };
    let password = if password_flag {
        Some(r.binary("password")?)
    } else {
        None
    };
    Ok(Connect {
        protocol,
        clean_start: flags & 0x02 != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

fn decode_connack(r: &mut Reader<'_>, version: ProtocolVersion) -> Result<ConnAck> {
    let session_present = connack_flags(r.u8("connack flags")?)?;
    let reason = ReasonCode(r.u8("connack reason code")?);
    let properties = properties_if(version.is_v5(), r, PropCtx::CONNACK)?;
    Ok(ConnAck {
        session_present,
        reason,
        properties,
    })
}

/// Why a topic name failed [`wire::is_valid_topic_name`].
fn topic_name_error(topic: &[u8]) -> DecodeError {
    if wire::is_too_deep(topic) {
        DecodeError::TopicTooDeep { filter: false }
    } else {
        DecodeError::TopicNameInvalid
    }
}

/// Why a topic filter failed [`wire::is_valid_topic_filter`].
fn topic_filter_error(filter: &[u8]) -> DecodeError {
    if wire::is_too_deep(filter) {
        DecodeError::TopicTooDeep { filter: true }
    } else {
        DecodeError::TopicFilterInvalid
    }
}

fn decode_publish(byte: u8, r: &mut Reader<'_>, version: ProtocolVersion) -> Result<Publish> {
    // [MQTT-3.3.1-4]
    let qos = QoS::from_u8((byte >> 1) & 0x03).ok_or(DecodeError::Malformed("PUBLISH QoS 3"))?;
    let dup = byte & 0x08 != 0;
    if dup && qos == QoS::AtMostOnce {
        // [MQTT-3.3.1-2]
        return Err(DecodeError::Malformed("DUP set on a QoS 0 PUBLISH"));
    }
    let topic = r.binary("topic name")?;
    let packet_id = if qos == QoS::AtMostOnce {
        None
    } else {
        Some(packet_id(r)?)
    };
    let properties = properties_if(version.is_v5(), r, PropCtx::PUBLISH)?;
    // [MQTT-3.3.2-2] no wildcards; [MQTT-4.7.3-1] non-empty, except that MQTT 5 allows an
    // empty topic name when a Topic Alias is present (3.3.2.3.4).
    let alias_only = topic.is_empty() && properties.topic_alias.is_some();
    if !alias_only && !wire::is_valid_topic_name(&topic) {
        return Err(topic_name_error(&topic));
    }
    // [MQTT-3.3.2-1] the topic name is a UTF-8 string.
    if !wire::is_mqtt_utf8(&topic) {
        return Err(DecodeError::Malformed("invalid UTF-8 string"));
    }
    Ok(Publish {
        dup,
        qos,
        retain: byte & 0x01 != 0,
        // SAFETY: `wire::is_mqtt_utf8(&topic)` passed just above.
        topic: unsafe { ByteStr::from_validated(topic) },
        packet_id,
        properties,
        payload: r.rest(),
    })
}

/// The hot path: a PUBLISH without properties. Checks the whole frame in place, then
/// splits topic and payload straight off the read buffer (two reference-count increments,
/// no intermediate frame `Bytes`). `None` leaves the frame to the general path: MQTT 5
/// properties present, or anything wrong (the general path reports the precise error).
fn decode_publish_fast(
    buf: &mut BytesMut,
    h: FixedHeader,
    version: ProtocolVersion,
) -> Option<Result<Packet>> {
    let body = buf.get(h.header_len..h.total())?;
    let qos = QoS::from_u8((h.byte >> 1) & 0x03)?;
    let dup = h.byte & 0x08 != 0;
    if dup && qos == QoS::AtMostOnce {
        return None;
    }
    let topic_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    let topic = body.get(2..2 + topic_len)?;
    if !wire::is_valid_topic_name(topic) || !wire::is_mqtt_utf8(topic) {
        return None;
    }
    let mut pos = 2 + topic_len;
    let packet_id = if qos == QoS::AtMostOnce {
        None
    } else {
        let id = u16::from_be_bytes([*body.get(pos)?, *body.get(pos + 1)?]);
        if id == 0 {
            return None; // [MQTT-2.3.1-1], reported by the general path
        }
        pos += 2;
        Some(id)
    };
    if version.is_v5() {
        // An empty property block is the single byte 0.
        if *body.get(pos)? != 0 {
            return None;
        }
        pos += 1;
    }
    let payload_len = body.len() - pos;
    buf.advance(h.header_len + 2);
    let topic = buf.split_to(topic_len).freeze();
    buf.advance(pos - 2 - topic_len);
    let payload = if payload_len == 0 {
        bytes::Bytes::new()
    } else {
        buf.split_to(payload_len).freeze()
    };
    Some(Ok(Packet::Publish(Publish {
        dup,
        qos,
        retain: h.byte & 0x01 != 0,
        // SAFETY: these are the bytes `wire::is_mqtt_utf8` accepted above (`body[2..2 +
        // topic_len]`, split off the same buffer).
        topic: unsafe { ByteStr::from_validated(topic) },
        packet_id,
        properties: Properties::default(),
        payload,
    })))
}

fn decode_ack(kind: AckKind, r: &mut Reader<'_>, version: ProtocolVersion) -> Result<Ack> {
    let packet_id = packet_id(r)?;
    let mut ack = Ack {
        kind,
        packet_id,
        reason: ReasonCode::SUCCESS,
        properties: Properties::default(),
    };
    // MQTT 3: exactly 2 bytes (the caller's `finish` rejects more). MQTT 5: the reason
    // code is absent when the remaining length is 2 (Success), and the properties are
    // absent when it is 3.
    if version.is_v5() {
        (ack.reason, ack.properties) = optional_reason_and_properties(r, PropCtx::ACK)?;
    }
    Ok(ack)
}

/// The property block of an MQTT 5 packet; none in 3.1 / 3.1.1.
fn properties_if(v5: bool, r: &mut Reader<'_>, ctx: PropCtx) -> Result<Properties> {
    if v5 {
        decode_properties(r, ctx)
    } else {
        Ok(Properties::default())
    }
}

/// The MQTT 5 tail of acks, DISCONNECT and AUTH: a reason code (absent = Success) then
/// properties (absent = none), each optional at the end of the packet.
fn optional_reason_and_properties(
    r: &mut Reader<'_>,
    ctx: PropCtx,
) -> Result<(ReasonCode, Properties)> {
    let mut reason = ReasonCode::SUCCESS;
    let mut properties = Properties::default();
    if !r.is_empty() {
        reason = ReasonCode(r.u8("reason code")?);
        if !r.is_empty() {
            properties = decode_properties(r, ctx)?;
        }
    }
    Ok((reason, properties))
}

fn decode_subscribe(r: &mut Reader<'_>, version: ProtocolVersion) -> Result<Subscribe> {
    let packet_id = packet_id(r)?;
    let v5 = version.is_v5();
    let properties = properties_if(v5, r, PropCtx::SUBSCRIBE)?;
    let mut filters = SmallVec::new();
    while !r.is_empty() {
        let filter = r.string("topic filter")?;
        // A `$share/GROUP/FILTER` is checked whole by the broker (`topic::SharedFilter`),
        // so that a malformed one gets SUBACK 0x8F rather than a disconnect.
        let shared = filter.as_bytes().starts_with(b"$share/");
        if !shared && !wire::is_valid_topic_filter(filter.as_bytes()) {
            return Err(topic_filter_error(filter.as_bytes()));
        }
        let options = subscription_options(r.u8("subscription options")?, v5)?;
        filters.push((filter, options));
    }
    if filters.is_empty() {
        // [MQTT-3.8.3-3]
        return Err(DecodeError::Protocol("SUBSCRIBE without topic filters"));
    }
    Ok(Subscribe {
        packet_id,
        filters,
        properties,
    })
}

fn subscription_options(byte: u8, v5: bool) -> Result<SubscriptionOptions> {
    // 3.1.1: bits 7-2 reserved [MQTT-3.8.3-4]; 5.0: bits 7-6 reserved [MQTT-3.8.3-5].
    let reserved = if v5 { 0xC0 } else { 0xFC };
    if byte & reserved != 0 {
        return Err(DecodeError::Malformed("reserved subscription option bits"));
    }
    let qos = QoS::from_u8(byte & 0x03).ok_or(DecodeError::Malformed("subscription QoS 3"))?;
    let retain_handling = (byte >> 4) & 0x03;
    if retain_handling == 3 {
        return Err(DecodeError::Protocol("retain handling 3"));
    }
    Ok(SubscriptionOptions {
        qos,
        no_local: byte & 0x04 != 0,
        retain_as_published: byte & 0x08 != 0,
        retain_handling,
    })
}

fn decode_unsubscribe(r: &mut Reader<'_>, version: ProtocolVersion) -> Result<Unsubscribe> {
    let packet_id = packet_id(r)?;
    let properties = properties_if(version.is_v5(), r, PropCtx::UNSUBSCRIBE)?;
    let mut filters = SmallVec::new();
    while !r.is_empty() {
        let filter = r.string("topic filter")?;
        if !wire::is_valid_topic_filter(filter.as_bytes()) {
            return Err(topic_filter_error(filter.as_bytes()));
        }
        filters.push(filter);
    }
    if filters.is_empty() {
        // [MQTT-3.10.3-2]
        return Err(DecodeError::Protocol("UNSUBSCRIBE without topic filters"));
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        properties,
    })
}

/// SUBACK (any version) and UNSUBACK (5.0; a 3.1.1 UNSUBACK is exactly 2 bytes).
fn decode_suback(r: &mut Reader<'_>, version: ProtocolVersion, unsuback: bool) -> Result<SubAck> {
    let packet_id = packet_id(r)?;
    let v5 = version.is_v5();
    let ctx = if unsuback {
        PropCtx::UNSUBACK
    } else {
        PropCtx::SUBACK
    };
    let properties = properties_if(v5, r, ctx)?;
    let mut reasons = SmallVec::new();
    if unsuback && !v5 {
        return Ok(SubAck {
            packet_id,
            reasons,
            properties,
        });
    }
    let codes = r.rest();
    if codes.is_empty() {
        return Err(DecodeError::Protocol(
            "SUBACK/UNSUBACK without reason codes",
        ));
    }
    reasons.extend(codes.iter().map(|&c| ReasonCode(c)));
    Ok(SubAck {
        packet_id,
        reasons,
        properties,
    })
}

fn decode_disconnect(r: &mut Reader<'_>, version: ProtocolVersion) -> Result<Disconnect> {
    let mut d = Disconnect::default();
    // MQTT 3: no body (the caller's `finish` rejects one). MQTT 5: reason code and
    // properties are each optional at the end.
    if version.is_v5() {
        (d.reason, d.properties) = optional_reason_and_properties(r, PropCtx::DISCONNECT)?;
    }
    Ok(d)
}

fn decode_auth(r: &mut Reader<'_>, version: ProtocolVersion) -> Result<Auth> {
    if !version.is_v5() {
        return Err(DecodeError::Malformed("AUTH before MQTT 5"));
    }
    let (reason, properties) = optional_reason_and_properties(r, PropCtx::AUTH)?;
    Ok(Auth { reason, properties })
}
