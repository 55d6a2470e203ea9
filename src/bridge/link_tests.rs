//! The relay's QoS bookkeeping, driven with encoded packets on both sides.

use super::*;
use crate::config::{BridgeConfig, BridgeTopic};

fn settings(version: &str, topics: &[(&str, &str, u8)]) -> Settings {
    let mut b = BridgeConfig::new("b");
    b.addresses = vec!["127.0.0.1:1883".into()];
    b.remote_clientid = Some("edge".into());
    b.protocol_version = Some(version.into());
    b.topics = topics
        .iter()
        .map(|(p, d, q)| BridgeTopic {
            pattern: (*p).into(),
            direction: (*d).into(),
            qos: *q,
            local_prefix: None,
            remote_prefix: None,
        })
        .collect();
    Settings::new(&b)
}

fn bytes(packet: &Packet, v: ProtocolVersion) -> BytesMut {
    let mut out = BytesMut::new();
    codec::encode(packet, v, &mut out).unwrap();
    out
}

/// Every packet in `buf` (drained).
fn packets(buf: &mut BytesMut, v: ProtocolVersion) -> Vec<Packet> {
    let mut out = Vec::new();
    while let Some(p) = codec::decode(buf, v, MAX_IN).unwrap() {
        out.push(p);
    }
    out
}

const V3: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

fn connack() -> Packet {
    Packet::ConnAck(ConnAck::default())
}

/// A link whose both sides are connected; the CONNECT/SUBSCRIBE traffic is returned.
fn up(s: Settings, now: Instant) -> (Link, Vec<Packet>, Vec<Packet>) {
    let mut l = Link::new(s, now);
    l.start(now);
    l.on_remote(&mut bytes(&connack(), V3), now).unwrap();
    assert!(l.take_open_local());
    l.on_local(&mut bytes(&connack(), V5), now).unwrap();
    let mut r = l.remote_out.split();
    if let Some(level) = r.get_mut(8) {
        *level &= 0x7F; // the bridge bit, which the server codec does not take
    }
    let remote = packets(&mut r, V3);
    let mut lo = l.local_out.split();
    // The local side's CONNECT is decoded as a client packet.
    let local = packets(&mut lo, V5);
    (l, remote, local)
}

fn publish(topic: &str, qos: QoS, id: Option<u16>) -> Packet {
    Packet::Publish(Publish {
        qos,
        topic: ByteStr::from(topic.to_string()),
        packet_id: id,
        payload: Bytes::from_static(b"x"),
        ..Publish::default()
    })
}

#[test]
fn connect_sets_the_bridge_bit_and_subscribes_both_sides() {
    let now = Instant::now();
    let (_, remote, local) = up(
        settings("mqttv311", &[("a/#", "in", 1), ("b/#", "out", 1)]),
        now,
    );
    let mut l = Link::new(settings("mqttv311", &[("a/#", "in", 1)]), now);
    l.start(now);
    // CONNECT: 0x10, len, 0x00 0x04 "MQTT", level.
    assert_eq!(
        l.remote_out[8], 0x84,
        "protocol level 4 with the bridge bit"
    );
    assert!(
        matches!(&remote[0], Packet::Connect(c) if c.client_id.as_str() == "edge"
        && !c.clean_start && c.will.as_ref().is_some_and(|w| w.retain && &w.payload[..] == b"0"))
    );
    let remote = &remote[1..];
    assert!(matches!(&remote[0], Packet::Unsubscribe(u) if u.filters[0].as_str() == "b/#"));
    assert!(matches!(&remote[1], Packet::Subscribe(s) if s.filters[0].0.as_str() == "a/#"));
    assert!(matches!(&remote[2], Packet::Publish(p) if p.retain && &p.payload[..] == b"1"));
    assert!(
        matches!(&local[0], Packet::Connect(c) if c.client_id.as_str() == "local.edge"
        && !c.clean_start && c.properties.session_expiry_interval == Some(u32::MAX))
    );
    match &local[1] {
        Packet::Subscribe(s) => {
            assert_eq!(s.filters[0].0.as_str(), "b/#");
            assert!(s.filters[0].1.no_local, "loop prevention");
            assert!(s.filters[0].1.retain_as_published);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(&local[2], Packet::Publish(p) if p.retain
        && p.topic.as_str() == "$SYS/broker/connection/edge/state"));
}

#[test]
fn refused_bridge_bit_is_dropped_on_the_next_attempt() {
    let now = Instant::now();
    let mut l = Link::new(settings("mqttv311", &[("a", "in", 0)]), now);
    l.start(now);
    let refused = Packet::ConnAck(ConnAck {
        reason: ReasonCode::V3_UNACCEPTABLE_PROTOCOL_VERSION,
        ..ConnAck::default()
    });
    assert!(l.on_remote(&mut bytes(&refused, V3), now).is_err());
    l.start(now);
    assert_eq!(l.remote_out[8], 0x04);
}

#[test]
fn inbound_qos1_is_acknowledged_remotely_only_after_the_local_broker() {
    let now = Instant::now();
    let (mut l, _, _) = up(settings("mqttv311", &[("a/#", "in", 1)]), now);
    l.on_remote(
        &mut bytes(&publish("a/1", QoS::AtLeastOnce, Some(7)), V3),
        now,
    )
    .unwrap();
    assert!(
        l.remote_out.is_empty(),
        "no PUBACK before the local broker has it"
    );
    let local = packets(&mut l.local_out.split(), V5);
    let Packet::Publish(p) = &local[0] else {
        panic!("{local:?}")
    };
    let lid = p.packet_id.unwrap();
    l.on_local(&mut bytes(&ack(AckKind::PubAck, lid), V5), now)
        .unwrap();
    let remote = packets(&mut l.remote_out.split(), V3);
    assert_eq!(remote, vec![ack(AckKind::PubAck, 7)]);
}

#[test]
fn outbound_qos1_and_qos2_are_released_locally_only_after_the_remote() {
    let now = Instant::now();
    let (mut l, _, _) = up(settings("mqttv311", &[("b/#", "out", 2)]), now);
    l.on_local(
        &mut bytes(&publish("b/1", QoS::AtLeastOnce, Some(3)), V5),
        now,
    )
    .unwrap();
    assert!(l.local_out.is_empty());
    let remote = packets(&mut l.remote_out.split(), V3);
    let Packet::Publish(p) = &remote[0] else {
        panic!("{remote:?}")
    };
    l.on_remote(
        &mut bytes(&ack(AckKind::PubAck, p.packet_id.unwrap()), V3),
        now,
    )
    .unwrap();
    assert_eq!(
        packets(&mut l.local_out.split(), V5),
        vec![ack(AckKind::PubAck, 3)]
    );

    // QoS 2: PUBREC locally only once the remote completed.
    l.on_local(
        &mut bytes(&publish("b/2", QoS::ExactlyOnce, Some(4)), V5),
        now,
    )
    .unwrap();
    // A resend of the same local message is not forwarded twice.
    l.on_local(
        &mut bytes(&publish("b/2", QoS::ExactlyOnce, Some(4)), V5),
        now,
    )
    .unwrap();
    let remote = packets(&mut l.remote_out.split(), V3);
    assert_eq!(remote.len(), 1);
    let Packet::Publish(p) = &remote[0] else {
        panic!("{remote:?}")
    };
    let rid = p.packet_id.unwrap();
    l.on_remote(&mut bytes(&ack(AckKind::PubRec, rid), V3), now)
        .unwrap();
    assert_eq!(
        packets(&mut l.remote_out.split(), V3),
        vec![ack(AckKind::PubRel, rid)]
    );
    assert!(l.local_out.is_empty());
    l.on_remote(&mut bytes(&ack(AckKind::PubComp, rid), V3), now)
        .unwrap();
    assert_eq!(
        packets(&mut l.local_out.split(), V5),
        vec![ack(AckKind::PubRec, 4)]
    );
    l.on_local(&mut bytes(&ack(AckKind::PubRel, 4), V5), now)
        .unwrap();
    assert_eq!(
        packets(&mut l.local_out.split(), V5),
        vec![ack(AckKind::PubComp, 4)]
    );
}

#[test]
fn garbage_and_silence_from_the_remote_are_errors() {
    let now = Instant::now();
    let (mut l, _, _) = up(settings("mqttv311", &[("a", "in", 0)]), now);
    assert!(l
        .on_remote(&mut BytesMut::from(&[0xF0u8, 0x00][..]), now)
        .is_err());
    let (mut l, _, _) = up(settings("mqttv311", &[("a", "in", 0)]), now);
    let t = l.poll_timeout().unwrap();
    l.on_timeout(t).unwrap();
    assert_eq!(
        packets(&mut l.remote_out.split(), V3),
        vec![Packet::PingReq]
    );
    let t = l.poll_timeout().unwrap();
    assert!(l.on_timeout(t).is_err(), "no PINGRESP within keep alive");
}

#[test]
fn messages_over_bridge_max_packet_size_are_dropped_and_released() {
    let now = Instant::now();
    let mut s = settings("mqttv311", &[("b/#", "out", 1)]);
    s.max_packet_size = 40;
    let (mut l, _, _) = up(s, now);
    let big = Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        topic: ByteStr::from("b/1".to_string()),
        packet_id: Some(9),
        payload: Bytes::from(vec![b'x'; 64]),
        ..Publish::default()
    });
    l.on_local(&mut bytes(&big, V5), now).unwrap();
    assert!(l.remote_out.is_empty(), "not forwarded");
    assert_eq!(
        packets(&mut l.local_out.split(), V5),
        vec![ack(AckKind::PubAck, 9)]
    );
    assert_eq!(l.stats.dropped, 1);
    l.on_local(
        &mut bytes(&publish("b/2", QoS::AtLeastOnce, Some(10)), V5),
        now,
    )
    .unwrap();
    assert_eq!(
        packets(&mut l.remote_out.split(), V3).len(),
        1,
        "a small one is"
    );
}

#[test]
fn lazy_idle_clock_counts_messages_and_acks_but_not_keep_alive() {
    let t0 = Instant::now();
    let secs = |n: u64| t0 + Duration::from_secs(n);
    let mut s = settings("mqttv311", &[("b/#", "out", 1)]);
    s.keepalive = 5;
    let idle = Duration::from_secs(12);
    s.lazy = Some(super::super::Lazy {
        threshold: 3,
        idle_timeout: idle,
    });
    let (mut l, _, _) = up(s.clone(), t0);
    assert_eq!(l.idle_deadline(), Some(t0 + idle));
    // Keep alive traffic does not keep a lazy bridge up.
    l.on_timeout(secs(5)).unwrap();
    assert_eq!(
        packets(&mut l.remote_out.split(), V3),
        vec![Packet::PingReq]
    );
    l.on_remote(&mut bytes(&Packet::PingResp, V3), secs(5))
        .unwrap();
    assert_eq!(l.idle_deadline(), Some(t0 + idle));
    // A forwarded message does, and so does its acknowledgement.
    l.on_local(
        &mut bytes(&publish("b/1", QoS::AtLeastOnce, Some(3)), V5),
        secs(7),
    )
    .unwrap();
    assert_eq!(l.idle_deadline(), Some(secs(7) + idle));
    let remote = packets(&mut l.remote_out.split(), V3);
    let Packet::Publish(p) = &remote[0] else {
        panic!("{remote:?}")
    };
    l.on_remote(
        &mut bytes(&ack(AckKind::PubAck, p.packet_id.unwrap()), V3),
        secs(8),
    )
    .unwrap();
    assert_eq!(l.idle_deadline(), Some(secs(8) + idle));
    assert!(l.poll_timeout().is_some_and(|t| t <= secs(8) + idle));
    // Not lazy, or not connected: no idle deadline.
    let mut automatic = s.clone();
    automatic.lazy = None;
    assert_eq!(up(automatic, t0).0.idle_deadline(), None);
    let mut down = Link::new(s, t0);
    down.start(t0);
    assert_eq!(down.idle_deadline(), None, "before CONNACK");
}
