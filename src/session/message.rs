//! Application messages as the session layer stores them: one [`Message`] per PUBLISH
//! received, shared by `Arc` between every session that queued it, and the per-session
//! [`Outgoing`] view of it (granted QoS, retain flag, subscription identifiers).
//!
//! This module never encodes bytes: the broker turns a [`Transmit`] into frames, using the
//! per-version header templates cached here so a message is encoded once, not once per
//! subscriber.

use std::num::NonZeroU64;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use smallvec::SmallVec;

use crate::codec::{Ack, AckKind, Packet, PacketId, Properties, Publish, QoS, ReasonCode};

/// One application message, immutable once routed.
#[derive(Debug)]
pub struct Message {
    /// The PUBLISH as received (topic alias resolved, `dup` cleared). Its `qos` and
    /// `retain` are the publisher's.
    pub publish: Publish,
    /// When the broker received it (message expiry counts from here).
    pub received: Instant,
    /// The publishing session's unique id (for No Local), `None` for wills, $SYS and
    /// injected messages.
    pub origin: Option<u64>,
    /// The connection that published it, for the broker's back-pressure (`None` as
    /// for `origin`). The session layer never reads it.
    pub publisher: Option<PublishedBy>,
    /// Encoded PUBLISH headers (QoS 1 flags, placeholder packet id, no subscription
    /// identifiers) for 3.1/3.1.1 (`[0]`) and 5.0 (`[1]`), filled on first use.
    pub headers: [OnceLock<Bytes>; 2],
}

impl Message {
    pub fn new(publish: Publish, received: Instant, origin: Option<u64>) -> Self {
        Self {
            publish,
            received,
            origin,
            publisher: None,
            headers: [OnceLock::new(), OnceLock::new()],
        }
    }

    /// Seconds of message expiry left at `now`: `None` if the message has no expiry,
    /// `Some(0)` if it has expired [MQTT-3.3.2-5].
    pub fn expiry_left(&self, now: Instant) -> Option<u32> {
        let interval = self.publish.properties.message_expiry_interval?;
        let waited = now.saturating_duration_since(self.received);
        let left = Duration::from_secs(u64::from(interval)).saturating_sub(waited);
        if left.is_zero() {
            return Some(0);
        }
        // Round up so a message with time left is never forwarded with interval 0.
        Some(u32::try_from(left.as_secs() + u64::from(left.subsec_nanos() > 0)).unwrap_or(u32::MAX))
    }
}

/// Where a message was published: the shard that received it and the connection there
/// (its slot, and its uid, which is never reused). Travels inside the message so that a
/// shard delivering it knows whom to pause, wherever it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishedBy {
    pub shard: u16,
    pub conn: u32,
    pub conn_uid: NonZeroU64,
}

/// A message as one session delivers it.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub msg: Arc<Message>,
    /// min(publish QoS, granted QoS) [MQTT-3.8.4-6].
    pub qos: QoS,
    pub retain: bool,
    /// Identifiers of every matching subscription that carried one (MQTT 5).
    pub sub_ids: SmallVec<[u32; 1]>,
}

/// What a session wants written to its client. The broker encodes it.
#[derive(Debug)]
pub enum Transmit {
    /// PUBACK, PUBREC, PUBREL or PUBCOMP without properties (the common case, unboxed).
    Ack(AckKind, PacketId, ReasonCode),
    PingResp,
    /// Anything else (CONNACK, SUBACK, UNSUBACK, DISCONNECT).
    Packet(Box<Packet>),
    Publish {
        out: Outgoing,
        packet_id: Option<PacketId>,
        dup: bool,
    },
}

impl Transmit {
    /// The packet to encode (publishes are encoded by the broker's fan-out code).
    pub fn into_packet(self) -> Option<Packet> {
        match self {
            Self::Ack(kind, packet_id, reason) => Some(Packet::Ack(Ack {
                kind,
                packet_id,
                reason,
                properties: Properties::default(),
            })),
            Self::PingResp => Some(Packet::PingResp),
            Self::Packet(p) => Some(*p),
            Self::Publish { .. } => None,
        }
    }
}
