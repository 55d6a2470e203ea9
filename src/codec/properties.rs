//! MQTT 5 properties. One struct for every packet type: the decoder rejects a property
//! that is not allowed on the packet it arrived on (malformed, 0x81, as MQTT 5 2.2.2.2
//! says) and a duplicate of a property that may appear at most once (protocol error,
//! 0x82). The wire format lives in `property_codec`.
//! For 3.1 / 3.1.1 every field stays at its default. This module owns the struct and its
//! cheap queries only; it never reads or writes bytes.

use std::ops::{Deref, DerefMut};
use std::sync::LazyLock;

use bytes::Bytes;
use smallvec::SmallVec;

use super::bytestr::ByteStr;

/// Property identifiers (MQTT 5, 2.2.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PropertyId {
    PayloadFormatIndicator = 0x01,
    MessageExpiryInterval = 0x02,
    ContentType = 0x03,
    ResponseTopic = 0x08,
    CorrelationData = 0x09,
    SubscriptionIdentifier = 0x0B,
    SessionExpiryInterval = 0x11,
    AssignedClientIdentifier = 0x12,
    ServerKeepAlive = 0x13,
    AuthenticationMethod = 0x15,
    AuthenticationData = 0x16,
    RequestProblemInformation = 0x17,
    WillDelayInterval = 0x18,
    RequestResponseInformation = 0x19,
    ResponseInformation = 0x1A,
    ServerReference = 0x1C,
    ReasonString = 0x1F,
    ReceiveMaximum = 0x21,
    TopicAliasMaximum = 0x22,
    TopicAlias = 0x23,
    MaximumQoS = 0x24,
    RetainAvailable = 0x25,
    UserProperty = 0x26,
    MaximumPacketSize = 0x27,
    WildcardSubscriptionAvailable = 0x28,
    SubscriptionIdentifierAvailable = 0x29,
    SharedSubscriptionAvailable = 0x2A,
}

impl PropertyId {
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0x01 => Self::PayloadFormatIndicator,
            0x02 => Self::MessageExpiryInterval,
            0x03 => Self::ContentType,
            0x08 => Self::ResponseTopic,
            0x09 => Self::CorrelationData,
            0x0B => Self::SubscriptionIdentifier,
            0x11 => Self::SessionExpiryInterval,
            0x12 => Self::AssignedClientIdentifier,
            0x13 => Self::ServerKeepAlive,
            0x15 => Self::AuthenticationMethod,
            0x16 => Self::AuthenticationData,
            0x17 => Self::RequestProblemInformation,
            0x18 => Self::WillDelayInterval,
            0x19 => Self::RequestResponseInformation,
            0x1A => Self::ResponseInformation,
            0x1C => Self::ServerReference,
            0x1F => Self::ReasonString,
            0x21 => Self::ReceiveMaximum,
            0x22 => Self::TopicAliasMaximum,
            0x23 => Self::TopicAlias,
            0x24 => Self::MaximumQoS,
            0x25 => Self::RetainAvailable,
            0x26 => Self::UserProperty,
            0x27 => Self::MaximumPacketSize,
            0x28 => Self::WildcardSubscriptionAvailable,
            0x29 => Self::SubscriptionIdentifierAvailable,
            0x2A => Self::SharedSubscriptionAvailable,
            _ => return None,
        })
    }
}

/// The MQTT 5 properties of a packet: nothing at all when none is set (always for 3.1 /
/// 3.1.1, and the common case for 5.0), else the values behind one box. A pointer wide,
/// so the packets that carry it (and [`super::Packet`], moved from decode to routing)
/// stay small; dropping or cloning an empty one touches nothing.
///
/// Read any property through `Deref` (`props.topic_alias`). Writing through `DerefMut`
/// allocates the values if there are none yet: to clear or take a property that may be
/// absent, use [`Properties::values_mut`], which never allocates.
#[derive(Clone, Default)]
pub struct Properties(Option<Box<PropertyValues>>);

/// What an absent [`Properties`] reads as.
static NO_PROPERTIES: LazyLock<PropertyValues> = LazyLock::new(PropertyValues::default);

impl Properties {
    /// True when no property is set (the common case; lets encoders skip work).
    #[inline]
    pub fn is_empty(&self) -> bool {
        !self.0.as_ref().is_some_and(|p| !p.is_empty())
    }

    /// The values, if any is set, for changes that must not allocate.
    #[inline]
    pub fn values_mut(&mut self) -> Option<&mut PropertyValues> {
        self.0.as_deref_mut()
    }

    /// Clears what belongs to one network connection or subscription and never travels
    /// with a routed message: the Topic Alias and the Subscription Identifiers. Never
    /// allocates.
    #[inline]
    pub fn clear_connection_scoped(&mut self) {
        if let Some(p) = self.values_mut() {
            p.topic_alias = None;
            p.subscription_identifiers.clear();
        }
    }

    /// Takes the Topic Alias, if set. Never allocates.
    #[inline]
    pub fn take_topic_alias(&mut self) -> Option<u16> {
        self.values_mut().and_then(|p| p.topic_alias.take())
    }

    /// A copy whose strings and binary data share no memory with the read buffer they
    /// were decoded from (see [`PropertyValues::compact`]). Nothing to do when empty.
    #[must_use]
    pub fn compact(&self) -> Self {
        match &self.0 {
            Some(p) if !p.is_empty() => Self(Some(Box::new(p.compact()))),
            _ => Self(None),
        }
    }

    /// The values, taken out (the defaults when none is set).
    #[must_use]
    pub fn into_values(self) -> PropertyValues {
        self.0.map(|b| *b).unwrap_or_default()
    }

    /// Heap bytes these properties keep alive beyond the pointer itself: the boxed
    /// values (if any) and what they point to ([`PropertyValues::heap_bytes`]).
    pub fn heap_bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |p| {
            std::mem::size_of::<PropertyValues>() + p.heap_bytes()
        })
    }
}

impl Deref for Properties {
    type Target = PropertyValues;

    #[inline]
    fn deref(&self) -> &PropertyValues {
        match &self.0 {
            Some(p) => p,
            None => &NO_PROPERTIES,
        }
    }
}

impl DerefMut for Properties {
    /// Allocates the values when there are none yet (see [`Properties::values_mut`]).
    fn deref_mut(&mut self) -> &mut PropertyValues {
        self.0.get_or_insert_with(Box::default)
    }
}

impl From<PropertyValues> for Properties {
    fn from(values: PropertyValues) -> Self {
        if values.is_empty() {
            Self(None)
        } else {
            Self(Some(Box::new(values)))
        }
    }
}

impl PartialEq for Properties {
    /// Equal when the same properties are set (absent and boxed-but-empty are equal).
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            _ => **self == **other,
        }
    }
}

impl Eq for Properties {}

impl std::fmt::Debug for Properties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            f.write_str("Properties {}")
        } else {
            std::fmt::Debug::fmt(&**self, f)
        }
    }
}

/// Every MQTT 5 property; `None` / empty means absent. Packets hold them as
/// [`Properties`] (boxed, or nothing when none is set).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PropertyValues {
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<ByteStr>,
    pub response_topic: Option<ByteStr>,
    pub correlation_data: Option<Bytes>,
    /// Several on a PUBLISH sent to a client, at most one on SUBSCRIBE.
    pub subscription_identifiers: SmallVec<[u32; 1]>,
    pub session_expiry_interval: Option<u32>,
    pub assigned_client_identifier: Option<ByteStr>,
    pub server_keep_alive: Option<u16>,
    pub authentication_method: Option<ByteStr>,
    pub authentication_data: Option<Bytes>,
    pub request_problem_information: Option<u8>,
    pub will_delay_interval: Option<u32>,
    pub request_response_information: Option<u8>,
    pub response_information: Option<ByteStr>,
    pub server_reference: Option<ByteStr>,
    pub reason_string: Option<ByteStr>,
    pub receive_maximum: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    pub topic_alias: Option<u16>,
    pub maximum_qos: Option<u8>,
    pub retain_available: Option<u8>,
    /// Order is preserved and duplicates are allowed [MQTT-3.3.2-18].
    pub user_properties: Vec<(ByteStr, ByteStr)>,
    pub maximum_packet_size: Option<u32>,
    pub wildcard_subscription_available: Option<u8>,
    pub subscription_identifier_available: Option<u8>,
    pub shared_subscription_available: Option<u8>,
}

impl PropertyValues {
    /// True when no property is set.
    pub fn is_empty(&self) -> bool {
        // Field by field, cheapest and most likely set first; no temporary default.
        self.user_properties.is_empty()
            && self.subscription_identifiers.is_empty()
            && self.topic_alias.is_none()
            && self.payload_format_indicator.is_none()
            && self.message_expiry_interval.is_none()
            && self.content_type.is_none()
            && self.response_topic.is_none()
            && self.correlation_data.is_none()
            && self.session_expiry_interval.is_none()
            && self.assigned_client_identifier.is_none()
            && self.server_keep_alive.is_none()
            && self.authentication_method.is_none()
            && self.authentication_data.is_none()
            && self.request_problem_information.is_none()
            && self.will_delay_interval.is_none()
            && self.request_response_information.is_none()
            && self.response_information.is_none()
            && self.server_reference.is_none()
            && self.reason_string.is_none()
            && self.receive_maximum.is_none()
            && self.topic_alias_maximum.is_none()
            && self.maximum_qos.is_none()
            && self.retain_available.is_none()
            && self.maximum_packet_size.is_none()
            && self.wildcard_subscription_available.is_none()
            && self.subscription_identifier_available.is_none()
            && self.shared_subscription_available.is_none()
    }

    /// A copy whose strings and binary data share no memory with the read buffer they
    /// were decoded from (see [`ByteStr::compact`]): for properties kept past the loop
    /// iteration that read them (wills, retained and queued messages). Cheap when empty.
    #[must_use]
    pub fn compact(&self) -> Self {
        let mut p = self.clone();
        for s in [
            &mut p.content_type,
            &mut p.response_topic,
            &mut p.assigned_client_identifier,
            &mut p.authentication_method,
            &mut p.response_information,
            &mut p.server_reference,
            &mut p.reason_string,
        ]
        .into_iter()
        .flatten()
        {
            *s = s.compact();
        }
        for b in [&mut p.correlation_data, &mut p.authentication_data]
            .into_iter()
            .flatten()
        {
            *b = Bytes::copy_from_slice(b);
        }
        for (k, v) in &mut p.user_properties {
            *k = k.compact();
            *v = v.compact();
        }
        p.user_properties.shrink_to_fit();
        p
    }

    /// Heap bytes these properties keep alive beyond the struct itself: string and binary
    /// values, the user property list, spilled subscription identifiers.
    pub fn heap_bytes(&self) -> usize {
        let strings = [
            &self.content_type,
            &self.response_topic,
            &self.assigned_client_identifier,
            &self.authentication_method,
            &self.response_information,
            &self.server_reference,
            &self.reason_string,
        ]
        .into_iter()
        .flatten()
        .map(ByteStr::len);
        let binary = [&self.correlation_data, &self.authentication_data]
            .into_iter()
            .flatten()
            .map(Bytes::len);
        let user = self.user_properties.capacity() * std::mem::size_of::<(ByteStr, ByteStr)>()
            + self
                .user_properties
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        let ids = if self.subscription_identifiers.spilled() {
            self.subscription_identifiers.capacity() * std::mem::size_of::<u32>()
        } else {
            0
        };
        strings.sum::<usize>() + binary.sum::<usize>() + user + ids
    }
}
