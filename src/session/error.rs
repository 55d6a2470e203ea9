//! Errors that end a client's connection, with the MQTT 5 reason code to put in the
//! DISCONNECT (or CONNACK) sent before closing. Types only: it never closes anything
//! itself (the broker does, after sending the reason code).

use crate::codec::{DecodeError, ReasonCode};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A second CONNECT on a connection [MQTT-3.1.0-2].
    #[error("second CONNECT")]
    SecondConnect,
    /// A packet only a server sends, or AUTH without an authentication method.
    #[error("unexpected {0} from client")]
    Unexpected(&'static str),
    /// More QoS 2 publishes awaiting PUBREL than our Receive Maximum [MQTT-3.3.4-8].
    #[error("receive maximum exceeded")]
    ReceiveMaximumExceeded,
    /// Topic Alias 0, or above the Topic Alias Maximum we announced [MQTT-3.3.2-8]
    /// [MQTT-3.3.2-9].
    #[error("topic alias invalid")]
    TopicAliasInvalid,
    /// PUBLISH with an empty topic and an alias the client never set (3.3.2.3.4).
    #[error("unknown topic alias")]
    TopicAliasUnknown,
    /// PUBLISH with an empty topic and no alias.
    #[error("empty topic name")]
    EmptyTopic,
    /// RETAIN set although CONNACK said Retain Available = 0 [MQTT-3.3.1-11].
    #[error("retain not supported")]
    RetainNotSupported,
    /// DISCONNECT setting a session expiry when CONNECT had 0 [MQTT-3.14.2-2].
    #[error("session expiry set on DISCONNECT after 0 on CONNECT")]
    SessionExpiryAfterZero,
}

impl ProtocolError {
    /// Reason code of the DISCONNECT sent to a v5 client.
    pub const fn reason_code(&self) -> ReasonCode {
        match self {
            Self::Decode(e) => e.reason_code(),
            Self::SecondConnect
            | Self::Unexpected(_)
            | Self::EmptyTopic
            | Self::TopicAliasUnknown => ReasonCode::PROTOCOL_ERROR,
            Self::SessionExpiryAfterZero => ReasonCode::PROTOCOL_ERROR,
            Self::ReceiveMaximumExceeded => ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
            Self::TopicAliasInvalid => ReasonCode::TOPIC_ALIAS_INVALID,
            Self::RetainNotSupported => ReasonCode::RETAIN_NOT_SUPPORTED,
        }
    }
}
