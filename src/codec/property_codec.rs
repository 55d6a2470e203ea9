//! Wire format of MQTT 5 properties: decoding with the per-packet "allowed" table of
//! MQTT 5 section 2.2.2.2, duplicate detection and value range checks, and encoding in
//! the field order of [`Properties`]. Never used for 3.1 / 3.1.1 frames.
//!
//! Error classes follow the spec: an identifier unknown or not valid for the packet type
//! is a *malformed packet* (2.2.2.2); a repeated single-valued property or a value out of
//! range is a *protocol error*.

use bytes::{BufMut, BytesMut};

use super::bytestr::ByteStr;
use super::error::{DecodeError, EncodeError};
use super::properties::{Properties, PropertyId};
use super::wire::{self, Reader, VARINT_MAX};

/// Which packet a property block belongs to (a bit mask, see [`allowed_in`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PropCtx(u16);

impl PropCtx {
    pub const CONNECT: Self = Self(1 << 0);
    pub const CONNACK: Self = Self(1 << 1);
    pub const PUBLISH: Self = Self(1 << 2);
    /// PUBACK, PUBREC, PUBREL and PUBCOMP.
    pub const ACK: Self = Self(1 << 3);
    pub const SUBSCRIBE: Self = Self(1 << 4);
    pub const SUBACK: Self = Self(1 << 5);
    pub const UNSUBSCRIBE: Self = Self(1 << 6);
    pub const UNSUBACK: Self = Self(1 << 7);
    pub const DISCONNECT: Self = Self(1 << 8);
    pub const AUTH: Self = Self(1 << 9);
    /// The will properties inside CONNECT.
    pub const WILL: Self = Self(1 << 10);

    /// Whether property `id` may appear on this packet (MQTT 5, 2.2.2.2).
    pub const fn allows(self, id: PropertyId) -> bool {
        allowed_in(id) & self.0 != 0
    }
}

/// The packet types a property may appear on (MQTT 5, 2.2.2.2).
const fn allowed_in(id: PropertyId) -> u16 {
    use PropertyId as P;
    const CONNECT: u16 = PropCtx::CONNECT.0;
    const CONNACK: u16 = PropCtx::CONNACK.0;
    const PUBLISH: u16 = PropCtx::PUBLISH.0;
    const ACK: u16 = PropCtx::ACK.0;
    const SUBSCRIBE: u16 = PropCtx::SUBSCRIBE.0;
    const SUBACK: u16 = PropCtx::SUBACK.0;
    const UNSUBACK: u16 = PropCtx::UNSUBACK.0;
    const DISCONNECT: u16 = PropCtx::DISCONNECT.0;
    const AUTH: u16 = PropCtx::AUTH.0;
    const WILL: u16 = PropCtx::WILL.0;
    match id {
        P::PayloadFormatIndicator
        | P::MessageExpiryInterval
        | P::ContentType
        | P::ResponseTopic
        | P::CorrelationData => PUBLISH | WILL,
        P::SubscriptionIdentifier => PUBLISH | SUBSCRIBE,
        P::SessionExpiryInterval => CONNECT | CONNACK | DISCONNECT,
        P::AssignedClientIdentifier
        | P::ServerKeepAlive
        | P::ResponseInformation
        | P::MaximumQoS
        | P::RetainAvailable
        | P::WildcardSubscriptionAvailable
        | P::SubscriptionIdentifierAvailable
        | P::SharedSubscriptionAvailable => CONNACK,
        P::AuthenticationMethod | P::AuthenticationData => CONNECT | CONNACK | AUTH,
        P::RequestProblemInformation | P::RequestResponseInformation => CONNECT,
        P::WillDelayInterval => WILL,
        P::ServerReference => CONNACK | DISCONNECT,
        P::ReasonString => CONNACK | ACK | SUBACK | UNSUBACK | DISCONNECT | AUTH,
        P::ReceiveMaximum | P::TopicAliasMaximum | P::MaximumPacketSize => CONNECT | CONNACK,
        P::TopicAlias => PUBLISH,
        P::UserProperty => u16::MAX,
    }
}

type Result<T> = std::result::Result<T, DecodeError>;

const DUPLICATE: DecodeError = DecodeError::Protocol("duplicate property");

fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<()> {
    if slot.is_some() {
        return Err(DUPLICATE);
    }
    *slot = Some(value);
    Ok(())
}

/// A byte property that may only be 0 or 1.
fn flag(r: &mut Reader<'_>) -> Result<u8> {
    match r.u8("property value")? {
        v @ (0 | 1) => Ok(v),
        _ => Err(DecodeError::Protocol("property value must be 0 or 1")),
    }
}

/// Decodes a property block (length prefix included) that belongs to packet `ctx`.
pub fn decode_properties(r: &mut Reader<'_>, ctx: PropCtx) -> Result<Properties> {
    let len = r.varint("property length")? as usize;
    let mut p = Properties::default();
    if len == 0 {
        return Ok(p);
    }
    let mut r = r.sub(len, "property length exceeds packet")?;
    while !r.is_empty() {
        let raw = r.varint("property identifier")?;
        let id = u8::try_from(raw)
            .ok()
            .and_then(PropertyId::from_u8)
            .ok_or(DecodeError::Malformed("unknown property identifier"))?;
        if !ctx.allows(id) {
            // MQTT 5, 2.2.2.2: not valid for this packet type -> malformed.
            return Err(DecodeError::Malformed(
                "property not allowed on this packet",
            ));
        }
        let r = &mut r;
        match id {
            PropertyId::PayloadFormatIndicator => {
                set_once(&mut p.payload_format_indicator, flag(r)?)?;
            }
            PropertyId::MessageExpiryInterval => {
                set_once(&mut p.message_expiry_interval, r.u32("property value")?)?;
            }
            PropertyId::ContentType => set_once(&mut p.content_type, r.string("content type")?)?,
            PropertyId::ResponseTopic => {
                let t = r.string("response topic")?;
                // [MQTT-3.3.2-14] the Response Topic MUST NOT contain wildcards (nor, as
                // any topic name here, more than `wire::MAX_TOPIC_LEVELS` levels).
                if !wire::is_valid_topic_name(t.as_bytes()) {
                    return Err(DecodeError::Protocol("invalid response topic"));
                }
                set_once(&mut p.response_topic, t)?;
            }
            PropertyId::CorrelationData => {
                set_once(&mut p.correlation_data, r.binary("correlation data")?)?;
            }
            PropertyId::SubscriptionIdentifier => {
                let v = r.varint("subscription identifier")?;
                if v == 0 {
                    return Err(DecodeError::Protocol("subscription identifier 0"));
                }
                // Several only on PUBLISH (one per matching subscription).
                if ctx != PropCtx::PUBLISH && !p.subscription_identifiers.is_empty() {
                    return Err(DUPLICATE);
                }
                p.subscription_identifiers.push(v);
            }
            PropertyId::SessionExpiryInterval => {
                set_once(&mut p.session_expiry_interval, r.u32("property value")?)?;
            }
            PropertyId::AssignedClientIdentifier => set_once(
                &mut p.assigned_client_identifier,
                r.string("assigned client identifier")?,
            )?,
            PropertyId::ServerKeepAlive => {
                set_once(&mut p.server_keep_alive, r.u16("property value")?)?;
            }
            PropertyId::AuthenticationMethod => set_once(
                &mut p.authentication_method,
                r.string("authentication method")?,
            )?,
            PropertyId::AuthenticationData => {
                set_once(&mut p.authentication_data, r.binary("authentication data")?)?
            }
            PropertyId::RequestProblemInformation => {
                set_once(&mut p.request_problem_information, flag(r)?)?;
            }
            PropertyId::WillDelayInterval => {
                set_once(&mut p.will_delay_interval, r.u32("property value")?)?;
            }
            PropertyId::RequestResponseInformation => {
                set_once(&mut p.request_response_information, flag(r)?)?;
            }
            PropertyId::ResponseInformation => set_once(
                &mut p.response_information,
                r.string("response information")?,
            )?,
            PropertyId::ServerReference => {
                set_once(&mut p.server_reference, r.string("server reference")?)?;
            }
            PropertyId::ReasonString => {
                set_once(&mut p.reason_string, r.string("reason string")?)?;
            }
            PropertyId::ReceiveMaximum => {
                let v = r.u16("property value")?;
                if v == 0 {
                    return Err(DecodeError::Protocol("receive maximum 0"));
                }
                set_once(&mut p.receive_maximum, v)?;
            }
            PropertyId::TopicAliasMaximum => {
                set_once(&mut p.topic_alias_maximum, r.u16("property value")?)?;
            }
            // 0 and values above the negotiated maximum are checked by the session, which
            // answers with "Topic Alias invalid" (0x94) [MQTT-3.3.2-8].
            PropertyId::TopicAlias => set_once(&mut p.topic_alias, r.u16("property value")?)?,
            PropertyId::MaximumQoS => set_once(&mut p.maximum_qos, flag(r)?)?,
            PropertyId::RetainAvailable => set_once(&mut p.retain_available, flag(r)?)?,
            PropertyId::UserProperty => p.user_properties.push(r.string_pair("user property")?),
            PropertyId::MaximumPacketSize => {
                let v = r.u32("property value")?;
                if v == 0 {
                    return Err(DecodeError::Protocol("maximum packet size 0"));
                }
                set_once(&mut p.maximum_packet_size, v)?;
            }
            PropertyId::WildcardSubscriptionAvailable => {
                set_once(&mut p.wildcard_subscription_available, flag(r)?)?;
            }
            PropertyId::SubscriptionIdentifierAvailable => {
                set_once(&mut p.subscription_identifier_available, flag(r)?)?;
            }
            PropertyId::SharedSubscriptionAvailable => {
                set_once(&mut p.shared_subscription_available, flag(r)?)?;
            }
        }
    }
    Ok(p)
}

type EResult<T> = std::result::Result<T, EncodeError>;

fn str_len(s: Option<&ByteStr>) -> EResult<usize> {
    s.map_or(Ok(0), |s| Ok(1 + wire::field_len(s.len())?))
}

fn bin_len(b: Option<&bytes::Bytes>) -> EResult<usize> {
    b.map_or(Ok(0), |b| Ok(1 + wire::field_len(b.len())?))
}

const fn opt_len<T>(v: Option<&T>, size: usize) -> usize {
    if v.is_some() {
        1 + size
    } else {
        0
    }
}

/// Length of the property block body (without its own length prefix). Fails on a string
/// longer than 65535 bytes or a subscription identifier that does not fit 4 bytes.
pub fn properties_len(p: &Properties) -> EResult<usize> {
    if p.is_empty() {
        return Ok(0);
    }
    let mut n = 0;
    n += opt_len(p.payload_format_indicator.as_ref(), 1);
    n += opt_len(p.message_expiry_interval.as_ref(), 4);
    n += str_len(p.content_type.as_ref())?;
    n += str_len(p.response_topic.as_ref())?;
    n += bin_len(p.correlation_data.as_ref())?;
    for &id in &p.subscription_identifiers {
        if id > VARINT_MAX {
            return Err(EncodeError::Invalid(
                "subscription identifier above 268435455",
            ));
        }
        n += 1 + wire::varint_len(id as usize);
    }
    n += opt_len(p.session_expiry_interval.as_ref(), 4);
    n += str_len(p.assigned_client_identifier.as_ref())?;
    n += opt_len(p.server_keep_alive.as_ref(), 2);
    n += str_len(p.authentication_method.as_ref())?;
    n += bin_len(p.authentication_data.as_ref())?;
    n += opt_len(p.request_problem_information.as_ref(), 1);
    n += opt_len(p.will_delay_interval.as_ref(), 4);
    n += opt_len(p.request_response_information.as_ref(), 1);
    n += str_len(p.response_information.as_ref())?;
    n += str_len(p.server_reference.as_ref())?;
    n += str_len(p.reason_string.as_ref())?;
    n += opt_len(p.receive_maximum.as_ref(), 2);
    n += opt_len(p.topic_alias_maximum.as_ref(), 2);
    n += opt_len(p.topic_alias.as_ref(), 2);
    n += opt_len(p.maximum_qos.as_ref(), 1);
    n += opt_len(p.retain_available.as_ref(), 1);
    for (k, v) in &p.user_properties {
        n += 1 + wire::field_len(k.len())? + wire::field_len(v.len())?;
    }
    n += opt_len(p.maximum_packet_size.as_ref(), 4);
    n += opt_len(p.wildcard_subscription_available.as_ref(), 1);
    n += opt_len(p.subscription_identifier_available.as_ref(), 1);
    n += opt_len(p.shared_subscription_available.as_ref(), 1);
    Ok(n)
}

/// Size of the whole block: length prefix plus `body_len`.
#[inline]
pub const fn block_len(body_len: usize) -> usize {
    wire::varint_len(body_len) + body_len
}

fn s(v: &Option<ByteStr>) -> Option<&[u8]> {
    v.as_ref().map(|s| s.as_bytes().as_ref())
}

fn put_u8(out: &mut BytesMut, id: PropertyId, v: Option<u8>) {
    if let Some(v) = v {
        out.put_u8(id as u8);
        out.put_u8(v);
    }
}

fn put_u16(out: &mut BytesMut, id: PropertyId, v: Option<u16>) {
    if let Some(v) = v {
        out.put_u8(id as u8);
        out.put_u16(v);
    }
}

fn put_u32(out: &mut BytesMut, id: PropertyId, v: Option<u32>) {
    if let Some(v) = v {
        out.put_u8(id as u8);
        out.put_u32(v);
    }
}

fn put_bytes(out: &mut BytesMut, id: PropertyId, v: Option<&[u8]>) {
    if let Some(v) = v {
        out.put_u8(id as u8);
        wire::put_field(out, v);
    }
}

/// Writes the block (length prefix + body). `body_len` comes from [`properties_len`],
/// which has already checked every field length.
pub fn put_properties(out: &mut BytesMut, p: &Properties, body_len: usize) {
    use PropertyId as P;
    wire::put_varint(out, body_len);
    if body_len == 0 {
        return;
    }
    put_u8(out, P::PayloadFormatIndicator, p.payload_format_indicator);
    put_u32(out, P::MessageExpiryInterval, p.message_expiry_interval);
    put_bytes(out, P::ContentType, s(&p.content_type));
    put_bytes(out, P::ResponseTopic, s(&p.response_topic));
    put_bytes(out, P::CorrelationData, p.correlation_data.as_deref());
    for &id in &p.subscription_identifiers {
        out.put_u8(P::SubscriptionIdentifier as u8);
        wire::put_varint(out, id as usize);
    }
    put_u32(out, P::SessionExpiryInterval, p.session_expiry_interval);
    put_bytes(
        out,
        P::AssignedClientIdentifier,
        s(&p.assigned_client_identifier),
    );
    put_u16(out, P::ServerKeepAlive, p.server_keep_alive);
    put_bytes(out, P::AuthenticationMethod, s(&p.authentication_method));
    put_bytes(out, P::AuthenticationData, p.authentication_data.as_deref());
    put_u8(
        out,
        P::RequestProblemInformation,
        p.request_problem_information,
    );
    put_u32(out, P::WillDelayInterval, p.will_delay_interval);
    put_u8(
        out,
        P::RequestResponseInformation,
        p.request_response_information,
    );
    put_bytes(out, P::ResponseInformation, s(&p.response_information));
    put_bytes(out, P::ServerReference, s(&p.server_reference));
    put_bytes(out, P::ReasonString, s(&p.reason_string));
    put_u16(out, P::ReceiveMaximum, p.receive_maximum);
    put_u16(out, P::TopicAliasMaximum, p.topic_alias_maximum);
    put_u16(out, P::TopicAlias, p.topic_alias);
    put_u8(out, P::MaximumQoS, p.maximum_qos);
    put_u8(out, P::RetainAvailable, p.retain_available);
    for (k, v) in &p.user_properties {
        out.put_u8(P::UserProperty as u8);
        wire::put_field(out, k.as_bytes());
        wire::put_field(out, v.as_bytes());
    }
    put_u32(out, P::MaximumPacketSize, p.maximum_packet_size);
    put_u8(
        out,
        P::WildcardSubscriptionAvailable,
        p.wildcard_subscription_available,
    );
    put_u8(
        out,
        P::SubscriptionIdentifierAvailable,
        p.subscription_identifier_available,
    );
    put_u8(
        out,
        P::SharedSubscriptionAvailable,
        p.shared_subscription_available,
    );
}
