//! Every MQTT 5 property: byte-exact encoding, decoding back, the allowed-packet table,
//! duplicates and value ranges.

use bytes::{Bytes, BytesMut};
use smallvec::smallvec;

use super::{dec, enc, V5};
use crate::codec::property_codec::{decode_properties, properties_len, put_properties, PropCtx};
use crate::codec::wire::Reader;
use crate::codec::{ByteStr, DecodeError, Packet, Properties, PropertyId, PropertyValues, Publish};

const ALL_CTX: [PropCtx; 11] = [
    PropCtx::CONNECT,
    PropCtx::CONNACK,
    PropCtx::PUBLISH,
    PropCtx::ACK,
    PropCtx::SUBSCRIBE,
    PropCtx::SUBACK,
    PropCtx::UNSUBSCRIBE,
    PropCtx::UNSUBACK,
    PropCtx::DISCONNECT,
    PropCtx::AUTH,
    PropCtx::WILL,
];

fn s(v: &str) -> Option<ByteStr> {
    Some(ByteStr::from(v))
}

/// (property, a Properties with only it set, its bytes after the block length)
fn table() -> Vec<(PropertyId, Properties, Vec<u8>)> {
    use PropertyId as P;
    let d = PropertyValues::default;
    vec![
        (
            P::PayloadFormatIndicator,
            Properties::from(PropertyValues {
                payload_format_indicator: Some(1),
                ..d()
            }),
            vec![0x01, 1],
        ),
        (
            P::MessageExpiryInterval,
            Properties::from(PropertyValues {
                message_expiry_interval: Some(0x0102_0304),
                ..d()
            }),
            vec![0x02, 1, 2, 3, 4],
        ),
        (
            P::ContentType,
            Properties::from(PropertyValues {
                content_type: s("json"),
                ..d()
            }),
            b"\x03\x00\x04json".to_vec(),
        ),
        (
            P::ResponseTopic,
            Properties::from(PropertyValues {
                response_topic: s("r/t"),
                ..d()
            }),
            b"\x08\x00\x03r/t".to_vec(),
        ),
        (
            P::CorrelationData,
            Properties::from(PropertyValues {
                correlation_data: Some(Bytes::from_static(b"\x00\xff")),
                ..d()
            }),
            b"\x09\x00\x02\x00\xff".to_vec(),
        ),
        (
            P::SubscriptionIdentifier,
            Properties::from(PropertyValues {
                subscription_identifiers: smallvec![268_435_455],
                ..d()
            }),
            vec![0x0B, 0xff, 0xff, 0xff, 0x7f],
        ),
        (
            P::SessionExpiryInterval,
            Properties::from(PropertyValues {
                session_expiry_interval: Some(u32::MAX),
                ..d()
            }),
            vec![0x11, 0xff, 0xff, 0xff, 0xff],
        ),
        (
            P::AssignedClientIdentifier,
            Properties::from(PropertyValues {
                assigned_client_identifier: s("auto-1"),
                ..d()
            }),
            b"\x12\x00\x06auto-1".to_vec(),
        ),
        (
            P::ServerKeepAlive,
            Properties::from(PropertyValues {
                server_keep_alive: Some(30),
                ..d()
            }),
            vec![0x13, 0, 30],
        ),
        (
            P::AuthenticationMethod,
            Properties::from(PropertyValues {
                authentication_method: s("m"),
                ..d()
            }),
            b"\x15\x00\x01m".to_vec(),
        ),
        (
            P::AuthenticationData,
            Properties::from(PropertyValues {
                authentication_data: Some(Bytes::from_static(b"d")),
                ..d()
            }),
            b"\x16\x00\x01d".to_vec(),
        ),
        (
            P::RequestProblemInformation,
            Properties::from(PropertyValues {
                request_problem_information: Some(0),
                ..d()
            }),
            vec![0x17, 0],
        ),
        (
            P::WillDelayInterval,
            Properties::from(PropertyValues {
                will_delay_interval: Some(9),
                ..d()
            }),
            vec![0x18, 0, 0, 0, 9],
        ),
        (
            P::RequestResponseInformation,
            Properties::from(PropertyValues {
                request_response_information: Some(1),
                ..d()
            }),
            vec![0x19, 1],
        ),
        (
            P::ResponseInformation,
            Properties::from(PropertyValues {
                response_information: s("ri"),
                ..d()
            }),
            b"\x1a\x00\x02ri".to_vec(),
        ),
        (
            P::ServerReference,
            Properties::from(PropertyValues {
                server_reference: s("h:1"),
                ..d()
            }),
            b"\x1c\x00\x03h:1".to_vec(),
        ),
        (
            P::ReasonString,
            Properties::from(PropertyValues {
                reason_string: s("why"),
                ..d()
            }),
            b"\x1f\x00\x03why".to_vec(),
        ),
        (
            P::ReceiveMaximum,
            Properties::from(PropertyValues {
                receive_maximum: Some(20),
                ..d()
            }),
            vec![0x21, 0, 20],
        ),
        (
            P::TopicAliasMaximum,
            Properties::from(PropertyValues {
                topic_alias_maximum: Some(0),
                ..d()
            }),
            vec![0x22, 0, 0],
        ),
        (
            P::TopicAlias,
            Properties::from(PropertyValues {
                topic_alias: Some(1),
                ..d()
            }),
            vec![0x23, 0, 1],
        ),
        (
            P::MaximumQoS,
            Properties::from(PropertyValues {
                maximum_qos: Some(1),
                ..d()
            }),
            vec![0x24, 1],
        ),
        (
            P::RetainAvailable,
            Properties::from(PropertyValues {
                retain_available: Some(0),
                ..d()
            }),
            vec![0x25, 0],
        ),
        (
            P::UserProperty,
            Properties::from(PropertyValues {
                user_properties: vec![(ByteStr::from("k"), ByteStr::from("v"))],
                ..d()
            }),
            b"\x26\x00\x01k\x00\x01v".to_vec(),
        ),
        (
            P::MaximumPacketSize,
            Properties::from(PropertyValues {
                maximum_packet_size: Some(1024),
                ..d()
            }),
            vec![0x27, 0, 0, 4, 0],
        ),
        (
            P::WildcardSubscriptionAvailable,
            Properties::from(PropertyValues {
                wildcard_subscription_available: Some(0),
                ..d()
            }),
            vec![0x28, 0],
        ),
        (
            P::SubscriptionIdentifierAvailable,
            Properties::from(PropertyValues {
                subscription_identifier_available: Some(1),
                ..d()
            }),
            vec![0x29, 1],
        ),
        (
            P::SharedSubscriptionAvailable,
            Properties::from(PropertyValues {
                shared_subscription_available: Some(0),
                ..d()
            }),
            vec![0x2A, 0],
        ),
    ]
}

fn block(body: &[u8]) -> Bytes {
    let mut b = vec![u8::try_from(body.len()).unwrap()];
    b.extend_from_slice(body);
    Bytes::from(b)
}

fn decode_block(bytes: &Bytes, ctx: PropCtx) -> Result<Properties, DecodeError> {
    let mut r = Reader::new(bytes, 0);
    let p = decode_properties(&mut r, ctx)?;
    assert!(r.is_empty());
    Ok(p)
}

#[test]
fn every_property_encodes_byte_exact_and_decodes_where_allowed() {
    let table = table();
    assert_eq!(table.len(), 27, "one row per property identifier");
    for (id, props, body) in table {
        assert_eq!(PropertyId::from_u8(body[0]), Some(id));
        assert!(!props.is_empty(), "{id:?}");
        let len = properties_len(&props).unwrap();
        assert_eq!(len, body.len(), "{id:?}");
        let mut out = BytesMut::new();
        put_properties(&mut out, &props, len);
        let expected = block(&body);
        assert_eq!(&out[..], &expected[..], "{id:?}");
        let mut allowed = 0;
        for ctx in ALL_CTX {
            let got = decode_block(&expected, ctx);
            if ctx.allows(id) {
                allowed += 1;
                assert_eq!(got.unwrap(), props, "{id:?} in {ctx:?}");
            } else {
                // MQTT 5 2.2.2.2: an identifier not valid for the packet type is malformed.
                assert!(
                    matches!(got, Err(DecodeError::Malformed(_))),
                    "{id:?} in {ctx:?}"
                );
            }
        }
        assert!(allowed > 0, "{id:?}");
    }
}

#[test]
fn allowed_table_spot_checks() {
    use PropertyId as P;
    assert!(PropCtx::WILL.allows(P::WillDelayInterval));
    assert!(!PropCtx::PUBLISH.allows(P::WillDelayInterval));
    assert!(PropCtx::CONNACK.allows(P::AssignedClientIdentifier));
    assert!(!PropCtx::CONNECT.allows(P::AssignedClientIdentifier));
    assert!(PropCtx::DISCONNECT.allows(P::ServerReference));
    assert!(!PropCtx::UNSUBSCRIBE.allows(P::ReasonString));
    for ctx in ALL_CTX {
        assert!(ctx.allows(P::UserProperty));
    }
}

#[test]
fn duplicate_single_valued_property_is_a_protocol_error() {
    for (id, _, body) in table() {
        if matches!(
            id,
            PropertyId::UserProperty | PropertyId::SubscriptionIdentifier
        ) {
            continue;
        }
        let ctx = ALL_CTX.into_iter().find(|c| c.allows(id)).unwrap();
        let twice = [body.clone(), body].concat();
        assert!(
            matches!(
                decode_block(&block(&twice), ctx),
                Err(DecodeError::Protocol(_))
            ),
            "{id:?}"
        );
    }
}

#[test]
fn user_properties_repeat_and_keep_order() {
    let body = b"\x26\x00\x01a\x00\x011\x26\x00\x01a\x00\x012\x26\x00\x01b\x00\x00";
    let p = decode_block(&block(body), PropCtx::PUBLISH).unwrap();
    let kv: Vec<(&str, &str)> = p
        .user_properties
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(kv, [("a", "1"), ("a", "2"), ("b", "")]);
}

#[test]
fn several_subscription_identifiers_only_on_publish() {
    let body = [0x0B, 1, 0x0B, 0x80, 0x01];
    let p = decode_block(&block(&body), PropCtx::PUBLISH).unwrap();
    assert_eq!(p.subscription_identifiers.as_slice(), &[1, 128]);
    assert!(matches!(
        decode_block(&block(&body), PropCtx::SUBSCRIBE),
        Err(DecodeError::Protocol(_))
    ));
}

#[test]
fn subscription_identifier_0_is_a_protocol_error() {
    assert!(matches!(
        decode_block(&block(&[0x0B, 0]), PropCtx::SUBSCRIBE),
        Err(DecodeError::Protocol(_))
    ));
}

#[test]
fn out_of_range_values_are_protocol_errors() {
    let cases: [(&[u8], PropCtx); 9] = [
        (&[0x01, 2], PropCtx::PUBLISH),
        (&[0x17, 2], PropCtx::CONNECT),
        (&[0x19, 2], PropCtx::CONNECT),
        (&[0x21, 0, 0], PropCtx::CONNECT),
        (&[0x24, 2], PropCtx::CONNACK),
        (&[0x25, 2], PropCtx::CONNACK),
        (&[0x27, 0, 0, 0, 0], PropCtx::CONNACK),
        (&[0x28, 2], PropCtx::CONNACK),
        (b"\x08\x00\x03a/#", PropCtx::PUBLISH),
    ];
    for (body, ctx) in cases {
        assert!(
            matches!(
                decode_block(&block(body), ctx),
                Err(DecodeError::Protocol(_))
            ),
            "{body:02x?}"
        );
    }
}

#[test]
fn unknown_property_and_truncated_values_are_malformed() {
    for body in [
        &[0x04, 0][..],
        &[0x02, 0, 0],
        &[0x26, 0, 1, b'k'],
        &[0x0B, 0x80],
    ] {
        assert!(
            matches!(
                decode_block(&block(body), PropCtx::PUBLISH),
                Err(DecodeError::Malformed(_))
            ),
            "{body:02x?}"
        );
    }
    // Property length longer than the packet.
    let bytes = Bytes::from_static(&[5, 0x01, 0]);
    assert!(matches!(
        decode_block(&bytes, PropCtx::PUBLISH),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn properties_are_dropped_when_encoding_for_v3() {
    let p = Packet::Publish(Publish {
        topic: ByteStr::from("t"),
        properties: Properties::from(PropertyValues {
            message_expiry_interval: Some(5),
            ..PropertyValues::default()
        }),
        ..Publish::default()
    });
    assert_eq!(enc(&p, super::V311), b"\x30\x03\x00\x01t");
    let v5 = enc(&p, V5);
    assert_eq!(v5, b"\x30\x09\x00\x01t\x05\x02\x00\x00\x00\x05");
    assert_eq!(dec(&v5, V5).unwrap(), p);
}

#[test]
fn is_empty_matches_default_comparison() {
    for (_, props, _) in table() {
        assert_eq!(props.is_empty(), props == Properties::default());
    }
    assert!(Properties::default().is_empty());
}

#[test]
fn absent_properties_are_one_pointer_and_keep_packets_small() {
    assert_eq!(
        std::mem::size_of::<Properties>(),
        std::mem::size_of::<usize>()
    );
    // Decode -> routing moves a `Packet` by value several times: keep it small.
    assert!(
        std::mem::size_of::<Packet>() <= 128,
        "{}",
        std::mem::size_of::<Packet>()
    );
    assert!(
        std::mem::size_of::<Publish>() <= 96,
        "{}",
        std::mem::size_of::<Publish>()
    );
}

#[test]
fn absent_and_empty_properties_are_equal_and_clearing_never_allocates() {
    let mut boxed = Properties::from(PropertyValues {
        topic_alias: Some(3),
        ..PropertyValues::default()
    });
    assert_ne!(boxed, Properties::default());
    assert_eq!(boxed.take_topic_alias(), Some(3));
    assert!(boxed.is_empty());
    assert_eq!(boxed, Properties::default());
    let mut absent = Properties::default();
    absent.clear_connection_scoped();
    assert_eq!(absent.take_topic_alias(), None);
    assert!(absent.values_mut().is_none(), "clearing allocated");
    assert_eq!(absent.heap_bytes(), 0);
    assert!(absent.compact().values_mut().is_none());
    assert!(Properties::from(PropertyValues::default())
        .values_mut()
        .is_none());
}
