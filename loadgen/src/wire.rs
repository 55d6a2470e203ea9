//! Client-side MQTT 3.1.1 / 5.0 wire format for the load generator: encoders that append
//! to a caller's reused buffer and a parser that borrows packets in place from the read
//! buffer. It owns only byte layout: it never touches sockets, clocks or allocates per
//! message (the only allocation is a `PublishTemplate`, built once per publisher).
//! It must never panic on any input from the network: every length is checked first.

use std::fmt;

/// Protocol level byte of CONNECT: 4 = MQTT 3.1.1, 5 = MQTT 5.0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V311,
    V5,
}

impl Version {
    pub fn from_level(level: u8) -> Option<Self> {
        match level {
            4 => Some(Self::V311),
            5 => Some(Self::V5),
            _ => None,
        }
    }
    pub fn level(self) -> u8 {
        match self {
            Self::V311 => 4,
            Self::V5 => 5,
        }
    }
    pub fn is_v5(self) -> bool {
        self == Self::V5
    }
}

/// Packet type nibbles (MQTT 3.1.1 table 2.1 / MQTT 5.0 table 2-1).
pub mod ptype {
    pub const CONNECT: u8 = 1;
    pub const CONNACK: u8 = 2;
    pub const PUBLISH: u8 = 3;
    pub const PUBACK: u8 = 4;
    pub const PUBREC: u8 = 5;
    pub const PUBREL: u8 = 6;
    pub const PUBCOMP: u8 = 7;
    pub const SUBSCRIBE: u8 = 8;
    pub const SUBACK: u8 = 9;
    pub const PINGREQ: u8 = 12;
    pub const PINGRESP: u8 = 13;
    pub const DISCONNECT: u8 = 14;
    pub const AUTH: u8 = 15;
}

/// Largest value a Variable Byte Integer can hold (four bytes). [MQTT-1.5.5]
pub const MAX_REMAINING: usize = 268_435_455;

/// Errors of the parser: the peer sent bytes that are not a packet we can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// Remaining Length used a fifth byte or exceeded the maximum.
    BadRemainingLength,
    /// A packet's fields do not fit inside its Remaining Length.
    Truncated(u8),
    /// A packet type a client never receives (or reserved 0).
    UnexpectedType(u8),
    /// A PUBLISH with QoS 3. [MQTT-3.3.1-4]
    BadQos,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadRemainingLength => write!(f, "malformed remaining length"),
            Self::Truncated(t) => write!(f, "packet type {t} shorter than its fields"),
            Self::UnexpectedType(t) => write!(f, "unexpected packet type {t} from broker"),
            Self::BadQos => write!(f, "PUBLISH with QoS 3"),
        }
    }
}

impl std::error::Error for WireError {}

/// Appends `value` as a Variable Byte Integer. Values above `MAX_REMAINING` are clamped
/// by the callers (they never build such packets).
pub fn put_varint(buf: &mut Vec<u8>, mut value: usize) {
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        buf.push(byte);
        if value == 0 {
            break;
        }
    }
}

/// Number of bytes `put_varint` writes for `value`.
pub fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Reads a Variable Byte Integer: `Ok(None)` if more bytes are needed,
/// else `(value, bytes used)`. [MQTT-1.5.5-1] at most four bytes.
pub fn get_varint(buf: &[u8]) -> Result<Option<(usize, usize)>, WireError> {
    let mut value = 0usize;
    let mut mult = 1usize;
    for i in 0..4 {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        value += usize::from(b & 0x7f) * mult;
        if b & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
        mult *= 128;
    }
    Err(WireError::BadRemainingLength)
}

fn put_str(buf: &mut Vec<u8>, s: &[u8]) {
    let len = s.len().min(u16::MAX as usize);
    buf.extend_from_slice(&(len as u16).to_be_bytes());
    buf.extend_from_slice(&s[..len]);
}

/// What a client puts in CONNECT.
#[derive(Clone, Debug)]
pub struct ConnectOpts<'a> {
    pub client_id: &'a str,
    pub keep_alive: u16,
    pub clean: bool,
    /// v5 Session Expiry Interval (0 = ends with the connection).
    pub session_expiry: u32,
    /// v5 Receive Maximum we announce (how many QoS>0 the broker may have unacked to us).
    pub receive_max: u16,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
}

/// Appends a CONNECT packet. [MQTT-3.1.2-1] protocol name "MQTT".
pub fn encode_connect(buf: &mut Vec<u8>, v: Version, o: &ConnectOpts<'_>) {
    let mut props: [u8; 16] = [0; 16];
    let mut plen = 0;
    if v.is_v5() {
        if o.session_expiry > 0 {
            props[plen] = 0x11;
            props[plen + 1..plen + 5].copy_from_slice(&o.session_expiry.to_be_bytes());
            plen += 5;
        }
        if o.receive_max != 0 && o.receive_max != u16::MAX {
            props[plen] = 0x21;
            props[plen + 1..plen + 3].copy_from_slice(&o.receive_max.to_be_bytes());
            plen += 3;
        }
    }
    let id = o.client_id.as_bytes();
    let mut rl = 2 + 4 + 1 + 1 + 2 + 2 + id.len();
    if v.is_v5() {
        rl += varint_len(plen) + plen;
    }
    if let Some(u) = o.username {
        rl += 2 + u.len();
    }
    if let Some(p) = o.password {
        rl += 2 + p.len();
    }
    let mut flags = 0u8;
    if o.clean {
        flags |= 0x02;
    }
    if o.username.is_some() {
        flags |= 0x80;
    }
    if o.password.is_some() {
        flags |= 0x40;
    }
    buf.push(ptype::CONNECT << 4);
    put_varint(buf, rl);
    put_str(buf, b"MQTT");
    buf.push(v.level());
    buf.push(flags);
    buf.extend_from_slice(&o.keep_alive.to_be_bytes());
    if v.is_v5() {
        put_varint(buf, plen);
        buf.extend_from_slice(&props[..plen]);
    }
    put_str(buf, id);
    if let Some(u) = o.username {
        put_str(buf, u.as_bytes());
    }
    if let Some(p) = o.password {
        put_str(buf, p.as_bytes());
    }
}

/// Appends a SUBSCRIBE for `filters` (each with its maximum QoS). [MQTT-3.8.1-1] flags 0b0010.
pub fn encode_subscribe(buf: &mut Vec<u8>, v: Version, packet_id: u16, filters: &[(&str, u8)]) {
    let mut rl = 2 + if v.is_v5() { 1 } else { 0 };
    for (f, _) in filters {
        rl += 2 + f.len() + 1;
    }
    buf.push((ptype::SUBSCRIBE << 4) | 0x02);
    put_varint(buf, rl);
    buf.extend_from_slice(&packet_id.to_be_bytes());
    if v.is_v5() {
        buf.push(0);
    }
    for (f, q) in filters {
        put_str(buf, f.as_bytes());
        buf.push(q & 0x03);
    }
}

/// Appends PUBACK / PUBREC / PUBREL / PUBCOMP with success. Four bytes in both versions
/// (v5 allows omitting reason code 0x00 and properties when Remaining Length is 2).
/// [MQTT-3.6.1-1] PUBREL carries flags 0b0010.
pub fn encode_ack(buf: &mut Vec<u8>, kind: u8, packet_id: u16) {
    let flags = if kind == ptype::PUBREL { 0x02 } else { 0 };
    let id = packet_id.to_be_bytes();
    buf.extend_from_slice(&[(kind << 4) | flags, 2, id[0], id[1]]);
}

pub fn encode_pingreq(buf: &mut Vec<u8>) {
    buf.extend_from_slice(&[ptype::PINGREQ << 4, 0]);
}

/// Normal disconnection (v5 reason 0x00 may be omitted with Remaining Length 0).
pub fn encode_disconnect(buf: &mut Vec<u8>) {
    buf.extend_from_slice(&[ptype::DISCONNECT << 4, 0]);
}

/// A PUBLISH packet prebuilt for one topic, QoS and payload size: the hot path copies it
/// whole into the write buffer and patches the packet id and the payload stamp in place.
#[derive(Clone, Debug)]
pub struct PublishTemplate {
    bytes: Vec<u8>,
    id_offset: Option<usize>,
    payload_offset: usize,
}

impl PublishTemplate {
    pub fn new(v: Version, topic: &str, qos: u8, retain: bool, payload_len: usize) -> Self {
        let qos = qos.min(2);
        let mut rl = 2 + topic.len() + payload_len;
        if qos > 0 {
            rl += 2;
        }
        if v.is_v5() {
            rl += 1;
        }
        let rl = rl.min(MAX_REMAINING);
        let mut bytes = Vec::with_capacity(rl + 5);
        bytes.push((ptype::PUBLISH << 4) | (qos << 1) | u8::from(retain));
        put_varint(&mut bytes, rl);
        put_str(&mut bytes, topic.as_bytes());
        let id_offset = if qos > 0 {
            let at = bytes.len();
            bytes.extend_from_slice(&[0, 0]);
            Some(at)
        } else {
            None
        };
        if v.is_v5() {
            bytes.push(0); // no properties
        }
        let payload_offset = bytes.len();
        bytes.resize(payload_offset + payload_len, 0);
        Self {
            bytes,
            id_offset,
            payload_offset,
        }
    }

    /// Size in bytes of one encoded packet.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Appends one PUBLISH to `buf` and returns the payload slice (inside `buf`) so the
    /// caller can stamp it. `packet_id` is ignored for QoS 0.
    pub fn append<'b>(&self, buf: &'b mut Vec<u8>, packet_id: u16) -> &'b mut [u8] {
        let start = buf.len();
        buf.extend_from_slice(&self.bytes);
        if let Some(at) = self.id_offset {
            buf[start + at..start + at + 2].copy_from_slice(&packet_id.to_be_bytes());
        }
        &mut buf[start + self.payload_offset..]
    }
}

/// One packet from the broker, borrowed from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    ConnAck {
        session_present: bool,
        /// v3 return code or v5 reason code; 0 = accepted.
        code: u8,
        /// v5 Receive Maximum of the broker (65535 when absent or v3.1.1).
        receive_max: u16,
    },
    SubAck {
        packet_id: u16,
        codes: &'a [u8],
    },
    Publish {
        qos: u8,
        dup: bool,
        retain: bool,
        topic: &'a [u8],
        packet_id: u16,
        payload: &'a [u8],
    },
    /// PUBACK, PUBREC, PUBREL, PUBCOMP (kind is the type nibble).
    Ack {
        kind: u8,
        packet_id: u16,
        reason: u8,
    },
    PingResp,
    Disconnect {
        reason: u8,
    },
    /// UNSUBACK, AUTH: read and ignored.
    Other(u8),
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Skips a v5 property block at `at`, returning the offset after it.
fn skip_props(body: &[u8], at: usize, kind: u8) -> Result<usize, WireError> {
    let rest = body.get(at..).ok_or(WireError::Truncated(kind))?;
    match get_varint(rest)? {
        Some((len, used)) => {
            let end = at + used + len;
            if end > body.len() {
                Err(WireError::Truncated(kind))
            } else {
                Ok(end)
            }
        }
        None => Err(WireError::Truncated(kind)),
    }
}

/// Finds a two-byte property `id` in the (already bounds-checked) property block at `at`.
/// Stops at the first property it cannot size (None).
fn find_u16_prop(body: &[u8], at: usize, id: u8) -> Option<u16> {
    let (len, used) = get_varint(body.get(at..)?).ok()??;
    let block = body.get(at + used..at + used + len)?;
    let mut i = 0;
    while i < block.len() {
        let pid = block[i];
        i += 1;
        let size = match pid {
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
            0x13 | 0x21 | 0x22 | 0x23 => 2,
            0x02 | 0x11 | 0x18 | 0x27 => 4,
            0x0B => get_varint(block.get(i..)?).ok()??.1,
            0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F => {
                2 + usize::from(be16(block, i)?)
            }
            0x26 => {
                let k = usize::from(be16(block, i)?);
                2 + k + 2 + usize::from(be16(block, i + 2 + k)?)
            }
            _ => return None,
        };
        if pid == id && size == 2 {
            return be16(block, i);
        }
        i += size;
    }
    None
}

/// Parses one packet from the start of `buf`. `Ok(None)` means the frame is incomplete
/// (never an error); otherwise returns the packet and how many bytes it used.
pub fn parse(buf: &[u8], v: Version) -> Result<Option<(Packet<'_>, usize)>, WireError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let Some((rl, used)) = get_varint(&buf[1..])? else {
        return Ok(None);
    };
    let total = 1 + used + rl;
    if buf.len() < total {
        return Ok(None);
    }
    let body = &buf[1 + used..total];
    let kind = first >> 4;
    let trunc = WireError::Truncated(kind);
    let pkt = match kind {
        ptype::PUBLISH => {
            let qos = (first >> 1) & 0x03;
            if qos == 3 {
                return Err(WireError::BadQos); // [MQTT-3.3.1-4]
            }
            let tlen = usize::from(be16(body, 0).ok_or(trunc.clone())?);
            let topic = body.get(2..2 + tlen).ok_or(trunc.clone())?;
            let mut at = 2 + tlen;
            let mut packet_id = 0;
            if qos > 0 {
                packet_id = be16(body, at).ok_or(trunc.clone())?;
                at += 2;
            }
            if v.is_v5() {
                at = skip_props(body, at, kind)?;
            }
            Packet::Publish {
                qos,
                dup: first & 0x08 != 0,
                retain: first & 0x01 != 0,
                topic,
                packet_id,
                payload: body.get(at..).ok_or(trunc)?,
            }
        }
        ptype::PUBACK | ptype::PUBREC | ptype::PUBREL | ptype::PUBCOMP => Packet::Ack {
            kind,
            packet_id: be16(body, 0).ok_or(trunc)?,
            // v5: reason omitted when Remaining Length is 2 means success.
            reason: body.get(2).copied().unwrap_or(0),
        },
        ptype::CONNACK => {
            let flags = *body.first().ok_or(trunc.clone())?;
            let code = *body.get(1).ok_or(trunc)?;
            let receive_max = if v.is_v5() && body.len() > 2 {
                skip_props(body, 2, kind)?;
                find_u16_prop(body, 2, 0x21).unwrap_or(u16::MAX)
            } else {
                u16::MAX
            };
            Packet::ConnAck {
                session_present: flags & 0x01 != 0,
                code,
                receive_max,
            }
        }
        ptype::SUBACK => {
            let packet_id = be16(body, 0).ok_or(trunc)?;
            let at = if v.is_v5() {
                skip_props(body, 2, kind)?
            } else {
                2
            };
            Packet::SubAck {
                packet_id,
                codes: &body[at..],
            }
        }
        ptype::PINGRESP => Packet::PingResp,
        ptype::DISCONNECT => Packet::Disconnect {
            reason: body.first().copied().unwrap_or(0),
        },
        11 | ptype::AUTH => Packet::Other(kind),
        _ => return Err(WireError::UnexpectedType(kind)),
    };
    Ok(Some((pkt, total)))
}

/// Human text for a CONNACK code: v3.1.1 return codes (table 3.1) or v5 reason codes.
pub fn connack_reason(v: Version, code: u8) -> &'static str {
    match (v, code) {
        (_, 0) => "accepted",
        (Version::V311, 1) => "unacceptable protocol version",
        (Version::V311, 2) => "identifier rejected",
        (Version::V311, 3) => "server unavailable",
        (Version::V311, 4) => "bad user name or password",
        (Version::V311, 5) => "not authorized",
        (Version::V5, 0x80) => "unspecified error",
        (Version::V5, 0x81) => "malformed packet",
        (Version::V5, 0x82) => "protocol error",
        (Version::V5, 0x83) => "implementation specific error",
        (Version::V5, 0x84) => "unsupported protocol version",
        (Version::V5, 0x85) => "client identifier not valid",
        (Version::V5, 0x86) => "bad user name or password",
        (Version::V5, 0x87) => "not authorized",
        (Version::V5, 0x88) => "server unavailable",
        (Version::V5, 0x89) => "server busy",
        (Version::V5, 0x8A) => "banned",
        (Version::V5, 0x8C) => "bad authentication method",
        (Version::V5, 0x90) => "topic name invalid",
        (Version::V5, 0x95) => "packet too large",
        (Version::V5, 0x97) => "quota exceeded",
        (Version::V5, 0x99) => "payload format invalid",
        (Version::V5, 0x9A) => "retain not supported",
        (Version::V5, 0x9B) => "QoS not supported",
        (Version::V5, 0x9C) => "use another server",
        (Version::V5, 0x9D) => "server moved",
        (Version::V5, 0x9F) => "connection rate exceeded",
        _ => "unknown reason",
    }
}

/// Human text for a failed SUBACK code (v3 0x80, v5 reason codes).
pub fn suback_reason(code: u8) -> &'static str {
    match code {
        0x80 => "failure / unspecified error",
        0x83 => "implementation specific error",
        0x87 => "not authorized",
        0x8F => "topic filter invalid",
        0x91 => "packet identifier in use",
        0x97 => "quota exceeded",
        0x9E => "shared subscriptions not supported",
        0xA1 => "subscription identifiers not supported",
        0xA2 => "wildcard subscriptions not supported",
        _ => "unknown reason",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip_at_boundaries() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            MAX_REMAINING,
        ] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v));
            assert_eq!(get_varint(&b).unwrap(), Some((v, b.len())));
        }
    }

    #[test]
    fn mqtt_1_5_5_varint_fifth_byte_is_malformed() {
        assert_eq!(
            get_varint(&[0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(WireError::BadRemainingLength)
        );
        assert_eq!(get_varint(&[0xff, 0xff]), Ok(None));
    }

    #[test]
    fn connect_v311_exact_bytes() {
        let mut b = Vec::new();
        let o = ConnectOpts {
            client_id: "c1",
            keep_alive: 60,
            clean: true,
            session_expiry: 0,
            receive_max: 0,
            username: None,
            password: None,
        };
        encode_connect(&mut b, Version::V311, &o);
        assert_eq!(
            b,
            [0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 2, b'c', b'1']
        );
    }

    #[test]
    fn connect_v5_with_properties_and_credentials() {
        let mut b = Vec::new();
        let o = ConnectOpts {
            client_id: "c",
            keep_alive: 300,
            clean: false,
            session_expiry: 300,
            receive_max: 100,
            username: Some("u"),
            password: Some("p"),
        };
        encode_connect(&mut b, Version::V5, &o);
        let (rl, used) = get_varint(&b[1..]).unwrap().unwrap();
        assert_eq!(1 + used + rl, b.len());
        assert_eq!(b[8], 5);
        assert_eq!(b[9], 0xC0);
        // property length 8: session expiry (5) + receive maximum (3)
        assert_eq!(b[12], 8);
        assert_eq!(&b[13..18], &[0x11, 0, 0, 1, 44]);
        assert_eq!(&b[18..21], &[0x21, 0, 100]);
        assert_eq!(&b[21..24], &[0, 1, b'c']);
    }

    #[test]
    fn mqtt_3_8_1_1_subscribe_flags_and_layout() {
        let mut b = Vec::new();
        encode_subscribe(&mut b, Version::V311, 7, &[("a/b", 1)]);
        assert_eq!(b, [0x82, 8, 0, 7, 0, 3, b'a', b'/', b'b', 1]);
        let mut b = Vec::new();
        encode_subscribe(&mut b, Version::V5, 7, &[("a", 2)]);
        assert_eq!(b, [0x82, 7, 0, 7, 0, 0, 1, b'a', 2]);
    }

    #[test]
    fn mqtt_3_6_1_1_pubrel_flags() {
        let mut b = Vec::new();
        encode_ack(&mut b, ptype::PUBREL, 0x0102);
        encode_ack(&mut b, ptype::PUBACK, 3);
        assert_eq!(b, [0x62, 2, 1, 2, 0x40, 2, 0, 3]);
    }

    #[test]
    fn publish_template_round_trips_both_versions() {
        for v in [Version::V311, Version::V5] {
            for qos in 0..=2u8 {
                let t = PublishTemplate::new(v, "x/y", qos, false, 20);
                let mut buf = vec![0xAA]; // pre-existing content stays
                let p = t.append(&mut buf, 513);
                p[0] = 9;
                p[19] = 8;
                assert_eq!(buf.len(), 1 + t.len());
                let (pkt, used) = parse(&buf[1..], v).unwrap().unwrap();
                assert_eq!(used, t.len());
                match pkt {
                    Packet::Publish {
                        qos: q,
                        topic,
                        packet_id,
                        payload,
                        ..
                    } => {
                        assert_eq!(q, qos);
                        assert_eq!(topic, b"x/y");
                        assert_eq!(packet_id, if qos > 0 { 513 } else { 0 });
                        assert_eq!(payload.len(), 20);
                        assert_eq!((payload[0], payload[19]), (9, 8));
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
    }

    #[test]
    fn partial_frames_are_none_never_errors() {
        let t = PublishTemplate::new(Version::V5, "topic", 1, false, 300);
        let mut buf = Vec::new();
        t.append(&mut buf, 1);
        for cut in 0..buf.len() {
            assert_eq!(parse(&buf[..cut], Version::V5), Ok(None), "cut {cut}");
        }
        assert!(parse(&buf, Version::V5).unwrap().is_some());
    }

    #[test]
    fn mqtt_3_3_1_4_qos_3_is_malformed() {
        assert_eq!(
            parse(&[0x36, 3, 0, 1, b'a'], Version::V311),
            Err(WireError::BadQos)
        );
    }

    #[test]
    fn truncated_fields_are_errors_not_panics() {
        // PUBLISH whose topic length runs past the packet.
        assert!(parse(&[0x30, 2, 0, 9], Version::V311).is_err());
        // PUBACK with one byte.
        assert!(parse(&[0x40, 1, 0], Version::V311).is_err());
        // v5 SUBACK whose property length runs past the packet.
        assert!(parse(&[0x90, 3, 0, 1, 9], Version::V5).is_err());
        // Reserved type 0.
        assert!(parse(&[0x00, 0], Version::V311).is_err());
    }

    #[test]
    fn parses_connack_suback_acks_ping_v311_and_v5() {
        let v3 = Version::V311;
        assert_eq!(
            parse(&[0x20, 2, 1, 5], v3).unwrap(),
            Some((
                Packet::ConnAck {
                    session_present: true,
                    code: 5,
                    receive_max: u16::MAX
                },
                4
            ))
        );
        assert_eq!(
            parse(&[0x90, 4, 0, 9, 1, 0x80], v3).unwrap(),
            Some((
                Packet::SubAck {
                    packet_id: 9,
                    codes: &[1, 0x80]
                },
                6
            ))
        );
        let v5 = Version::V5;
        // v5 SUBACK with a 4-byte property block (reason string "x") and no codes.
        assert_eq!(
            parse(&[0x90, 7, 0, 9, 4, 0x1F, 0, 1, b'x', 0x9E], v5)
                .unwrap()
                .map(|p| p.0),
            Some(Packet::SubAck {
                packet_id: 9,
                codes: &[]
            })
        );
        assert_eq!(
            parse(&[0x90, 8, 0, 9, 4, 0x1F, 0, 1, b'x', 0x9E], v5)
                .unwrap()
                .map(|p| p.0),
            Some(Packet::SubAck {
                packet_id: 9,
                codes: &[0x9E]
            })
        );
        // v5 CONNACK with properties: a reason string, then Receive Maximum 10.
        assert_eq!(
            parse(&[0x20, 10, 0, 0, 7, 0x1F, 0, 1, b'r', 0x21, 0, 10], v5)
                .unwrap()
                .map(|p| p.0),
            Some(Packet::ConnAck {
                session_present: false,
                code: 0,
                receive_max: 10
            })
        );
        // v5 PUBACK with a reason code and no properties.
        assert_eq!(
            parse(&[0x40, 3, 0, 4, 0x10], v5).unwrap().map(|p| p.0),
            Some(Packet::Ack {
                kind: ptype::PUBACK,
                packet_id: 4,
                reason: 0x10
            })
        );
        assert_eq!(
            parse(&[0xD0, 0], v5).unwrap().map(|p| p.0),
            Some(Packet::PingResp)
        );
        assert_eq!(
            parse(&[0xE0, 1, 0x8E], v5).unwrap().map(|p| p.0),
            Some(Packet::Disconnect { reason: 0x8E })
        );
    }

    #[test]
    fn v5_publish_with_properties_skips_them() {
        // topic "t", QoS 1, id 2, properties: message expiry (5 bytes), payload "hi"
        let b = [0x32, 13, 0, 1, b't', 0, 2, 5, 0x02, 0, 0, 0, 9, b'h', b'i'];
        let (p, used) = parse(&b, Version::V5).unwrap().unwrap();
        assert_eq!(used, 15);
        assert_eq!(
            p,
            Packet::Publish {
                qos: 1,
                dup: false,
                retain: false,
                topic: b"t",
                packet_id: 2,
                payload: b"hi"
            }
        );
    }

    #[test]
    fn many_packets_parse_back_to_back() {
        let t = PublishTemplate::new(Version::V311, "a", 0, false, 16);
        let mut buf = Vec::new();
        for _ in 0..100 {
            t.append(&mut buf, 0);
        }
        let mut at = 0;
        let mut n = 0;
        while let Some((_, used)) = parse(&buf[at..], Version::V311).unwrap() {
            at += used;
            n += 1;
        }
        assert_eq!((n, at), (100, buf.len()));
    }
}
