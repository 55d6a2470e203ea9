//! proptest: decode(encode(p)) == p for every packet type and all three versions (only
//! packets valid for that version are generated), every prefix of an encoded packet is a
//! partial frame, and random or mutated bytes never panic the decoder.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use smallvec::SmallVec;

use super::{assert_prefixes_partial, dec, enc, V31, V311, V5};
use crate::codec::property_codec::PropCtx;
use crate::codec::{
    decode, encode_publish_header, Ack, AckKind, Auth, ByteStr, ConnAck, Connect, Disconnect,
    Packet, Properties, PropertyId, PropertyValues, ProtocolVersion, Publish, QoS, ReasonCode,
    SubAck, Subscribe, SubscriptionOptions, Unsubscribe, Will,
};

fn byte_str() -> impl Strategy<Value = ByteStr> {
    "[a-zA-Z0-9 é€😀/_-]{0,12}".prop_map(ByteStr::from)
}

fn topic_name() -> impl Strategy<Value = ByteStr> {
    "[a-z0-9$é]{1,6}(/[a-z0-9é]{0,5}){0,3}".prop_map(ByteStr::from)
}

fn topic_filter() -> impl Strategy<Value = ByteStr> {
    (
        vec(prop_oneof!["[a-z0-9]{0,4}", Just("+".to_owned())], 1..4),
        any::<bool>(),
    )
        .prop_map(|(levels, hash)| {
            let mut f = levels.join("/");
            if hash {
                f.push_str("/#");
            }
            if f.is_empty() {
                f.push('#');
            }
            ByteStr::from(f)
        })
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn packet_id() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

fn flag() -> impl Strategy<Value = Option<u8>> {
    option::of(0..=1u8)
}

/// Any combination of properties with values in range, then cut down to what `ctx`
/// allows (subscription identifiers: several on PUBLISH, one on SUBSCRIBE).
fn properties(ctx: PropCtx) -> impl Strategy<Value = Properties> {
    let a = (
        flag(),
        option::of(any::<u32>()),
        option::of(byte_str()),
        option::of(topic_name()),
        option::of(binary()),
        vec(1..=268_435_455u32, 0..3),
        option::of(any::<u32>()),
        option::of(byte_str()),
        option::of(any::<u16>()),
        option::of(byte_str()),
        option::of(binary()),
        flag(),
    );
    let b = (
        option::of(any::<u32>()),
        flag(),
        option::of(byte_str()),
        option::of(byte_str()),
        option::of(byte_str()),
        option::of(1..=u16::MAX),
        option::of(any::<u16>()),
        option::of(1..=u16::MAX),
        flag(),
        flag(),
        vec((byte_str(), byte_str()), 0..3),
        option::of(1..=u32::MAX),
    );
    let c = (flag(), flag(), flag());
    (a, b, c).prop_map(move |(a, b, c)| {
        let mut p = Properties::from(PropertyValues {
            payload_format_indicator: a.0,
            message_expiry_interval: a.1,
            content_type: a.2,
            response_topic: a.3,
            correlation_data: a.4,
            subscription_identifiers: SmallVec::from_vec(a.5),
            session_expiry_interval: a.6,
            assigned_client_identifier: a.7,
            server_keep_alive: a.8,
            authentication_method: a.9,
            authentication_data: a.10,
            request_problem_information: a.11,
            will_delay_interval: b.0,
            request_response_information: b.1,
            response_information: b.2,
            server_reference: b.3,
            reason_string: b.4,
            receive_maximum: b.5,
            topic_alias_maximum: b.6,
            topic_alias: b.7,
            maximum_qos: b.8,
            retain_available: b.9,
            user_properties: b.10,
            maximum_packet_size: b.11,
            wildcard_subscription_available: c.0,
            subscription_identifier_available: c.1,
            shared_subscription_available: c.2,
        });
        mask(&mut p, ctx);
        p
    })
}

fn keep<T>(slot: &mut Option<T>, ctx: PropCtx, id: PropertyId) {
    if !ctx.allows(id) {
        *slot = None;
    }
}

fn mask(p: &mut Properties, ctx: PropCtx) {
    use PropertyId as P;
    keep(
        &mut p.payload_format_indicator,
        ctx,
        P::PayloadFormatIndicator,
    );
    keep(
        &mut p.message_expiry_interval,
        ctx,
        P::MessageExpiryInterval,
    );
    keep(&mut p.content_type, ctx, P::ContentType);
    keep(&mut p.response_topic, ctx, P::ResponseTopic);
    keep(&mut p.correlation_data, ctx, P::CorrelationData);
    if !ctx.allows(P::SubscriptionIdentifier) {
        p.subscription_identifiers.clear();
    } else if ctx == PropCtx::SUBSCRIBE {
        p.subscription_identifiers.truncate(1);
    }
    keep(
        &mut p.session_expiry_interval,
        ctx,
        P::SessionExpiryInterval,
    );
    keep(
        &mut p.assigned_client_identifier,
        ctx,
        P::AssignedClientIdentifier,
    );
    keep(&mut p.server_keep_alive, ctx, P::ServerKeepAlive);
    keep(&mut p.authentication_method, ctx, P::AuthenticationMethod);
    keep(&mut p.authentication_data, ctx, P::AuthenticationData);
    keep(
        &mut p.request_problem_information,
        ctx,
        P::RequestProblemInformation,
    );
    keep(&mut p.will_delay_interval, ctx, P::WillDelayInterval);
    keep(
        &mut p.request_response_information,
        ctx,
        P::RequestResponseInformation,
    );
    keep(&mut p.response_information, ctx, P::ResponseInformation);
    keep(&mut p.server_reference, ctx, P::ServerReference);
    keep(&mut p.reason_string, ctx, P::ReasonString);
    keep(&mut p.receive_maximum, ctx, P::ReceiveMaximum);
    keep(&mut p.topic_alias_maximum, ctx, P::TopicAliasMaximum);
    keep(&mut p.topic_alias, ctx, P::TopicAlias);
    keep(&mut p.maximum_qos, ctx, P::MaximumQoS);
    keep(&mut p.retain_available, ctx, P::RetainAvailable);
    keep(&mut p.maximum_packet_size, ctx, P::MaximumPacketSize);
    keep(
        &mut p.wildcard_subscription_available,
        ctx,
        P::WildcardSubscriptionAvailable,
    );
    keep(
        &mut p.subscription_identifier_available,
        ctx,
        P::SubscriptionIdentifierAvailable,
    );
    keep(
        &mut p.shared_subscription_available,
        ctx,
        P::SharedSubscriptionAvailable,
    );
}

/// Properties for `ctx` in MQTT 5, none before.
fn props_for(v: ProtocolVersion, ctx: PropCtx) -> BoxedStrategy<Properties> {
    if v.is_v5() {
        properties(ctx).boxed()
    } else {
        Just(Properties::default()).boxed()
    }
}

fn reason(v: ProtocolVersion) -> BoxedStrategy<ReasonCode> {
    if v.is_v5() {
        any::<u8>().prop_map(ReasonCode).boxed()
    } else {
        Just(ReasonCode::SUCCESS).boxed()
    }
}

fn connect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let will = (
        topic_name(),
        binary(),
        qos(),
        any::<bool>(),
        props_for(v, PropCtx::WILL),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| Will {
            topic,
            payload,
            qos,
            retain,
            properties,
        });
    (
        any::<bool>(),
        any::<u16>(),
        byte_str(),
        option::of(will),
        option::of(byte_str()),
        option::of(binary()),
        props_for(v, PropCtx::CONNECT),
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, will, username, password, properties)| {
                // [MQTT-3.1.2-22] before MQTT 5 a password needs a user name.
                let password = if v.is_v5() || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::Connect(Box::new(Connect {
                    protocol: v,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                }))
            },
        )
}

fn publish(v: ProtocolVersion) -> impl Strategy<Value = Publish> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic_name(),
        packet_id(),
        props_for(v, PropCtx::PUBLISH),
        binary(),
        any::<bool>(),
    )
        .prop_map(
            move |(qos, dup, retain, topic, id, properties, payload, alias_only)| {
                let qos0 = qos == QoS::AtMostOnce;
                // MQTT 5: a Topic Alias may replace the topic name.
                let topic = if alias_only && properties.topic_alias.is_some() {
                    ByteStr::default()
                } else {
                    topic
                };
                Publish {
                    dup: dup && !qos0,
                    qos,
                    retain,
                    topic,
                    packet_id: (!qos0).then_some(id),
                    properties,
                    payload,
                }
            },
        )
}

fn packet(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = v.is_v5();
    let kind = prop_oneof![
        Just(AckKind::PubAck),
        Just(AckKind::PubRec),
        Just(AckKind::PubRel),
        Just(AckKind::PubComp)
    ];
    let ack = (kind, packet_id(), reason(v), props_for(v, PropCtx::ACK)).prop_map(
        |(kind, packet_id, reason, properties)| {
            Packet::Ack(Ack {
                kind,
                packet_id,
                reason,
                properties,
            })
        },
    );
    let options =
        (qos(), any::<bool>(), any::<bool>(), 0..=2u8).prop_map(move |(qos, nl, rap, rh)| {
            if v5 {
                SubscriptionOptions {
                    qos,
                    no_local: nl,
                    retain_as_published: rap,
                    retain_handling: rh,
                }
            } else {
                SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                }
            }
        });
    let subscribe = (
        packet_id(),
        vec((topic_filter(), options), 1..4),
        props_for(v, PropCtx::SUBSCRIBE),
    )
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                filters: SmallVec::from_vec(filters),
                properties,
            })
        });
    let suback = (
        packet_id(),
        vec(any::<u8>(), 1..4),
        props_for(v, PropCtx::SUBACK),
    )
        .prop_map(|(packet_id, codes, properties)| {
            Packet::SubAck(SubAck {
                packet_id,
                reasons: codes.into_iter().map(ReasonCode).collect(),
                properties,
            })
        });
    let unsubscribe = (
        packet_id(),
        vec(topic_filter(), 1..4),
        props_for(v, PropCtx::UNSUBSCRIBE),
    )
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters: SmallVec::from_vec(filters),
                properties,
            })
        });
    let unsuback = (
        packet_id(),
        vec(any::<u8>(), 1..4),
        props_for(v, PropCtx::UNSUBACK),
    )
        .prop_map(move |(packet_id, codes, properties)| {
            Packet::UnsubAck(SubAck {
                packet_id,
                // 3.1.1 UNSUBACK carries no reason codes.
                reasons: if v5 {
                    codes.into_iter().map(ReasonCode).collect()
                } else {
                    SmallVec::new()
                },
                properties,
            })
        });
    let connack = (any::<bool>(), any::<u8>(), props_for(v, PropCtx::CONNACK)).prop_map(
        |(session_present, code, properties)| {
            Packet::ConnAck(ConnAck {
                session_present,
                reason: ReasonCode(code),
                properties,
            })
        },
    );
    let disconnect = (reason(v), props_for(v, PropCtx::DISCONNECT))
        .prop_map(|(reason, properties)| Packet::Disconnect(Disconnect { reason, properties }));
    let common = prop_oneof![
        connect(v).boxed(),
        connack.boxed(),
        publish(v).prop_map(Packet::Publish).boxed(),
        ack.boxed(),
        subscribe.boxed(),
        suback.boxed(),
        unsubscribe.boxed(),
        unsuback.boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        disconnect.boxed(),
    ];
    if v5 {
        let auth = (any::<u8>(), properties(PropCtx::AUTH)).prop_map(|(code, properties)| {
            Packet::Auth(Auth {
                reason: ReasonCode(code),
                properties,
            })
        });
        prop_oneof![10 => common, 1 => auth].boxed()
    } else {
        common.boxed()
    }
}

fn round_trip(p: &Packet, v: ProtocolVersion) {
    let bytes = enc(p, v);
    assert_eq!(&dec(&bytes, v).unwrap(), p);
    assert_prefixes_partial(&bytes, v);
}

/// Decodes frames from `bytes` until it needs more input or fails; must never panic.
fn decode_all(bytes: &[u8], v: ProtocolVersion, max: u32) {
    let mut buf = BytesMut::from(bytes);
    while let Ok(Some(_)) = decode(&mut buf, v, max) {}
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn round_trip_v31(p in packet(V31)) { round_trip(&p, V31); }

    #[test]
    fn round_trip_v311(p in packet(V311)) { round_trip(&p, V311); }

    #[test]
    fn round_trip_v5(p in packet(V5)) { round_trip(&p, V5); }

    #[test]
    fn publish_header_plus_payload_is_the_frame(p in publish(V5)) {
        let mut out = BytesMut::new();
        encode_publish_header(&p, V5, &mut out).unwrap();
        out.extend_from_slice(&p.payload);
        prop_assert_eq!(out.to_vec(), enc(&Packet::Publish(p), V5));
    }

    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..256), max in prop_oneof![Just(0u32), 1..512u32]) {
        for v in [V31, V311, V5] {
            decode_all(&bytes, v, max);
        }
        let _ = crate::codec::decode_connect_version(&bytes);
    }

    #[test]
    fn mutated_frames_never_panic(p in packet(V5), edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
        // Start from a valid frame so that the mutations reach deep into the parsers.
        let mut bytes = enc(&p, V5);
        for (i, b) in edits {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        for v in [V31, V311, V5] {
            decode_all(&bytes, v, 0);
        }
    }
}
