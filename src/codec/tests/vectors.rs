//! Byte-exact vectors for every packet type (as sent by Mosquitto and common clients),
//! checked in both directions, plus partial-frame checks on each.

use bytes::{Bytes, BytesMut};
use smallvec::smallvec;

use super::{assert_prefixes_partial, dec, enc, ALL, V31, V311, V5};
use crate::codec::{
    decode_connect_version, encode_publish_header, frame_len, Ack, AckKind, Auth, ByteStr, ConnAck,
    Connect, Disconnect, Packet, Properties, PropertyValues, ProtocolVersion, Publish, QoS,
    ReasonCode, SubAck, Subscribe, SubscriptionOptions, Unsubscribe, Will,
};

/// Encodes to exactly `bytes`, decodes back to `p`, and every prefix is partial.
fn vector(p: &Packet, v: ProtocolVersion, bytes: &[u8]) {
    assert_eq!(enc(p, v), bytes, "encoding of {p:?} for {v:?}");
    assert_eq!(&dec(bytes, v).unwrap(), p, "decoding for {v:?}");
    assert_prefixes_partial(bytes, v);
}

fn connect(protocol: ProtocolVersion, client_id: &str) -> Connect {
    Connect {
        protocol,
        clean_start: true,
        keep_alive: 60,
        client_id: ByteStr::from(client_id),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    }
}

#[test]
fn mosquitto_sub_connect_v311() {
    // mosquitto_sub -i test -k 60 (3.1.1, clean session).
    let bytes = b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04test";
    vector(
        &Packet::Connect(Box::new(connect(V311, "test"))),
        V311,
        bytes,
    );
    assert_eq!(decode_connect_version(bytes), Some(4));
}

#[test]
fn mosquitto_pub_connect_v5() {
    // mosquitto_pub -V 5 -i pub1: empty property block.
    let bytes = b"\x10\x11\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x04pub1";
    vector(&Packet::Connect(Box::new(connect(V5, "pub1"))), V5, bytes);
    assert_eq!(decode_connect_version(bytes), Some(5));
}

#[test]
fn connect_v31_mqisdp() {
    let bytes = b"\x10\x12\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x04test";
    // The version argument is ignored for CONNECT: it is self-describing.
    vector(&Packet::Connect(Box::new(connect(V31, "test"))), V31, bytes);
    for v in ALL {
        assert_eq!(
            dec(bytes, v).unwrap(),
            Packet::Connect(Box::new(connect(V31, "test")))
        );
    }
    assert_eq!(decode_connect_version(bytes), Some(3));
    assert_eq!(decode_connect_version(&bytes[..10]), None);
}

#[test]
fn connect_with_will_user_password_v311() {
    let mut c = connect(V311, "c");
    c.clean_start = false;
    c.keep_alive = 10;
    c.will = Some(Will {
        topic: ByteStr::from("w"),
        payload: Bytes::from_static(b"bye"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Properties::default(),
    });
    c.username = Some(ByteStr::from("u"));
    c.password = Some(Bytes::from_static(b"p"));
    // flags: user 0x80 | pass 0x40 | will retain 0x20 | will qos1 0x08 | will 0x04 = 0xEC
    let bytes =
        b"\x10\x1b\x00\x04MQTT\x04\xec\x00\x0a\x00\x01c\x00\x01w\x00\x03bye\x00\x01u\x00\x01p";
    vector(&Packet::Connect(Box::new(c)), V311, bytes);
}

#[test]
fn connect_v5_with_will_properties() {
    let mut c = connect(V5, "");
    c.properties.session_expiry_interval = Some(0x78);
    c.will = Some(Will {
        topic: ByteStr::from("w"),
        payload: Bytes::new(),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Properties::from(PropertyValues {
            will_delay_interval: Some(5),
            ..PropertyValues::default()
        }),
    });
    let bytes = b"\x10\x1d\x00\x04MQTT\x05\x06\x00\x3c\x05\x11\x00\x00\x00\x78\x00\x00\x05\x18\x00\x00\x00\x05\x00\x01w\x00\x00";
    vector(&Packet::Connect(Box::new(c)), V5, bytes);
}

#[test]
fn connack_all_versions() {
    let ca = ConnAck {
        session_present: true,
        reason: ReasonCode::SUCCESS,
        properties: Properties::default(),
    };
    vector(&Packet::ConnAck(ca.clone()), V311, b"\x20\x02\x01\x00");
    vector(&Packet::ConnAck(ca.clone()), V31, b"\x20\x02\x01\x00");
    vector(&Packet::ConnAck(ca), V5, b"\x20\x03\x01\x00\x00");
    let ca = ConnAck {
        session_present: false,
        reason: ReasonCode::V3_NOT_AUTHORIZED,
        properties: Properties::default(),
    };
    vector(&Packet::ConnAck(ca), V311, b"\x20\x02\x00\x05");
    let ca = ConnAck {
        session_present: false,
        reason: ReasonCode::SUCCESS,
        properties: Properties::from(PropertyValues {
            topic_alias_maximum: Some(10),
            maximum_qos: Some(1),
            ..PropertyValues::default()
        }),
    };
    vector(
        &Packet::ConnAck(ca),
        V5,
        b"\x20\x08\x00\x00\x05\x22\x00\x0a\x24\x01",
    );
}

fn publish(qos: QoS, packet_id: Option<u16>) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: ByteStr::from("a/b"),
        packet_id,
        properties: Properties::default(),
        payload: Bytes::from_static(b"hi"),
    }
}

#[test]
fn publish_qos0_qos1_qos2() {
    let p = publish(QoS::AtMostOnce, None);
    vector(&Packet::Publish(p.clone()), V311, b"\x30\x07\x00\x03a/bhi");
    vector(&Packet::Publish(p), V5, b"\x30\x08\x00\x03a/b\x00hi");
    let mut p = publish(QoS::AtLeastOnce, Some(7));
    p.retain = true;
    vector(&Packet::Publish(p), V311, b"\x33\x09\x00\x03a/b\x00\x07hi");
    let mut p = publish(QoS::ExactlyOnce, Some(0x0102));
    p.dup = true;
    vector(&Packet::Publish(p), V31, b"\x3c\x09\x00\x03a/b\x01\x02hi");
}

#[test]
fn publish_v5_topic_alias_with_empty_topic() {
    let mut p = publish(QoS::AtMostOnce, None);
    p.topic = ByteStr::default();
    p.properties.topic_alias = Some(3);
    vector(
        &Packet::Publish(p),
        V5,
        b"\x30\x08\x00\x00\x03\x23\x00\x03hi",
    );
}

#[test]
fn publish_header_plus_payload_equals_encode() {
    for v in ALL {
        let mut p = publish(QoS::AtLeastOnce, Some(9));
        p.payload = Bytes::from(vec![7u8; 300]);
        if v == V5 {
            p.properties.message_expiry_interval = Some(60);
        }
        let mut out = BytesMut::new();
        encode_publish_header(&p, v, &mut out).unwrap();
        out.extend_from_slice(&p.payload);
        assert_eq!(out.to_vec(), enc(&Packet::Publish(p), v));
    }
}

#[test]
fn qos0_publish_never_encodes_dup() {
    let mut p = publish(QoS::AtMostOnce, None);
    p.dup = true;
    assert_eq!(enc(&Packet::Publish(p), V311)[0], 0x30);
}

fn ack(kind: AckKind, reason: ReasonCode) -> Packet {
    Packet::Ack(Ack {
        kind,
        packet_id: 0x1234,
        reason,
        properties: Properties::default(),
    })
}

#[test]
fn acks_v3_are_exactly_two_bytes() {
    for v in [V31, V311] {
        vector(
            &ack(AckKind::PubAck, ReasonCode::SUCCESS),
            v,
            b"\x40\x02\x12\x34",
        );
        vector(
            &ack(AckKind::PubRec, ReasonCode::SUCCESS),
            v,
            b"\x50\x02\x12\x34",
        );
        vector(
            &ack(AckKind::PubRel, ReasonCode::SUCCESS),
            v,
            b"\x62\x02\x12\x34",
        );
        vector(
            &ack(AckKind::PubComp, ReasonCode::SUCCESS),
            v,
            b"\x70\x02\x12\x34",
        );
    }
}

#[test]
fn acks_v5_short_and_long_forms() {
    vector(
        &ack(AckKind::PubAck, ReasonCode::SUCCESS),
        V5,
        b"\x40\x02\x12\x34",
    );
    vector(
        &ack(AckKind::PubAck, ReasonCode::NO_MATCHING_SUBSCRIBERS),
        V5,
        b"\x40\x03\x12\x34\x10",
    );
    let Packet::Ack(mut a) = ack(AckKind::PubRec, ReasonCode::SUCCESS) else {
        unreachable!()
    };
    a.properties.reason_string = Some(ByteStr::from("x"));
    vector(
        &Packet::Ack(a),
        V5,
        b"\x50\x08\x12\x34\x00\x04\x1f\x00\x01x",
    );
    // Reason code followed by an empty property block is accepted too.
    assert_eq!(
        dec(b"\x40\x04\x12\x34\x10\x00", V5).unwrap(),
        ack(AckKind::PubAck, ReasonCode::NO_MATCHING_SUBSCRIBERS)
    );
}

#[test]
fn subscribe_and_suback() {
    let s = Subscribe {
        packet_id: 1,
        filters: smallvec![
            (
                ByteStr::from("a/+"),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..Default::default()
                }
            ),
            (ByteStr::from("#"), SubscriptionOptions::default()),
        ],
        properties: Properties::default(),
    };
    vector(
        &Packet::Subscribe(s.clone()),
        V311,
        b"\x82\x0c\x00\x01\x00\x03a/+\x01\x00\x01#\x00",
    );
    vector(
        &Packet::Subscribe(s),
        V5,
        b"\x82\x0d\x00\x01\x00\x00\x03a/+\x01\x00\x01#\x00",
    );
    let s = Subscribe {
        packet_id: 2,
        filters: smallvec![(
            ByteStr::from("t"),
            SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: 2,
            }
        )],
        properties: Properties::from(PropertyValues {
            subscription_identifiers: smallvec![300],
            ..PropertyValues::default()
        }),
    };
    vector(
        &Packet::Subscribe(s),
        V5,
        b"\x82\x0a\x00\x02\x03\x0b\xac\x02\x00\x01t\x2e",
    );
    let a = SubAck {
        packet_id: 1,
        reasons: smallvec![ReasonCode::GRANTED_QOS_1, ReasonCode::V3_SUBACK_FAILURE],
        properties: Properties::default(),
    };
    vector(
        &Packet::SubAck(a.clone()),
        V311,
        b"\x90\x04\x00\x01\x01\x80",
    );
    vector(&Packet::SubAck(a), V5, b"\x90\x05\x00\x01\x00\x01\x80");
}

#[test]
fn unsubscribe_and_unsuback() {
    let u = Unsubscribe {
        packet_id: 3,
        filters: smallvec![ByteStr::from("a/#")],
        properties: Properties::default(),
    };
    vector(
        &Packet::Unsubscribe(u.clone()),
        V311,
        b"\xa2\x07\x00\x03\x00\x03a/#",
    );
    vector(
        &Packet::Unsubscribe(u),
        V5,
        b"\xa2\x08\x00\x03\x00\x00\x03a/#",
    );
    let a = SubAck {
        packet_id: 3,
        reasons: smallvec![],
        properties: Properties::default(),
    };
    vector(&Packet::UnsubAck(a), V311, b"\xb0\x02\x00\x03");
    let a = SubAck {
        packet_id: 3,
        reasons: smallvec![ReasonCode::NO_SUBSCRIPTION_EXISTED],
        properties: Properties::default(),
    };
    vector(
        &Packet::UnsubAck(a.clone()),
        V5,
        b"\xb0\x04\x00\x03\x00\x11",
    );
    // Reason codes are not carried in 3.1.1: they are dropped on encode.
    assert_eq!(enc(&Packet::UnsubAck(a), V311), b"\xb0\x02\x00\x03");
}

#[test]
fn pings_and_disconnect() {
    for v in ALL {
        vector(&Packet::PingReq, v, b"\xc0\x00");
        vector(&Packet::PingResp, v, b"\xd0\x00");
        vector(&Packet::Disconnect(Disconnect::default()), v, b"\xe0\x00");
    }
    let d = Disconnect {
        reason: ReasonCode::DISCONNECT_WITH_WILL,
        properties: Properties::default(),
    };
    vector(&Packet::Disconnect(d.clone()), V5, b"\xe0\x01\x04");
    // 3.1.1 has no reason code: the encoder writes a bare DISCONNECT.
    assert_eq!(enc(&Packet::Disconnect(d), V311), b"\xe0\x00");
    let d = Disconnect {
        reason: ReasonCode::SUCCESS,
        properties: Properties::from(PropertyValues {
            session_expiry_interval: Some(1),
            ..PropertyValues::default()
        }),
    };
    vector(
        &Packet::Disconnect(d),
        V5,
        b"\xe0\x07\x00\x05\x11\x00\x00\x00\x01",
    );
}

#[test]
fn auth_v5() {
    vector(&Packet::Auth(Auth::default()), V5, b"\xf0\x00");
    let a = Auth {
        reason: ReasonCode::CONTINUE_AUTHENTICATION,
        properties: Properties::from(PropertyValues {
            authentication_method: Some(ByteStr::from("SCRAM")),
            authentication_data: Some(Bytes::from_static(b"\x01")),
            ..PropertyValues::default()
        }),
    };
    vector(
        &Packet::Auth(a),
        V5,
        b"\xf0\x0e\x18\x0c\x15\x00\x05SCRAM\x16\x00\x01\x01",
    );
}

#[test]
fn several_frames_in_one_buffer_decode_in_order() {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(b"\xc0\x00\x30\x07\x00\x03a/bhi\x40\x02\x00\x01\x30");
    let d = |b: &mut BytesMut| crate::codec::decode(b, V311, 0);
    assert_eq!(d(&mut buf).unwrap(), Some(Packet::PingReq));
    assert!(matches!(d(&mut buf).unwrap(), Some(Packet::Publish(_))));
    assert!(matches!(d(&mut buf).unwrap(), Some(Packet::Ack(_))));
    assert_eq!(d(&mut buf).unwrap(), None);
    assert_eq!(&buf[..], b"\x30");
    assert_eq!(frame_len(b"\x30\x07\x00", 0), Ok(None));
    assert_eq!(frame_len(b"\x30\x00", 0), Ok(Some(2)));
}

#[test]
fn decoded_publish_is_a_slice_of_the_read_buffer() {
    let mut buf = BytesMut::from(&b"\x30\x07\x00\x03a/bhi"[..]);
    let base = buf.as_ptr() as usize;
    let Some(Packet::Publish(p)) = crate::codec::decode(&mut buf, V311, 0).unwrap() else {
        panic!("not a publish")
    };
    assert_eq!(p.topic.as_bytes().as_ptr() as usize, base + 4);
    assert_eq!(p.payload.as_ptr() as usize, base + 7);
}
