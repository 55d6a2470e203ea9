//! Codec errors. Decode errors separate *malformed* packets (reason 0x81) from
//! *protocol violations* (0x82) so the session can answer with the reason code the spec
//! asks for. Types only: never a panic path, never an I/O error (the codec does no I/O).

use super::packet::ReasonCode;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Remaining length longer than 4 bytes or otherwise unreadable [MQTT-1.5.5-1].
    #[error("malformed remaining length")]
    MalformedRemainingLength,
    /// The frame is bigger than the receiver's maximum packet size.
    #[error("packet of {size} bytes exceeds the maximum packet size of {max}")]
    PacketTooLarge { size: usize, max: u32 },
    /// CONNECT with a protocol name / level this broker does not speak.
    #[error("unsupported protocol level {level}")]
    UnsupportedProtocolVersion { level: u8 },
    /// The bytes do not form a valid packet (reason 0x81).
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// A well-formed packet that breaks a protocol rule (reason 0x82).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// PUBLISH topic name with wildcards or otherwise invalid (reason 0x90 in v5).
    #[error("invalid topic name")]
    TopicNameInvalid,
    /// SUBSCRIBE / UNSUBSCRIBE topic filter that breaks [MQTT-4.7.1] (reason 0x8F in
    /// SUBACK where the spec allows, otherwise malformed).
    #[error("invalid topic filter")]
    TopicFilterInvalid,
    /// A topic name (`filter == false`) or filter deeper than
    /// [`super::wire::MAX_TOPIC_LEVELS`] levels: well formed, but refused (0x90 / 0x8F).
    #[error("topic {} has more than {} levels", if *.filter { "filter" } else { "name" }, super::wire::MAX_TOPIC_LEVELS)]
    TopicTooDeep { filter: bool },
}

impl DecodeError {
    /// The MQTT 5 reason code for a DISCONNECT (or CONNACK) sent because of this error.
    pub const fn reason_code(&self) -> ReasonCode {
        match self {
            Self::MalformedRemainingLength | Self::Malformed(_) => ReasonCode::MALFORMED_PACKET,
            Self::PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            Self::UnsupportedProtocolVersion { .. } => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            Self::Protocol(_) => ReasonCode::PROTOCOL_ERROR,
            Self::TopicNameInvalid => ReasonCode::TOPIC_NAME_INVALID,
            Self::TopicFilterInvalid => ReasonCode::MALFORMED_PACKET,
            Self::TopicTooDeep { filter: false } => ReasonCode::TOPIC_NAME_INVALID,
            Self::TopicTooDeep { filter: true } => ReasonCode::TOPIC_FILTER_INVALID,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("packet of {size} bytes exceeds the maximum packet size of {max}")]
    PacketTooLarge { size: usize, max: u32 },
    #[error("string or binary field of {0} bytes is longer than 65535")]
    FieldTooLong(usize),
    #[error("{0} cannot be encoded in this protocol version")]
    NotInVersion(&'static str),
    /// The packet breaks a rule the encoder can check cheaply (e.g. QoS > 0 without a
    /// packet identifier).
    #[error("invalid packet: {0}")]
    Invalid(&'static str),
}
