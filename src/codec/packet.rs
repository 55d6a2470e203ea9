//! Packet types shared by every protocol version: one struct per packet, the version a
//! parameter of encode and decode, v5-only data in [`super::Properties`]. It owns the
//! types and their small invariants (e.g. `packet_id` is `Some` exactly when QoS > 0);
//! it never encodes, decodes or validates bytes (that is `decode`, `encode`, `wire`).

use bytes::Bytes;
use smallvec::SmallVec;

use super::bytestr::ByteStr;
use super::properties::Properties;

/// The protocol level byte of CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProtocolVersion {
    /// MQTT 3.1, protocol name "MQIsdp", level 3.
    V31,
    /// MQTT 3.1.1, protocol name "MQTT", level 4.
    V311,
    /// MQTT 5.0, protocol name "MQTT", level 5.
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte on the wire.
    pub const fn level(self) -> u8 {
        match self {
            Self::V31 => 3,
            Self::V311 => 4,
            Self::V5 => 5,
        }
    }

    pub const fn is_v5(self) -> bool {
        matches!(self, Self::V5)
    }
}

/// Quality of service of a PUBLISH or a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[non_exhaustive]
pub enum QoS {
    /// QoS 0: delivered at most once, never acknowledged.
    #[default]
    AtMostOnce = 0,
    /// QoS 1: delivered at least once (PUBACK).
    AtLeastOnce = 1,
    /// QoS 2: delivered exactly once (PUBREC, PUBREL, PUBCOMP).
    ExactlyOnce = 2,
}

impl QoS {
    /// `None` for 3, which is malformed [MQTT-3.3.1-4].
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::AtMostOnce),
            1 => Some(Self::AtLeastOnce),
            2 => Some(Self::ExactlyOnce),
            _ => None,
        }
    }
}

/// A packet identifier. The codec rejects 0 where the spec requires a non-zero id
/// [MQTT-2.3.1-1].
pub type PacketId = u16;

/// A reason code (MQTT 5) or CONNACK return code (3.1 / 3.1.1) as the raw byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ReasonCode(pub u8);

impl ReasonCode {
    pub const SUCCESS: Self = Self(0x00);
    pub const NORMAL_DISCONNECTION: Self = Self(0x00);
    pub const GRANTED_QOS_0: Self = Self(0x00);
    pub const GRANTED_QOS_1: Self = Self(0x01);
    pub const GRANTED_QOS_2: Self = Self(0x02);
    pub const DISCONNECT_WITH_WILL: Self = Self(0x04);
    pub const NO_MATCHING_SUBSCRIBERS: Self = Self(0x10);
    pub const NO_SUBSCRIPTION_EXISTED: Self = Self(0x11);
    pub const CONTINUE_AUTHENTICATION: Self = Self(0x18);
    pub const RE_AUTHENTICATE: Self = Self(0x19);
    pub const UNSPECIFIED_ERROR: Self = Self(0x80);
    pub const MALFORMED_PACKET: Self = Self(0x81);
    pub const PROTOCOL_ERROR: Self = Self(0x82);
    pub const IMPLEMENTATION_SPECIFIC_ERROR: Self = Self(0x83);
    pub const UNSUPPORTED_PROTOCOL_VERSION: Self = Self(0x84);
    pub const CLIENT_IDENTIFIER_NOT_VALID: Self = Self(0x85);
    pub const BAD_USER_NAME_OR_PASSWORD: Self = Self(0x86);
    pub const NOT_AUTHORIZED: Self = Self(0x87);
    pub const SERVER_UNAVAILABLE: Self = Self(0x88);
    pub const SERVER_BUSY: Self = Self(0x89);
    pub const BANNED: Self = Self(0x8A);
    pub const SERVER_SHUTTING_DOWN: Self = Self(0x8B);
    pub const BAD_AUTHENTICATION_METHOD: Self = Self(0x8C);
    pub const KEEP_ALIVE_TIMEOUT: Self = Self(0x8D);
    pub const SESSION_TAKEN_OVER: Self = Self(0x8E);
    pub const TOPIC_FILTER_INVALID: Self = Self(0x8F);
    pub const TOPIC_NAME_INVALID: Self = Self(0x90);
    pub const PACKET_IDENTIFIER_IN_USE: Self = Self(0x91);
    pub const PACKET_IDENTIFIER_NOT_FOUND: Self = Self(0x92);
    pub const RECEIVE_MAXIMUM_EXCEEDED: Self = Self(0x93);
    pub const TOPIC_ALIAS_INVALID: Self = Self(0x94);
    pub const PACKET_TOO_LARGE: Self = Self(0x95);
    pub const MESSAGE_RATE_TOO_HIGH: Self = Self(0x96);
    pub const QUOTA_EXCEEDED: Self = Self(0x97);
    pub const ADMINISTRATIVE_ACTION: Self = Self(0x98);
    pub const PAYLOAD_FORMAT_INVALID: Self = Self(0x99);
    pub const RETAIN_NOT_SUPPORTED: Self = Self(0x9A);
    pub const QOS_NOT_SUPPORTED: Self = Self(0x9B);
    pub const USE_ANOTHER_SERVER: Self = Self(0x9C);
    pub const SERVER_MOVED: Self = Self(0x9D);
    pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: Self = Self(0x9E);
    pub const CONNECTION_RATE_EXCEEDED: Self = Self(0x9F);
    pub const MAXIMUM_CONNECT_TIME: Self = Self(0xA0);
    pub const SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED: Self = Self(0xA1);
    pub const WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED: Self = Self(0xA2);

    // MQTT 3.1 / 3.1.1 CONNACK return codes.
    pub const V3_ACCEPTED: Self = Self(0x00);
    pub const V3_UNACCEPTABLE_PROTOCOL_VERSION: Self = Self(0x01);
    pub const V3_IDENTIFIER_REJECTED: Self = Self(0x02);
    pub const V3_SERVER_UNAVAILABLE: Self = Self(0x03);
    pub const V3_BAD_USERNAME_OR_PASSWORD: Self = Self(0x04);
    pub const V3_NOT_AUTHORIZED: Self = Self(0x05);
    /// SUBACK failure return code in 3.1.1.
    pub const V3_SUBACK_FAILURE: Self = Self(0x80);

    pub const fn is_error(self) -> bool {
        self.0 >= 0x80
    }
}

/// Last Will and Testament carried in CONNECT.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Will {
    pub topic: ByteStr,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Will properties (MQTT 5): will delay interval, payload format, message expiry,
    /// content type, response topic, correlation data, user properties.
    pub properties: Properties,
}

impl Will {
    /// A copy that shares no memory with the read buffer it was decoded from (see
    /// [`ByteStr::compact`] and [`Properties::compact`]).
    #[must_use]
    pub fn compact(&self) -> Self {
        Self {
            topic: self.topic.compact(),
            payload: Bytes::copy_from_slice(&self.payload),
            qos: self.qos,
            retain: self.retain,
            properties: self.properties.compact(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub protocol: ProtocolVersion,
    /// "Clean Session" in 3.1.1, "Clean Start" in 5.0.
    pub clean_start: bool,
    pub keep_alive: u16,
    pub client_id: ByteStr,
    pub will: Option<Will>,
    pub username: Option<ByteStr>,
    pub password: Option<Bytes>,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnAck {
    pub session_present: bool,
    /// Return code (3.1 / 3.1.1) or reason code (5.0).
    pub reason: ReasonCode,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// May be empty in MQTT 5 when a topic alias is used.
    pub topic: ByteStr,
    /// `Some` exactly when `qos > 0`.
    pub packet_id: Option<PacketId>,
    pub properties: Properties,
    pub payload: Bytes,
}

/// Which of the four publish acknowledgements an [`Ack`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(clippy::enum_variant_names)] // MQTT's own names: PUBACK, PUBREC, PUBREL, PUBCOMP
pub enum AckKind {
    PubAck,
    PubRec,
    PubRel,
    PubComp,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP share one shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub kind: AckKind,
    pub packet_id: PacketId,
    /// Always SUCCESS in 3.1 / 3.1.1.
    pub reason: ReasonCode,
    pub properties: Properties,
}

/// Subscription options byte of MQTT 5 (3.1.1 only uses `qos`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    /// 0 = send retained on subscribe, 1 = only if the subscription is new, 2 = never.
    pub retain_handling: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub packet_id: PacketId,
    /// Topic filters as sent; their syntax is validated by the decoder
    /// [MQTT-4.7.1-1] [MQTT-4.7.1-2].
    pub filters: SmallVec<[(ByteStr, SubscriptionOptions); 1]>,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub packet_id: PacketId,
    pub filters: SmallVec<[ByteStr; 1]>,
    pub properties: Properties,
}

/// SUBACK and UNSUBACK share one shape. In 3.1.1 UNSUBACK carries no reason codes on the
/// wire (the encoder writes none and the decoder yields an empty list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    pub packet_id: PacketId,
    pub reasons: SmallVec<[ReasonCode; 1]>,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// Always NORMAL_DISCONNECTION in 3.1 / 3.1.1.
    pub reason: ReasonCode,
    pub properties: Properties,
}

/// MQTT 5 AUTH.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    pub reason: ReasonCode,
    pub properties: Properties,
}

/// Every MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    Ack(Ack),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(SubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
}

impl Packet {
    /// The packet type nibble (1..=15).
    pub const fn type_code(&self) -> u8 {
        match self {
            Self::Connect(_) => 1,
            Self::ConnAck(_) => 2,
            Self::Publish(_) => 3,
            Self::Ack(a) => match a.kind {
                AckKind::PubAck => 4,
                AckKind::PubRec => 5,
                AckKind::PubRel => 6,
                AckKind::PubComp => 7,
            },
            Self::Subscribe(_) => 8,
            Self::SubAck(_) => 9,
            Self::Unsubscribe(_) => 10,
            Self::UnsubAck(_) => 11,
            Self::PingReq => 12,
            Self::PingResp => 13,
            Self::Disconnect(_) => 14,
            Self::Auth(_) => 15,
        }
    }

    pub const fn name(&self) -> &'static str {
        match self {
            Self::Connect(_) => "CONNECT",
            Self::ConnAck(_) => "CONNACK",
            Self::Publish(_) => "PUBLISH",
            Self::Ack(a) => match a.kind {
                AckKind::PubAck => "PUBACK",
                AckKind::PubRec => "PUBREC",
                AckKind::PubRel => "PUBREL",
                AckKind::PubComp => "PUBCOMP",
            },
            Self::Subscribe(_) => "SUBSCRIBE",
            Self::SubAck(_) => "SUBACK",
            Self::Unsubscribe(_) => "UNSUBSCRIBE",
            Self::UnsubAck(_) => "UNSUBACK",
            Self::PingReq => "PINGREQ",
            Self::PingResp => "PINGRESP",
            Self::Disconnect(_) => "DISCONNECT",
            Self::Auth(_) => "AUTH",
        }
    }
}
