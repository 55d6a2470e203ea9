//! The persistence record format, sans-IO: one [`Record`] per change of durable broker
//! state (a retained message, a persistent session's lifecycle, subscriptions, queued and
//! inflight messages, a delayed will), framed as `len: u32 LE | crc32(body): u32 LE | body`.
//!
//! It never touches a file and never panics on any input: [`decode_frame`] checks the
//! length, the checksum and every field before it builds a record, and reports a partial
//! frame as `Ok(None)` so the caller can tell a torn tail from a corrupt record.
//! Application messages are stored as encoded MQTT 5 PUBLISH packets, so every property
//! round-trips through the same codec the network uses (field encoding: [`super::wire`]).
//!
//! The format only grows: a record type, once written by a released broker, keeps its
//! number and layout forever (files of older versions must load); new state gets new
//! record types (15-17 were added after the first release, see `testdata/`).

use bytes::{BufMut, BytesMut};

use super::wire::{put_bytes, put_opt_str, put_publish, Reader};
use crate::codec::{ByteStr, Publish, QoS, Will};

/// Bytes before a record body: length and CRC32.
pub const FRAME_HEADER: usize = 8;

/// Largest body accepted: an MQTT packet plus generous room for the record fields.
pub const MAX_BODY: usize = 268_435_460 + (1 << 20);

/// `expiry` value meaning "never expires" (the v5 Session Expiry Interval 0xFFFFFFFF).
pub const EXPIRY_NEVER: u32 = u32::MAX;

/// Where an inflight server -> client message is in its flow.
pub mod stage {
    /// QoS 1 PUBLISH sent, waiting for PUBACK.
    pub const PUBACK: u8 = 0;
    /// QoS 2 PUBLISH sent, waiting for PUBREC.
    pub const PUBREC: u8 = 1;
    /// PUBREL sent, waiting for PUBCOMP.
    pub const PUBCOMP: u8 = 2;
}

/// An inflight message of a session: its sequence number, packet id and stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InflightEntry {
    pub seq: u64,
    pub packet_id: u16,
    pub stage: u8,
}

/// One durable change. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// The retained message of `publish.topic` (an empty payload deletes it).
    Retain {
        publish: Publish,
    },
    /// A persistent session exists and is connected (created or resumed).
    SessionOpen {
        client_id: ByteStr,
        version: u8,
        /// Seconds; [`EXPIRY_NEVER`] = never.
        expiry: u32,
    },
    /// The session lost its connection at `at`; it expires `expiry` seconds later.
    SessionOffline {
        client_id: ByteStr,
        at: u64,
        expiry: u32,
    },
    /// The session ended (expired, clean start, or expiry 0 at disconnect).
    SessionGone {
        client_id: ByteStr,
    },
    Subscribe {
        client_id: ByteStr,
        filter: ByteStr,
        /// The SUBSCRIBE options byte (QoS, No Local, RAP, Retain Handling).
        options: u8,
        /// Subscription Identifier, 0 = none.
        id: u32,
    },
    Unsubscribe {
        client_id: ByteStr,
        filter: ByteStr,
    },
    /// A message entered the session's outbound queue as its `seq`-th message.
    Message {
        client_id: ByteStr,
        seq: u64,
        /// Granted QoS for this session.
        qos: QoS,
        retain: bool,
        sub_ids: Vec<u32>,
        /// When the broker received it (message expiry counts from here).
        received: u64,
        publish: Publish,
    },
    /// The session's outbound state: every message with a sequence number below
    /// `done_below` that is not in `inflight` is complete.
    Window {
        client_id: ByteStr,
        done_below: u64,
        inflight: Vec<InflightEntry>,
    },
    /// A will waiting for its delay, published at `at` unless the client reconnects.
    Will {
        client_id: ByteStr,
        at: u64,
        will: Will,
    },
    /// The pending will was published or cancelled.
    WillDone {
        client_id: ByteStr,
    },
    /// A QoS 1/2 message shard `from` sent to other shards (acknowledged to its
    /// publisher once this record is durable): its `n`-th such message of process run
    /// `boot`, the `seq`-th QoS 1/2 publish on each (destination shard, seq) ring.
    Routed {
        boot: u64,
        from: u8,
        n: u64,
        seqs: Vec<(u8, u64)>,
        received: u64,
        publish: Publish,
    },
    /// Shard `to` delivered (and recorded) every QoS 1/2 publish from shard `from` up to
    /// ring sequence number `upto` of run `boot`.
    Delivered {
        boot: u64,
        from: u8,
        to: u8,
        upto: u64,
    },
    /// Routed messages of every run other than `keep_boot` were re-delivered on restart.
    RoutedClear {
        keep_boot: u64,
    },
    /// Last record of a snapshot (a snapshot without it is incomplete).
    End,
    /// The client's QoS 2 PUBLISH `packet_id` was received and PUBREC'd: until its PUBREL
    /// a resend with that id is not delivered again [MQTT-4.3.3-10].
    InboundQos2 {
        client_id: ByteStr,
        packet_id: u16,
    },
    /// PUBREL released the inbound QoS 2 `packet_id`.
    InboundQos2Released {
        client_id: ByteStr,
        packet_id: u16,
    },
    /// Who the session's client authenticated as at its last CONNECT (follows
    /// [`Record::SessionOpen`], which forgets the previous one): the listener it came in
    /// on (index in the config), its user name and its TLS certificate identity. A
    /// restored session's ACL is derived from them.
    SessionUser {
        client_id: ByteStr,
        listener: u32,
        username: Option<ByteStr>,
        identity: Option<ByteStr>,
    },
    /// Who published the retained message of `topic`: its client id, user name and
    /// listener, for `check_retain_source`. Precedes that message's [`Record::Retain`]
    /// (which forgets the previous source), so a torn tail never keeps the message
    /// without it.
    RetainSource {
        topic: ByteStr,
        client_id: ByteStr,
        username: Option<ByteStr>,
        listener: u32,
    },
}

/// Why bytes are not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record length {0} is larger than any record")]
    TooLarge(u64),
    #[error("checksum mismatch (stored {stored:08x}, computed {computed:08x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("malformed record: {0}")]
    Malformed(&'static str),
    #[error("unknown record type {0}")]
    UnknownType(u8),
    #[error("cannot encode: {0}")]
    Encode(String),
}

const T_RETAIN: u8 = 1;
const T_SESSION_OPEN: u8 = 2;
const T_SESSION_OFFLINE: u8 = 3;
const T_SESSION_GONE: u8 = 4;
const T_SUBSCRIBE: u8 = 5;
const T_UNSUBSCRIBE: u8 = 6;
const T_MESSAGE: u8 = 7;
const T_WINDOW: u8 = 8;
const T_WILL: u8 = 9;
const T_WILL_DONE: u8 = 10;
const T_END: u8 = 11;
const T_ROUTED: u8 = 12;
const T_DELIVERED: u8 = 13;
const T_ROUTED_CLEAR: u8 = 14;
const T_INBOUND_QOS2: u8 = 15;
const T_INBOUND_QOS2_RELEASED: u8 = 16;
const T_SESSION_USER: u8 = 17;
const T_RETAIN_SOURCE: u8 = 18;

/// Appends `record`, framed, to `out`.
pub fn encode(record: &Record, out: &mut BytesMut) -> Result<(), RecordError> {
    let start = out.len();
    out.put_u32_le(0);
    out.put_u32_le(0);
    if let Err(e) = encode_body(record, out) {
        out.truncate(start);
        return Err(e);
    }
    let body_len = out.len() - start - FRAME_HEADER;
    let Ok(len) = u32::try_from(body_len) else {
        out.truncate(start);
        return Err(RecordError::TooLarge(body_len as u64));
    };
    let crc = crc32fast::hash(&out[start + FRAME_HEADER..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Decodes the frame at the start of `buf`: `Ok(None)` when `buf` holds only part of it,
/// else the record and the bytes it used.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(Record, usize)>, RecordError> {
    let Some(header) = buf.get(..FRAME_HEADER) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let stored = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_BODY {
        return Err(RecordError::TooLarge(len as u64));
    }
    let Some(body) = buf.get(FRAME_HEADER..FRAME_HEADER + len) else {
        return Ok(None);
    };
    let computed = crc32fast::hash(body);
    if computed != stored {
        return Err(RecordError::Checksum { stored, computed });
    }
    let record = decode_body(body)?;
    Ok(Some((record, FRAME_HEADER + len)))
}

/// The length a frame at the start of `buf` claims (header included), if readable.
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    let h = buf.get(..4)?;
    Some(FRAME_HEADER + u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize)
}

fn will_publish(will: &Will) -> Publish {
    let mut properties = will.properties.clone();
    if let Some(p) = properties.values_mut() {
        p.will_delay_interval = None;
    }
    Publish {
        dup: false,
        qos: will.qos,
        retain: will.retain,
        topic: will.topic.clone(),
        packet_id: (will.qos != QoS::AtMostOnce).then_some(1),
        properties,
        payload: will.payload.clone(),
    }
}

fn encode_body(record: &Record, out: &mut BytesMut) -> Result<(), RecordError> {
    match record {
        Record::Retain { publish } => {
            out.put_u8(T_RETAIN);
            put_publish(out, publish)?;
        }
        Record::SessionOpen {
            client_id,
            version,
            expiry,
        } => {
            out.put_u8(T_SESSION_OPEN);
            put_bytes(out, client_id.as_bytes())?;
            out.put_u8(*version);
            out.put_u32_le(*expiry);
        }
        Record::SessionOffline {
            client_id,
            at,
            expiry,
        } => {
            out.put_u8(T_SESSION_OFFLINE);
            put_bytes(out, client_id.as_bytes())?;
            out.put_u64_le(*at);
            out.put_u32_le(*expiry);
        }
        Record::SessionGone { client_id } => {
            out.put_u8(T_SESSION_GONE);
            put_bytes(out, client_id.as_bytes())?;
        }
        Record::Subscribe {
            client_id,
            filter,
            options,
            id,
        } => {
            out.put_u8(T_SUBSCRIBE);
            put_bytes(out, client_id.as_bytes())?;
            put_bytes(out, filter.as_bytes())?;
            out.put_u8(*options);
            out.put_u32_le(*id);
        }
        Record::Unsubscribe { client_id, filter } => {
            out.put_u8(T_UNSUBSCRIBE);
            put_bytes(out, client_id.as_bytes())?;
            put_bytes(out, filter.as_bytes())?;
        }
        Record::Message {
            client_id,
            seq,
            qos,
            retain,
            sub_ids,
            received,
            publish,
        } => {
            out.put_u8(T_MESSAGE);
            put_bytes(out, client_id.as_bytes())?;
            out.put_u64_le(*seq);
            out.put_u8(*qos as u8);
            out.put_u8(u8::from(*retain));
            let n = u32::try_from(sub_ids.len())
                .map_err(|_| RecordError::TooLarge(sub_ids.len() as u64))?;
            out.put_u32_le(n);
            for id in sub_ids {
                out.put_u32_le(*id);
            }
            out.put_u64_le(*received);
            put_publish(out, publish)?;
        }
        Record::Window {
            client_id,
            done_below,
            inflight,
        } => {
            out.put_u8(T_WINDOW);
            put_bytes(out, client_id.as_bytes())?;
            out.put_u64_le(*done_below);
            let n = u32::try_from(inflight.len())
                .map_err(|_| RecordError::TooLarge(inflight.len() as u64))?;
            out.put_u32_le(n);
            for e in inflight {
                out.put_u64_le(e.seq);
                out.put_u16_le(e.packet_id);
                out.put_u8(e.stage);
            }
        }
        Record::Will {
            client_id,
            at,
            will,
        } => {
            out.put_u8(T_WILL);
            put_bytes(out, client_id.as_bytes())?;
            out.put_u64_le(*at);
            put_publish(out, &will_publish(will))?;
        }
        Record::WillDone { client_id } => {
            out.put_u8(T_WILL_DONE);
            put_bytes(out, client_id.as_bytes())?;
        }
        Record::Routed {
            boot,
            from,
            n,
            seqs,
            received,
            publish,
        } => {
            out.put_u8(T_ROUTED);
            out.put_u64_le(*boot);
            out.put_u8(*from);
            out.put_u64_le(*n);
            let count =
                u32::try_from(seqs.len()).map_err(|_| RecordError::TooLarge(seqs.len() as u64))?;
            out.put_u32_le(count);
            for (to, seq) in seqs {
                out.put_u8(*to);
                out.put_u64_le(*seq);
            }
            out.put_u64_le(*received);
            put_publish(out, publish)?;
        }
        Record::Delivered {
            boot,
            from,
            to,
            upto,
        } => {
            out.put_u8(T_DELIVERED);
            out.put_u64_le(*boot);
            out.put_u8(*from);
            out.put_u8(*to);
            out.put_u64_le(*upto);
        }
        Record::RoutedClear { keep_boot } => {
            out.put_u8(T_ROUTED_CLEAR);
            out.put_u64_le(*keep_boot);
        }
        Record::End => out.put_u8(T_END),
        Record::InboundQos2 {
            client_id,
            packet_id,
        } => {
            out.put_u8(T_INBOUND_QOS2);
            put_bytes(out, client_id.as_bytes())?;
            out.put_u16_le(*packet_id);
        }
        Record::InboundQos2Released {
            client_id,
            packet_id,
        } => {
            out.put_u8(T_INBOUND_QOS2_RELEASED);
            put_bytes(out, client_id.as_bytes())?;
            out.put_u16_le(*packet_id);
        }
        Record::SessionUser {
            client_id,
            listener,
            username,
            identity,
        } => {
            out.put_u8(T_SESSION_USER);
            put_bytes(out, client_id.as_bytes())?;
            out.put_u32_le(*listener);
            put_opt_str(out, username.as_ref())?;
            put_opt_str(out, identity.as_ref())?;
        }
        Record::RetainSource {
            topic,
            client_id,
            username,
            listener,
        } => {
            out.put_u8(T_RETAIN_SOURCE);
            put_bytes(out, topic.as_bytes())?;
            put_bytes(out, client_id.as_bytes())?;
            put_opt_str(out, username.as_ref())?;
            out.put_u32_le(*listener);
        }
    }
    Ok(())
}

fn decode_body(body: &[u8]) -> Result<Record, RecordError> {
    let mut r = Reader { buf: body };
    let record = match r.u8()? {
        T_RETAIN => Record::Retain {
            publish: r.publish()?,
        },
        T_SESSION_OPEN => Record::SessionOpen {
            client_id: r.str()?,
            version: r.u8()?,
            expiry: r.u32()?,
        },
        T_SESSION_OFFLINE => Record::SessionOffline {
            client_id: r.str()?,
            at: r.u64()?,
            expiry: r.u32()?,
        },
        T_SESSION_GONE => Record::SessionGone {
            client_id: r.str()?,
        },
        T_SUBSCRIBE => Record::Subscribe {
            client_id: r.str()?,
            filter: r.str()?,
            options: r.u8()?,
            id: r.u32()?,
        },
        T_UNSUBSCRIBE => Record::Unsubscribe {
            client_id: r.str()?,
            filter: r.str()?,
        },
        T_MESSAGE => {
            let client_id = r.str()?;
            let seq = r.u64()?;
            let qos = r.qos()?;
            let retain = r.bool()?;
            let n = r.count(4)?;
            let mut sub_ids = Vec::with_capacity(n);
            for _ in 0..n {
                sub_ids.push(r.u32()?);
            }
            Record::Message {
                client_id,
                seq,
                qos,
                retain,
                sub_ids,
                received: r.u64()?,
                publish: r.publish()?,
            }
        }
        T_WINDOW => {
            let client_id = r.str()?;
            let done_below = r.u64()?;
            let n = r.count(11)?;
            let mut inflight = Vec::with_capacity(n);
            for _ in 0..n {
                let seq = r.u64()?;
                let packet_id = r.u16()?;
                let stage = r.u8()?;
                if stage > stage::PUBCOMP {
                    return Err(RecordError::Malformed("unknown inflight stage"));
                }
                inflight.push(InflightEntry {
                    seq,
                    packet_id,
                    stage,
                });
            }
            Record::Window {
                client_id,
                done_below,
                inflight,
            }
        }
        T_WILL => {
            let client_id = r.str()?;
            let at = r.u64()?;
            let p = r.publish()?;
            Record::Will {
                client_id,
                at,
                will: Will {
                    topic: p.topic,
                    payload: p.payload,
                    qos: p.qos,
                    retain: p.retain,
                    properties: p.properties,
                },
            }
        }
        T_WILL_DONE => Record::WillDone {
            client_id: r.str()?,
        },
        T_ROUTED => {
            let boot = r.u64()?;
            let from = r.u8()?;
            let n = r.u64()?;
            let count = r.count(9)?;
            let mut seqs = Vec::with_capacity(count);
            for _ in 0..count {
                seqs.push((r.u8()?, r.u64()?));
            }
            Record::Routed {
                boot,
                from,
                n,
                seqs,
                received: r.u64()?,
                publish: r.publish()?,
            }
        }
        T_DELIVERED => Record::Delivered {
            boot: r.u64()?,
            from: r.u8()?,
            to: r.u8()?,
            upto: r.u64()?,
        },
        T_ROUTED_CLEAR => Record::RoutedClear {
            keep_boot: r.u64()?,
        },
        T_END => Record::End,
        T_INBOUND_QOS2 => Record::InboundQos2 {
            client_id: r.str()?,
            packet_id: r.u16()?,
        },
        T_INBOUND_QOS2_RELEASED => Record::InboundQos2Released {
            client_id: r.str()?,
            packet_id: r.u16()?,
        },
        T_SESSION_USER => Record::SessionUser {
            client_id: r.str()?,
            listener: r.u32()?,
            username: r.opt_str()?,
            identity: r.opt_str()?,
        },
        T_RETAIN_SOURCE => Record::RetainSource {
            topic: r.str()?,
            client_id: r.str()?,
            username: r.opt_str()?,
            listener: r.u32()?,
        },
        other => return Err(RecordError::UnknownType(other)),
    };
    if !r.buf.is_empty() {
        return Err(RecordError::Malformed("trailing bytes after the record"));
    }
    Ok(record)
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
