//! Record format tests: fixed examples, corruption detection, and proptest round trips
//! plus "decode never panics" over arbitrary bytes.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;

use super::*;
use crate::codec::{Properties, PropertyValues};

fn publish(topic: &str, qos: QoS, payload: &[u8]) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: ByteStr::from(topic),
        packet_id: (qos != QoS::AtMostOnce).then_some(7),
        properties: Properties::default(),
        payload: Bytes::copy_from_slice(payload),
    }
}

fn roundtrip(r: &Record) -> Record {
    let mut buf = BytesMut::new();
    encode(r, &mut buf).unwrap();
    let (back, used) = decode_frame(&buf).unwrap().unwrap();
    assert_eq!(used, buf.len());
    back
}

fn samples() -> Vec<Record> {
    let id = ByteStr::from("client-1");
    let mut p = publish("a/b", QoS::AtLeastOnce, b"hello");
    p.properties.message_expiry_interval = Some(60);
    p.properties.content_type = Some(ByteStr::from("text/plain"));
    p.properties.user_properties = vec![(ByteStr::from("k"), ByteStr::from("v"))];
    vec![
        Record::Retain { publish: p.clone() },
        Record::SessionOpen {
            client_id: id.clone(),
            version: 5,
            expiry: EXPIRY_NEVER,
        },
        Record::SessionOffline {
            client_id: id.clone(),
            at: 1_700_000_000_000,
            expiry: 3600,
        },
        Record::SessionGone {
            client_id: id.clone(),
        },
        Record::Subscribe {
            client_id: id.clone(),
            filter: ByteStr::from("a/+/#"),
            options: 0x2d,
            id: 9,
        },
        Record::Unsubscribe {
            client_id: id.clone(),
            filter: ByteStr::from("a/+/#"),
        },
        Record::Message {
            client_id: id.clone(),
            seq: 42,
            qos: QoS::ExactlyOnce,
            retain: true,
            sub_ids: vec![1, 2],
            received: 5,
            publish: p,
        },
        Record::Window {
            client_id: id.clone(),
            done_below: 40,
            inflight: vec![InflightEntry {
                seq: 39,
                packet_id: 3,
                stage: stage::PUBCOMP,
            }],
        },
        Record::Will {
            client_id: id.clone(),
            at: 77,
            will: Will {
                topic: ByteStr::from("will/t"),
                payload: Bytes::from_static(b"gone"),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: Properties::default(),
            },
        },
        Record::WillDone { client_id: id },
        Record::Routed {
            boot: 99,
            from: 1,
            n: 7,
            seqs: vec![(0, 5), (3, 8)],
            received: 12,
            publish: publish("x/y", QoS::AtLeastOnce, b"routed"),
        },
        Record::Delivered {
            boot: 99,
            from: 1,
            to: 0,
            upto: 5,
        },
        Record::RoutedClear { keep_boot: 100 },
        Record::End,
        Record::InboundQos2 {
            client_id: ByteStr::from("client-1"),
            packet_id: 65535,
        },
        Record::InboundQos2Released {
            client_id: ByteStr::from("client-1"),
            packet_id: 1,
        },
        Record::SessionUser {
            client_id: ByteStr::from("client-1"),
            listener: 2,
            username: Some(ByteStr::from("alice")),
            identity: None,
        },
        Record::SessionUser {
            client_id: ByteStr::from("client-1"),
            listener: 0,
            username: None,
            identity: Some(ByteStr::from("CN=device-7")),
        },
        Record::RetainSource {
            topic: ByteStr::from("status/a"),
            client_id: ByteStr::from("client-1"),
            username: Some(ByteStr::from("alice")),
            listener: 1,
        },
        Record::RetainSource {
            topic: ByteStr::from("status/b"),
            client_id: ByteStr::from("client-2"),
            username: None,
            listener: 0,
        },
    ]
}

#[test]
fn every_record_type_roundtrips() {
    for r in samples() {
        assert_eq!(roundtrip(&r), r);
    }
}

#[test]
fn will_delay_is_not_stored_with_the_will() {
    let props = Properties::from(PropertyValues {
        will_delay_interval: Some(30),
        ..PropertyValues::default()
    });
    let r = Record::Will {
        client_id: ByteStr::from("c"),
        at: 1,
        will: Will {
            topic: ByteStr::from("t"),
            payload: Bytes::from_static(b"x"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: props,
        },
    };
    let Record::Will { will, .. } = roundtrip(&r) else {
        panic!("not a will")
    };
    assert_eq!(will.properties.will_delay_interval, None);
}

#[test]
fn partial_frames_are_incomplete_not_errors() {
    let mut buf = BytesMut::new();
    for r in samples() {
        encode(&r, &mut buf).unwrap();
    }
    let first = frame_len(&buf).unwrap();
    for cut in 0..first {
        assert_eq!(decode_frame(&buf[..cut]), Ok(None), "cut at {cut}");
    }
}

#[test]
fn flipped_bit_is_a_checksum_error() {
    let mut buf = BytesMut::new();
    encode(&samples()[6], &mut buf).unwrap(); // a Message
    for i in FRAME_HEADER..buf.len() {
        let mut bad = buf.clone();
        bad[i] ^= 0x10;
        assert!(
            matches!(decode_frame(&bad), Err(RecordError::Checksum { .. })),
            "byte {i}"
        );
    }
}

#[test]
fn huge_length_is_rejected_without_waiting_for_bytes() {
    let mut buf = vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
    buf.extend_from_slice(&[0; 16]);
    assert!(matches!(decode_frame(&buf), Err(RecordError::TooLarge(_))));
}

#[test]
fn bad_bodies_with_good_checksums_are_malformed() {
    let frame = |body: &[u8]| {
        let mut v = (body.len() as u32).to_le_bytes().to_vec();
        v.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        v.extend_from_slice(body);
        v
    };
    assert_eq!(
        decode_frame(&frame(&[99])),
        Err(RecordError::UnknownType(99))
    );
    assert!(matches!(
        decode_frame(&frame(&[T_SESSION_GONE, 9, 0, 0, 0, b'a'])),
        Err(RecordError::Malformed(_))
    ));
    assert!(matches!(
        decode_frame(&frame(&[T_END, 0])),
        Err(RecordError::Malformed(_))
    ));
    assert!(matches!(
        decode_frame(&frame(&[T_SESSION_GONE, 1, 0, 0, 0, 0xff])),
        Err(RecordError::Malformed(_))
    ));
    // An optional string whose flag is neither 0 nor 1.
    let mut u = vec![T_SESSION_USER, 1, 0, 0, 0, b'c', 0, 0, 0, 0, 2];
    assert!(matches!(
        decode_frame(&frame(&u)),
        Err(RecordError::Malformed(_))
    ));
    u[10] = 0;
    u.push(0);
    assert!(decode_frame(&frame(&u)).is_ok());
    // A window claiming 2^32-1 entries must not allocate for them.
    let mut w = vec![T_WINDOW, 1, 0, 0, 0, b'c'];
    w.extend_from_slice(&0u64.to_le_bytes());
    w.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        decode_frame(&frame(&w)),
        Err(RecordError::Malformed(_))
    ));
}

fn arb_str() -> impl Strategy<Value = ByteStr> {
    "[a-z0-9/_-]{1,12}".prop_map(ByteStr::from)
}

fn arb_qos() -> impl Strategy<Value = QoS> {
    (0u8..3).prop_map(|q| QoS::from_u8(q).unwrap())
}

fn arb_publish() -> impl Strategy<Value = Publish> {
    (
        arb_qos(),
        any::<bool>(),
        "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,3}",
        vec(any::<u8>(), 0..64),
        proptest::option::of(any::<u32>()),
        1u16..,
    )
        .prop_map(|(qos, retain, topic, payload, expiry, id)| {
            let mut p = publish(&topic, qos, &payload);
            p.retain = retain;
            p.packet_id = (qos != QoS::AtMostOnce).then_some(id);
            p.properties.message_expiry_interval = expiry;
            p
        })
}

fn arb_record() -> impl Strategy<Value = Record> {
    prop_oneof![
        arb_publish().prop_map(|publish| Record::Retain { publish }),
        (arb_str(), any::<u8>(), any::<u32>()).prop_map(|(client_id, version, expiry)| {
            Record::SessionOpen {
                client_id,
                version,
                expiry,
            }
        }),
        (arb_str(), any::<u64>(), any::<u32>()).prop_map(|(client_id, at, expiry)| {
            Record::SessionOffline {
                client_id,
                at,
                expiry,
            }
        }),
        arb_str().prop_map(|client_id| Record::SessionGone { client_id }),
        (arb_str(), arb_str(), any::<u8>(), any::<u32>()).prop_map(
            |(client_id, filter, options, id)| Record::Subscribe {
                client_id,
                filter,
                options,
                id,
            }
        ),
        (
            arb_str(),
            any::<u64>(),
            arb_qos(),
            any::<bool>(),
            vec(any::<u32>(), 0..4),
            any::<u64>(),
            arb_publish()
        )
            .prop_map(
                |(client_id, seq, qos, retain, sub_ids, received, publish)| Record::Message {
                    client_id,
                    seq,
                    qos,
                    retain,
                    sub_ids,
                    received,
                    publish,
                }
            ),
        (
            arb_str(),
            any::<u64>(),
            vec((any::<u64>(), any::<u16>(), 0u8..3), 0..5)
        )
            .prop_map(|(client_id, done_below, v)| Record::Window {
                client_id,
                done_below,
                inflight: v
                    .into_iter()
                    .map(|(seq, packet_id, stage)| InflightEntry {
                        seq,
                        packet_id,
                        stage
                    })
                    .collect(),
            }),
        (
            any::<u64>(),
            any::<u8>(),
            any::<u64>(),
            vec((any::<u8>(), any::<u64>()), 0..4),
            any::<u64>(),
            arb_publish()
        )
            .prop_map(|(boot, from, n, seqs, received, publish)| Record::Routed {
                boot,
                from,
                n,
                seqs,
                received,
                publish,
            }),
        (any::<u64>(), any::<u8>(), any::<u8>(), any::<u64>()).prop_map(
            |(boot, from, to, upto)| Record::Delivered {
                boot,
                from,
                to,
                upto
            }
        ),
        Just(Record::End),
        (arb_str(), any::<u16>(), any::<bool>()).prop_map(|(client_id, packet_id, released)| {
            if released {
                Record::InboundQos2Released {
                    client_id,
                    packet_id,
                }
            } else {
                Record::InboundQos2 {
                    client_id,
                    packet_id,
                }
            }
        }),
        (
            arb_str(),
            any::<u32>(),
            proptest::option::of(arb_str()),
            proptest::option::of(arb_str())
        )
            .prop_map(|(client_id, listener, username, identity)| {
                Record::SessionUser {
                    client_id,
                    listener,
                    username,
                    identity,
                }
            }),
        (
            arb_str(),
            arb_str(),
            proptest::option::of(arb_str()),
            any::<u32>()
        )
            .prop_map(|(topic, client_id, username, listener)| {
                Record::RetainSource {
                    topic,
                    client_id,
                    username,
                    listener,
                }
            }),
    ]
}

proptest! {
    /// What a record stores is exactly the network codec's MQTT 5 PUBLISH (so files stay
    /// readable however the record code is written).
    #[test]
    fn stored_publish_is_the_mqtt5_packet(mut p in arb_publish(), dup in any::<bool>()) {
        p.dup = dup;
        let mut stored = BytesMut::new();
        crate::persist::wire::put_publish(&mut stored, &p).unwrap();
        let mut n = p.clone();
        n.dup = false;
        let mut packet = BytesMut::new();
        crate::codec::encode(&crate::codec::Packet::Publish(n), crate::codec::ProtocolVersion::V5, &mut packet).unwrap();
        prop_assert_eq!(&stored[..4], &(packet.len() as u32).to_le_bytes()[..]);
        prop_assert_eq!(&stored[4..], &packet[..]);
    }

    #[test]
    fn decode_of_encode_is_identity(records in vec(arb_record(), 1..8)) {
        let mut buf = BytesMut::new();
        for r in &records {
            encode(r, &mut buf).unwrap();
        }
        let mut at = 0;
        for r in &records {
            let (back, used) = decode_frame(&buf[at..]).unwrap().unwrap();
            prop_assert_eq!(&back, r);
            at += used;
        }
        prop_assert_eq!(at, buf.len());
    }

    #[test]
    fn decode_never_panics(bytes in vec(any::<u8>(), 0..256)) {
        let _ = decode_frame(&bytes);
    }

    #[test]
    fn decode_never_panics_on_valid_checksums(body in vec(any::<u8>(), 0..128)) {
        let mut v = (body.len() as u32).to_le_bytes().to_vec();
        v.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        v.extend_from_slice(&body);
        let _ = decode_frame(&v);
    }
}

/// The fuzz seed of the record types added after the first release decodes to them.
#[test]
fn fuzz_seed_of_the_new_record_types_decodes() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/corpus/persist_record/seed-qos2-user"
    );
    let data = std::fs::read(path).unwrap();
    let mut rest = &data[..];
    let mut kinds = Vec::new();
    while let Some((r, used)) = decode_frame(rest).unwrap() {
        kinds.push(match r {
            Record::SessionOpen { .. } => "open",
            Record::SessionUser {
                identity: Some(_), ..
            } => "user+cert",
            Record::SessionUser { .. } => "user",
            Record::InboundQos2 { packet_id: 7, .. } => "qos2",
            Record::InboundQos2Released { packet_id: 7, .. } => "released",
            other => panic!("{other:?}"),
        });
        rest = &rest[used..];
    }
    assert!(rest.is_empty());
    assert_eq!(kinds, ["open", "user", "user+cert", "qos2", "released"]);
}
