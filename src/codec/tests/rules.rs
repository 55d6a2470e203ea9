//! One test per enforced normative statement, named after it.

use bytes::BytesMut;

use super::{dec, enc, ALL, V31, V311, V5};
use crate::codec::{
    decode, frame_len, Auth, ByteStr, DecodeError, EncodeError, Packet, Publish, QoS,
};

fn malformed(bytes: &[u8], v: crate::codec::ProtocolVersion) {
    assert!(
        matches!(dec(bytes, v), Err(DecodeError::Malformed(_))),
        "{bytes:02x?} for {v:?}: {:?}",
        dec(bytes, v)
    );
}

fn protocol(bytes: &[u8], v: crate::codec::ProtocolVersion) {
    assert!(
        matches!(dec(bytes, v), Err(DecodeError::Protocol(_))),
        "{bytes:02x?} for {v:?}: {:?}",
        dec(bytes, v)
    );
}

#[test]
fn mqtt_1_5_5_1_remaining_length_over_4_bytes_is_malformed() {
    let bytes = b"\x30\xff\xff\xff\xff\x01";
    assert_eq!(
        frame_len(bytes, 0),
        Err(DecodeError::MalformedRemainingLength)
    );
    let mut buf = BytesMut::from(&bytes[..]);
    assert_eq!(
        decode(&mut buf, V311, 0),
        Err(DecodeError::MalformedRemainingLength)
    );
}

#[test]
fn max_packet_size_is_enforced_from_the_header_alone() {
    // Header says 2 + 200 bytes; only the header has arrived.
    let header = b"\x30\xc8\x01";
    assert_eq!(
        frame_len(header, 100),
        Err(DecodeError::PacketTooLarge {
            size: 203,
            max: 100
        })
    );
    let mut buf = BytesMut::from(&header[..]);
    assert!(matches!(
        decode(&mut buf, V5, 100),
        Err(DecodeError::PacketTooLarge { .. })
    ));
    // Exactly at the limit is fine; 0 means no limit.
    assert_eq!(frame_len(b"\xc0\x00", 2), Ok(Some(2)));
    assert_eq!(
        frame_len(b"\xc0\x00", 1),
        Err(DecodeError::PacketTooLarge { size: 2, max: 1 })
    );
    assert_eq!(frame_len(header, 0), Ok(None));
}

#[test]
fn mqtt_2_2_2_2_reserved_flag_bits_are_malformed() {
    let cases: [&[u8]; 12] = [
        b"\x11\x00",                      // CONNECT
        b"\x21\x02\x00\x00",              // CONNACK
        b"\x42\x02\x00\x01",              // PUBACK
        b"\x58\x02\x00\x01",              // PUBREC
        b"\x60\x02\x00\x01",              // PUBREL with 0 instead of 2
        b"\x72\x02\x00\x01",              // PUBCOMP
        b"\x80\x06\x00\x01\x00\x01a\x00", // SUBSCRIBE with 0
        b"\x91\x03\x00\x01\x00",          // SUBACK
        b"\xa0\x05\x00\x01\x00\x01a",     // UNSUBSCRIBE with 0
        b"\xc1\x00",                      // PINGREQ
        b"\xd4\x00",                      // PINGRESP
        b"\xe8\x00",                      // DISCONNECT
    ];
    for bytes in cases {
        for v in ALL {
            malformed(bytes, v);
        }
        // Rejected as soon as the first byte is seen.
        assert!(frame_len(&bytes[..1], 0).is_err());
    }
    malformed(b"\xf1\x00", V5);
}

#[test]
fn reserved_packet_type_0_is_malformed() {
    for v in ALL {
        malformed(b"\x00\x00", v);
    }
}

#[test]
fn mqtt_3_3_1_4_qos_3_is_malformed() {
    for v in ALL {
        malformed(b"\x36\x05\x00\x01t\x00\x01", v);
    }
}

#[test]
fn mqtt_3_3_1_2_dup_on_qos_0_is_malformed() {
    for v in ALL {
        malformed(b"\x38\x03\x00\x01t", v);
    }
}

#[test]
fn mqtt_2_3_1_1_packet_identifier_must_be_non_zero() {
    for v in ALL {
        protocol(b"\x32\x05\x00\x01t\x00\x00", v); // PUBLISH QoS 1
        protocol(b"\x40\x02\x00\x00", v); // PUBACK
        protocol(b"\x62\x02\x00\x00", v); // PUBREL
        protocol(b"\x90\x03\x00\x00\x00", v); // SUBACK (v3 return code / v5 empty props)
    }
    protocol(b"\x82\x06\x00\x00\x00\x01a\x00", V311); // SUBSCRIBE
    protocol(b"\xa2\x05\x00\x00\x00\x01a", V311); // UNSUBSCRIBE
    protocol(b"\xb0\x02\x00\x00", V311); // UNSUBACK
    protocol(b"\x50\x03\x00\x00\x10", V5); // PUBREC long form
}

#[test]
fn mqtt_3_3_2_2_wildcards_in_topic_name_are_invalid() {
    for v in [V31, V311] {
        assert_eq!(
            dec(b"\x30\x05\x00\x03a/#", v),
            Err(DecodeError::TopicNameInvalid)
        );
        assert_eq!(
            dec(b"\x30\x05\x00\x03+/a", v),
            Err(DecodeError::TopicNameInvalid)
        );
    }
    assert_eq!(
        dec(b"\x30\x06\x00\x03a/+\x00", V5),
        Err(DecodeError::TopicNameInvalid)
    );
}

#[test]
fn mqtt_4_7_3_1_empty_topic_name_is_invalid() {
    for v in [V31, V311] {
        assert_eq!(
            dec(b"\x30\x02\x00\x00", v),
            Err(DecodeError::TopicNameInvalid)
        );
    }
    // MQTT 5 without a Topic Alias.
    assert_eq!(
        dec(b"\x30\x03\x00\x00\x00", V5),
        Err(DecodeError::TopicNameInvalid)
    );
}

#[test]
fn mqtt_3_3_2_3_4_empty_topic_name_with_topic_alias_is_valid_in_v5() {
    let Packet::Publish(p) = dec(b"\x30\x07\x00\x00\x03\x23\x00\x05x", V5).unwrap() else {
        panic!()
    };
    assert!(p.topic.is_empty());
    assert_eq!(p.properties.topic_alias, Some(5));
    assert_eq!(&p.payload[..], b"x");
}

#[test]
fn mqtt_1_5_4_1_ill_formed_utf8_topic_is_malformed() {
    for v in ALL {
        malformed(b"\x30\x04\x00\x02\xc0\x80", v);
        malformed(b"\x30\x05\x00\x03\xed\xa0\x80", v);
    }
}

#[test]
fn mqtt_1_5_4_2_nul_in_string_is_malformed() {
    for v in ALL {
        malformed(b"\x30\x05\x00\x03a\x00b", v);
    }
    malformed(b"\x10\x0f\x00\x04MQTT\x04\x02\x00\x3c\x00\x03a\x00b", V311);
}

fn subscribe(filter: &[u8], options: u8) -> Vec<u8> {
    let mut b = vec![0x82, u8::try_from(filter.len() + 5).unwrap(), 0, 1];
    b.extend_from_slice(&u16::try_from(filter.len()).unwrap().to_be_bytes());
    b.extend_from_slice(filter);
    b.push(options);
    b
}

fn subscribe_v5(filter: &[u8], options: u8) -> Vec<u8> {
    let mut b = subscribe(filter, options);
    b[1] += 1;
    b.insert(4, 0); // empty property block
    b
}

#[test]
fn mqtt_4_7_1_1_multi_level_wildcard_only_last_and_alone() {
    for f in [&b"a/#/b"[..], b"a#", b"#/", b"a/b#"] {
        assert_eq!(
            dec(&subscribe(f, 0), V311),
            Err(DecodeError::TopicFilterInvalid),
            "{f:?}"
        );
    }
    assert!(dec(&subscribe(b"a/#", 0), V311).is_ok());
    assert!(dec(&subscribe(b"#", 0), V311).is_ok());
}

#[test]
fn mqtt_4_7_1_2_single_level_wildcard_alone_in_level() {
    for f in [&b"a+"[..], b"a/+b", b"++"] {
        assert_eq!(
            dec(&subscribe(f, 0), V311),
            Err(DecodeError::TopicFilterInvalid),
            "{f:?}"
        );
        assert_eq!(
            dec(&subscribe_v5(f, 0), V5),
            Err(DecodeError::TopicFilterInvalid)
        );
    }
    assert!(dec(&subscribe(b"+/a/+", 0), V311).is_ok());
}

#[test]
fn mqtt_4_7_3_1_empty_topic_filter_is_invalid() {
    assert_eq!(
        dec(&subscribe(b"", 0), V311),
        Err(DecodeError::TopicFilterInvalid)
    );
    assert_eq!(
        dec(b"\xa2\x04\x00\x01\x00\x00", V311),
        Err(DecodeError::TopicFilterInvalid)
    );
}

#[test]
fn mqtt_3_8_3_3_subscribe_without_filters_is_a_protocol_error() {
    for v in [V31, V311] {
        protocol(b"\x82\x02\x00\x01", v);
    }
    protocol(b"\x82\x03\x00\x01\x00", V5);
}

#[test]
fn mqtt_3_10_3_2_unsubscribe_without_filters_is_a_protocol_error() {
    protocol(b"\xa2\x02\x00\x01", V311);
    protocol(b"\xa2\x03\x00\x01\x00", V5);
}

#[test]
fn mqtt_3_8_3_4_subscribe_options_reserved_bits_v3() {
    for opts in [0x04, 0x08, 0x80] {
        malformed(&subscribe(b"a", opts), V311);
    }
}

#[test]
fn mqtt_3_8_3_5_subscribe_options_reserved_bits_v5() {
    for opts in [0x40, 0x80] {
        malformed(&subscribe_v5(b"a", opts), V5);
    }
    // No Local, Retain As Published and Retain Handling 2 are fine in v5.
    assert!(dec(&subscribe_v5(b"a", 0x2e), V5).is_ok());
}

#[test]
fn subscription_qos_3_is_malformed() {
    malformed(&subscribe(b"a", 3), V311);
    malformed(&subscribe_v5(b"a", 3), V5);
}

#[test]
fn retain_handling_3_is_a_protocol_error() {
    protocol(&subscribe_v5(b"a", 0x30), V5);
}

fn connect_v311(flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![
        0x10, 0, 0, 4, b'M', b'Q', b'T', b'T', 4, flags, 0, 60, 0, 1, b'c',
    ];
    b.extend_from_slice(payload);
    b[1] = u8::try_from(b.len() - 2).unwrap();
    b
}

#[test]
fn unsupported_protocol_name_or_level() {
    let cases: [(&[u8], u8); 4] = [
        (b"\x10\x0d\x00\x04MQTT\x06\x02\x00\x3c\x00\x01c", 6),
        (b"\x10\x0d\x00\x04MQTT\x03\x02\x00\x3c\x00\x01c", 3),
        (b"\x10\x0f\x00\x06MQIsdp\x04\x02\x00\x3c\x00\x01c", 4),
        (b"\x10\x0d\x00\x04MQTX\x04\x02\x00\x3c\x00\x01c", 4),
    ];
    for (bytes, level) in cases {
        assert_eq!(
            dec(bytes, V311),
            Err(DecodeError::UnsupportedProtocolVersion { level })
        );
    }
}

#[test]
fn mqtt_3_1_2_3_connect_reserved_flag_is_malformed() {
    malformed(&connect_v311(0x03, b""), V311);
}

#[test]
fn mqtt_3_1_2_11_will_qos_without_will_flag_is_malformed() {
    malformed(&connect_v311(0x0a, b""), V311);
}

#[test]
fn mqtt_3_1_2_12_will_qos_3_is_malformed() {
    malformed(&connect_v311(0x1e, b"\x00\x01w\x00\x00"), V311);
}

#[test]
fn mqtt_3_1_2_13_will_retain_without_will_flag_is_malformed() {
    malformed(&connect_v311(0x22, b""), V311);
}

#[test]
fn mqtt_3_1_2_22_password_without_user_name() {
    malformed(&connect_v311(0x42, b"\x00\x01p"), V311);
    // Allowed in MQTT 5.
    let v5 = b"\x10\x11\x00\x04MQTT\x05\x42\x00\x3c\x00\x00\x01c\x00\x01p";
    let Packet::Connect(c) = dec(v5, V5).unwrap() else {
        panic!()
    };
    assert_eq!(c.username, None);
    assert_eq!(c.password.as_deref(), Some(&b"p"[..]));
    // And the encoder refuses to write it for 3.1.1.
    let mut c = *c;
    c.protocol = V311;
    assert!(matches!(
        crate::codec::encoded_len(&Packet::Connect(Box::new(c)), V311),
        Err(EncodeError::Invalid(_))
    ));
}

#[test]
fn will_topic_with_wildcard_is_invalid() {
    assert_eq!(
        dec(&connect_v311(0x06, b"\x00\x01#\x00\x00"), V311),
        Err(DecodeError::TopicNameInvalid)
    );
}

#[test]
fn empty_client_id_is_left_to_the_session() {
    let b = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00";
    let Packet::Connect(c) = dec(b, V311).unwrap() else {
        panic!()
    };
    assert!(c.client_id.is_empty());
}

#[test]
fn connack_reserved_flags_are_malformed() {
    malformed(b"\x20\x02\x02\x00", V311);
    malformed(b"\x20\x03\x80\x00\x00", V5);
}

#[test]
fn v3_acks_are_exactly_two_bytes() {
    for v in [V31, V311] {
        malformed(b"\x40\x03\x00\x01\x00", v);
        malformed(b"\x40\x01\x00", v);
        malformed(b"\xb0\x03\x00\x01\x00", v); // UNSUBACK has no payload
        malformed(b"\xe0\x01\x00", v); // DISCONNECT has no body
    }
}

#[test]
fn trailing_bytes_inside_a_frame_are_malformed() {
    for v in ALL {
        malformed(b"\xc0\x01\x00", v);
        malformed(b"\xd0\x01\x00", v);
    }
    malformed(&connect_v311(0x02, b"x"), V311);
    malformed(b"\x20\x03\x00\x00\x00", V311);
    // v5 ack: property block shorter than the frame.
    malformed(b"\x40\x05\x00\x01\x00\x00\x00", V5);
}

#[test]
fn suback_without_reason_codes_is_a_protocol_error() {
    protocol(b"\x90\x02\x00\x01", V311);
    protocol(b"\x90\x03\x00\x01\x00", V5);
    protocol(b"\xb0\x03\x00\x01\x00", V5);
}

#[test]
fn auth_is_v5_only() {
    for v in [V31, V311] {
        malformed(b"\xf0\x00", v);
        assert_eq!(
            crate::codec::encoded_len(&Packet::Auth(Auth::default()), v),
            Err(EncodeError::NotInVersion("AUTH"))
        );
    }
}

#[test]
fn encoder_rejects_oversized_fields_and_missing_packet_id() {
    let p = Packet::Publish(Publish {
        topic: ByteStr::from("x".repeat(70_000)),
        ..Publish::default()
    });
    assert_eq!(
        crate::codec::encoded_len(&p, V311),
        Err(EncodeError::FieldTooLong(70_000))
    );
    let p = Packet::Publish(Publish {
        topic: ByteStr::from("t"),
        qos: QoS::AtLeastOnce,
        ..Publish::default()
    });
    assert!(matches!(
        crate::codec::encoded_len(&p, V5),
        Err(EncodeError::Invalid(_))
    ));
    let mut out = BytesMut::new();
    assert!(crate::codec::encode(&p, V5, &mut out).is_err());
    assert!(out.is_empty(), "an error leaves nothing behind");
}

#[test]
fn large_publish_uses_multi_byte_remaining_length() {
    for v in ALL {
        let p = Packet::Publish(Publish {
            topic: ByteStr::from("t"),
            payload: bytes::Bytes::from(vec![0xAB; 200_000]),
            ..Publish::default()
        });
        let bytes = enc(&p, v);
        // 200,003 (+1 for the v5 property length) needs a 3-byte remaining length.
        assert_eq!(bytes[0], 0x30);
        assert!(bytes[1] & 0x80 != 0 && bytes[2] & 0x80 != 0 && bytes[3] & 0x80 == 0);
        assert_eq!(bytes.len(), 4 + 200_003 + usize::from(v == V5));
        assert_eq!(dec(&bytes, v).unwrap(), p);
    }
}

/// Mosquitto's TOPIC_HIERARCHY_LIMIT: more than 200 '/' in a PUBLISH topic, a SUBSCRIBE /
/// UNSUBSCRIBE filter or a will topic is refused before anything is stored (v5 DISCONNECT
/// 0x90 / 0x8F); 201 levels still pass.
#[test]
fn topic_deeper_than_mosquitto_limit_is_refused() {
    use crate::codec::{wire::MAX_TOPIC_LEVELS, ReasonCode};
    let ok = "a/".repeat(MAX_TOPIC_LEVELS - 1) + "a";
    let deep = "/".repeat(MAX_TOPIC_LEVELS);
    let string = |s: &str| {
        let mut v = (s.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v
    };
    let frame = |first: u8, body: Vec<u8>| {
        let mut out = vec![first];
        let mut n = body.len();
        loop {
            let b = (n % 128) as u8;
            n /= 128;
            out.push(if n > 0 { b | 0x80 } else { b });
            if n == 0 {
                break;
            }
        }
        out.extend(body);
        out
    };
    for v in ALL {
        let publish = |t: &str| {
            let mut body = string(t);
            if v == V5 {
                body.push(0);
            }
            body.extend_from_slice(b"payload");
            frame(0x30, body)
        };
        let subscribe = |first: u8, t: &str, opts: bool| {
            let mut body = vec![0, 1];
            if v == V5 {
                body.push(0);
            }
            body.extend(string(t));
            if opts {
                body.push(1);
            }
            frame(first, body)
        };
        assert!(dec(&publish(&ok), v).is_ok());
        let err = dec(&publish(&deep), v).unwrap_err();
        assert_eq!(err, DecodeError::TopicTooDeep { filter: false });
        assert_eq!(err.reason_code(), ReasonCode::TOPIC_NAME_INVALID);
        assert!(dec(&subscribe(0x82, &ok, true), v).is_ok());
        for (first, opts) in [(0x82, true), (0xA2, false)] {
            let err = dec(&subscribe(first, &deep, opts), v).unwrap_err();
            assert_eq!(err, DecodeError::TopicTooDeep { filter: true });
            assert_eq!(err.reason_code(), ReasonCode::TOPIC_FILTER_INVALID);
        }
    }
    // A will topic of a 3.1.1 CONNECT.
    let mut body = string("MQTT");
    body.extend_from_slice(&[4, 0x06, 0, 60]);
    body.extend(string("c"));
    body.extend(string(&deep));
    body.extend(string("bye"));
    assert_eq!(
        dec(&frame(0x10, body), V311).unwrap_err(),
        DecodeError::TopicTooDeep { filter: false }
    );
}
