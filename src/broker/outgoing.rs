//! [`Outgoing`]: a message the host publishes into the broker
//! ([`crate::BrokerHandle::publish`] and its variants), with only what a publisher may
//! choose (topic, payload, QoS, RETAIN and the MQTT 5 properties that travel with a
//! message), and [`InvalidMessage`], why one is refused.
//!
//! It owns the checks a client's PUBLISH gets from the decoder, run on the host's
//! thread before the message is sent to a shard, so that no shard ever sees a message
//! it could not encode. It never touches a shard, a socket or a thread.

use std::time::Duration;

use bytes::Bytes;

use crate::codec::{ByteStr, Properties, PropertyValues, Publish, QoS};
use crate::config::Config;
use crate::topic::{TopicError, TopicName};

/// Longest UTF-8 string or binary property MQTT can encode (a two-byte length prefix).
const MAX_STRING: usize = 65_535;

/// Room kept out of the largest remaining length for the fixed parts of a PUBLISH
/// (packet id, property lengths and identifiers, subscription identifiers added per
/// subscriber).
const HEADER_ROOM: usize = 64;

/// A message the host publishes into the broker, as a client's PUBLISH would carry it.
/// The packet identifier, DUP and topic alias belong to one connection and are chosen
/// by the broker.
///
/// ```
/// use std::time::Duration;
/// use shardmq::{Outgoing, QoS};
///
/// let m = Outgoing::new("plant/boiler/setpoint", "72.0")
///     .qos(QoS::AtLeastOnce)
///     .retain(true)
///     .message_expiry(Duration::from_secs(3600))
///     .content_type("text/plain")
///     .user_property("unit", "celsius");
/// assert_eq!(m.topic(), "plant/boiler/setpoint");
/// assert_eq!(m.qos_level(), QoS::AtLeastOnce);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    topic: String,
    payload: Bytes,
    qos: QoS,
    retain: bool,
    message_expiry: Option<u32>,
    content_type: Option<String>,
    response_topic: Option<String>,
    correlation_data: Option<Bytes>,
    user_properties: Vec<(String, String)>,
    payload_is_utf8: bool,
}

impl Outgoing {
    /// A QoS 0 message, not retained, without properties. The topic is checked when the
    /// message is published ([`InvalidMessage`]).
    pub fn new(topic: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            payload: payload.into(),
            qos: QoS::AtMostOnce,
            retain: false,
            message_expiry: None,
            content_type: None,
            response_topic: None,
            correlation_data: None,
            user_properties: Vec::new(),
            payload_is_utf8: false,
        }
    }

    /// The QoS it is published at (subscribers get the lower of it and theirs).
    #[must_use]
    pub fn qos(mut self, qos: QoS) -> Self {
        self.qos = qos;
        self
    }

    /// Whether the broker keeps it as the topic's retained message (an empty payload
    /// with RETAIN deletes the retained message) [MQTT-3.3.1-5] [MQTT-3.3.1-10].
    #[must_use]
    pub fn retain(mut self, retain: bool) -> Self {
        self.retain = retain;
        self
    }

    /// MQTT 5 message expiry interval: the broker drops the message (and a retained one)
    /// once it waited this long for a subscriber, and subscribers get what is left of it.
    /// Whole seconds, rounded up; at most `u32::MAX` seconds.
    #[must_use]
    pub fn message_expiry(mut self, after: Duration) -> Self {
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        self.message_expiry = Some(u32::try_from(secs).unwrap_or(u32::MAX));
        self
    }

    /// MQTT 5 content type (e.g. a MIME type), passed on to subscribers.
    #[must_use]
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// MQTT 5 response topic: where a responder should publish its answer. Must be a
    /// valid topic name (no wildcards) [MQTT-3.3.2-14].
    #[must_use]
    pub fn response_topic(mut self, topic: impl Into<String>) -> Self {
        self.response_topic = Some(topic.into());
        self
    }

    /// MQTT 5 correlation data, for the requester to match a response to its request.
    #[must_use]
    pub fn correlation_data(mut self, data: impl Into<Bytes>) -> Self {
        self.correlation_data = Some(data.into());
        self
    }

    /// Adds an MQTT 5 user property (kept in order; a name may repeat [MQTT-3.3.2-18]).
    #[must_use]
    pub fn user_property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.user_properties.push((name.into(), value.into()));
        self
    }

    /// MQTT 5 payload format indicator: `true` says the payload is UTF-8 text (it is
    /// checked when published), `false` (the default) unspecified bytes.
    #[must_use]
    pub fn payload_is_utf8(mut self, utf8: bool) -> Self {
        self.payload_is_utf8 = utf8;
        self
    }

    /// The topic it is published on.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The QoS it is published at.
    pub fn qos_level(&self) -> QoS {
        self.qos
    }

    /// Whether it is published with RETAIN.
    pub fn is_retained(&self) -> bool {
        self.retain
    }

    /// Checks what a client's PUBLISH would have to satisfy to be decoded and accepted
    /// by this configuration (`message_size_limit`, `retain_available`).
    pub(crate) fn check(&self, config: &Config) -> Result<(), InvalidMessage> {
        TopicName::parse(&self.topic).map_err(InvalidMessage::Topic)?;
        if self.retain && !config.retain_available {
            return Err(InvalidMessage::RetainNotAvailable); // as for a client [MQTT-3.3.1-11]
        }
        let message_size_limit = config.message_size_limit;
        if let Some(t) = &self.response_topic {
            TopicName::parse(t).map_err(InvalidMessage::ResponseTopic)?; // [MQTT-3.3.2-14]
        }
        let strings = self.content_type.iter().map(|s| ("content type", s)).chain(
            self.user_properties
                .iter()
                .flat_map(|(k, v)| [("user property name", k), ("user property value", v)]),
        );
        let mut size = self.topic.len() + self.payload.len() + HEADER_ROOM;
        for (what, s) in strings {
            if s.len() > MAX_STRING {
                return Err(InvalidMessage::TooLong(what));
            }
            if s.contains('\0') {
                return Err(InvalidMessage::Nul(what)); // [MQTT-1.5.4-2]
            }
            size += s.len() + 3;
        }
        if let Some(d) = &self.correlation_data {
            if d.len() > MAX_STRING {
                return Err(InvalidMessage::TooLong("correlation data"));
            }
            size += d.len() + 3;
        }
        size += self.response_topic.as_ref().map_or(0, |t| t.len() + 3);
        if self.payload_is_utf8 && std::str::from_utf8(&self.payload).is_err() {
            return Err(InvalidMessage::NotUtf8); // [MQTT-3.3.2-4]
        }
        let limit = crate::codec::wire::VARINT_MAX as usize;
        if size > limit {
            return Err(InvalidMessage::TooLarge { size, limit });
        }
        if message_size_limit > 0 && self.payload.len() > message_size_limit as usize {
            return Err(InvalidMessage::TooLarge {
                size: self.payload.len(),
                limit: message_size_limit as usize,
            });
        }
        Ok(())
    }

    /// The message as the shards route it (after [`Outgoing::check`]).
    pub(crate) fn into_publish(self) -> Publish {
        let properties = Properties::from(PropertyValues {
            payload_format_indicator: self.payload_is_utf8.then_some(1),
            message_expiry_interval: self.message_expiry,
            content_type: self.content_type.as_deref().map(ByteStr::from),
            response_topic: self.response_topic.as_deref().map(ByteStr::from),
            correlation_data: self.correlation_data,
            user_properties: self
                .user_properties
                .iter()
                .map(|(k, v)| (ByteStr::from(k.as_str()), ByteStr::from(v.as_str())))
                .collect(),
            ..PropertyValues::default()
        });
        Publish {
            dup: false,
            qos: self.qos,
            retain: self.retain,
            topic: ByteStr::from(self.topic.as_str()),
            packet_id: None,
            properties,
            payload: self.payload,
        }
    }

    /// The host's message back from what [`Outgoing::into_publish`] made of it.
    pub(crate) fn from_publish(p: Publish) -> Self {
        let props = p.properties.into_values();
        let string = |s: ByteStr| s.as_str().to_owned();
        Self {
            topic: p.topic.as_str().to_owned(),
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            message_expiry: props.message_expiry_interval,
            content_type: props.content_type.map(string),
            response_topic: props.response_topic.map(string),
            correlation_data: props.correlation_data,
            user_properties: props
                .user_properties
                .into_iter()
                .map(|(k, v)| (string(k), string(v)))
                .collect(),
            payload_is_utf8: props.payload_format_indicator == Some(1),
        }
    }
}

/// Why [`crate::BrokerHandle::publish`] refused an [`Outgoing`] message as it is (the
/// checks a client's PUBLISH gets when it is decoded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidMessage {
    /// The topic is not a valid topic name (empty, a wildcard, U+0000, too long or too
    /// deep).
    #[error("invalid topic: {0}")]
    Topic(TopicError),
    /// The response topic is not a valid topic name [MQTT-3.3.2-14].
    #[error("invalid response topic: {0}")]
    ResponseTopic(TopicError),
    /// A string or binary property (named) is longer than 65,535 bytes.
    #[error("the {0} is longer than 65535 bytes")]
    TooLong(&'static str),
    /// A string property (named) contains U+0000 [MQTT-1.5.4-2].
    #[error("the {0} contains U+0000")]
    Nul(&'static str),
    /// The payload is marked UTF-8 ([`Outgoing::payload_is_utf8`]) but is not
    /// [MQTT-3.3.2-4].
    #[error("the payload is marked UTF-8 but is not")]
    NotUtf8,
    /// RETAIN is set and the configuration has `retain_available false`.
    #[error("retained messages are not available (retain_available false)")]
    RetainNotAvailable,
    /// The message is larger than MQTT can encode, or its payload larger than the
    /// configured `message_size_limit`.
    #[error("the message is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// Its size in bytes (the payload's, against `message_size_limit`).
        size: usize,
        /// The limit it exceeds.
        limit: usize,
    },
}

/// The MQTT 5 properties a publisher set on a message (of a [`crate::Message`],
/// [`crate::Ingested`] or [`crate::IngestMessage`]); all empty for MQTT 3.1.1 publishers.
/// A view: it borrows the message.
///
/// ```
/// # fn f(m: &shardmq::Message) {
/// let p = m.properties();
/// if p.content_type() == Some("application/json") {
///     for (name, value) in p.user_properties() {
///         println!("{name}: {value}");
///     }
/// }
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct MessageProperties<'a>(pub(crate) &'a Properties);

impl<'a> MessageProperties<'a> {
    /// The message expiry interval, in seconds, as the publisher set it.
    pub fn message_expiry_secs(&self) -> Option<u32> {
        self.0.message_expiry_interval
    }

    /// The content type.
    pub fn content_type(&self) -> Option<&'a str> {
        self.0.content_type.as_ref().map(ByteStr::as_str)
    }

    /// The response topic.
    pub fn response_topic(&self) -> Option<&'a str> {
        self.0.response_topic.as_ref().map(ByteStr::as_str)
    }

    /// The correlation data.
    pub fn correlation_data(&self) -> Option<&'a Bytes> {
        self.0.correlation_data.as_ref()
    }

    /// The user properties, in the publisher's order (names may repeat).
    pub fn user_properties(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.0
            .user_properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether the publisher marked the payload as UTF-8 text (payload format indicator 1).
    pub fn payload_is_utf8(&self) -> bool {
        self.0.payload_format_indicator == Some(1)
    }

    /// Whether the publisher set none of these.
    pub fn is_empty(&self) -> bool {
        self.0.message_expiry_interval.is_none()
            && self.0.content_type.is_none()
            && self.0.response_topic.is_none()
            && self.0.correlation_data.is_none()
            && self.0.user_properties.is_empty()
            && self.0.payload_format_indicator.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_routed_form() {
        let m = Outgoing::new("a/b", "x")
            .qos(QoS::ExactlyOnce)
            .retain(true)
            .message_expiry(Duration::from_millis(1500))
            .content_type("text/plain")
            .response_topic("r/1")
            .correlation_data(&b"id"[..])
            .user_property("k", "v")
            .user_property("k", "w")
            .payload_is_utf8(true);
        assert_eq!(m.check(&Config::default()), Ok(()));
        let p = m.clone().into_publish();
        assert_eq!(p.properties.message_expiry_interval, Some(2));
        assert_eq!(p.properties.payload_format_indicator, Some(1));
        assert_eq!(p.packet_id, None);
        assert!(p.retain && !p.dup);
        assert_eq!(Outgoing::from_publish(p), m);
    }

    #[test]
    fn refuses_what_a_decoder_would_refuse() {
        let limited = |limit| Config {
            message_size_limit: limit,
            ..Config::default()
        };
        let check = |m: Outgoing| m.check(&limited(0)).unwrap_err();
        assert_eq!(
            check(Outgoing::new("a/#", "")),
            InvalidMessage::Topic(TopicError::WildcardInName)
        );
        assert_eq!(
            check(Outgoing::new("", "")),
            InvalidMessage::Topic(TopicError::Empty)
        );
        assert_eq!(
            check(Outgoing::new("a", "").response_topic("r/+")),
            InvalidMessage::ResponseTopic(TopicError::WildcardInName)
        );
        assert_eq!(
            check(Outgoing::new("a", "").user_property("k\0", "v")),
            InvalidMessage::Nul("user property name")
        );
        assert_eq!(
            check(Outgoing::new("a", "").content_type("x".repeat(65_536))),
            InvalidMessage::TooLong("content type")
        );
        assert_eq!(
            check(Outgoing::new("a", vec![0xff]).payload_is_utf8(true)),
            InvalidMessage::NotUtf8
        );
        assert_eq!(
            Outgoing::new("a", vec![0; 11]).check(&limited(10)),
            Err(InvalidMessage::TooLarge {
                size: 11,
                limit: 10
            })
        );
        assert_eq!(Outgoing::new("a", vec![0; 10]).check(&limited(10)), Ok(()));
        let no_retain = Config {
            retain_available: false,
            ..Config::default()
        };
        assert_eq!(
            Outgoing::new("a", "").retain(true).check(&no_retain),
            Err(InvalidMessage::RetainNotAvailable)
        );
        assert_eq!(Outgoing::new("a", "").check(&no_retain), Ok(()));
    }
}
