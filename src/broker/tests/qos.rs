//! Scenario tests: routing, wildcards, overlapping subscriptions, QoS 1 and 2 in both
//! directions, retained messages, v5 reason codes and properties.

use bytes::Bytes;

use super::harness::{connect, publish, Harness};
use crate::codec::{
    AckKind, ByteStr, Packet, ProtocolVersion, QoS, ReasonCode, SubscriptionOptions,
};
use crate::config::Config;

const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

#[test]
fn qos0_routes_with_wildcards() {
    let mut h = Harness::new(Harness::default_config());
    let s1 = h.connect("s1", V311);
    let s2 = h.connect("s2", V311);
    let s3 = h.connect("s3", V311);
    assert_eq!(
        h.subscribe(s1, "a/+/c", QoS::AtMostOnce).reasons[0],
        ReasonCode(0)
    );
    h.subscribe(s2, "a/#", QoS::AtMostOnce);
    h.subscribe(s3, "x/y", QoS::AtMostOnce);
    let p = h.connect("p", V311);
    h.publish(p, "a/b/c", b"hello", QoS::AtMostOnce, false, None);
    let m1 = h.expect_publish(s1);
    assert_eq!(
        (m1.topic.as_str(), m1.payload.as_ref(), m1.qos),
        ("a/b/c", &b"hello"[..], QoS::AtMostOnce)
    );
    assert_eq!(h.expect_publish(s2).payload.as_ref(), b"hello");
    h.assert_idle(s3);
    h.assert_idle(p);
    assert_eq!(h.broker.stats().publish_sent, 2);
}

#[test]
fn qos0_fanout_shares_one_frame() {
    let mut h = Harness::new(Harness::default_config());
    let subs: Vec<_> = (0..3).map(|i| h.connect(&format!("s{i}"), V311)).collect();
    for &s in &subs {
        h.subscribe(s, "t", QoS::AtMostOnce);
    }
    let p = h.connect("p", V311);
    // Route without draining so the output queues can be compared.
    let mut buf = bytes::BytesMut::new();
    crate::codec::encode(
        &Packet::Publish(publish("t", b"abc", QoS::AtMostOnce, false, None)),
        V311,
        &mut buf,
    )
    .unwrap();
    h.broker.on_read(p, &mut buf, h.now);
    let mut ptrs = Vec::new();
    for &s in &subs {
        let out = h.broker.output(s).unwrap();
        let mut iov = [std::io::IoSlice::new(&[]); 4];
        let n = out.io_slices(&mut iov);
        assert_eq!(n, 1);
        assert_eq!(&*iov[0], &[0x30, 6, 0, 1, b't', b'a', b'b', b'c']);
        ptrs.push(iov[0].as_ptr() as usize);
    }
    assert!(ptrs.windows(2).all(|w| w[0] == w[1]), "one shared frame");
}

#[test]
fn mqtt_4_7_2_1_sys_topics_not_matched_by_leading_wildcard() {
    let mut h = Harness::new(Harness::default_config());
    let all = h.connect("all", V311);
    h.subscribe(all, "#", QoS::AtMostOnce);
    let plus = h.connect("plus", V311);
    h.subscribe(plus, "+/x", QoS::AtMostOnce);
    let sys = h.connect("sys", V311);
    // Any '$' topic; clients may not publish to $SYS itself (see auth).
    h.subscribe(sys, "$app/#", QoS::AtMostOnce);
    let p = h.connect("p", V311);
    h.publish(p, "$app/x", b"1", QoS::AtMostOnce, false, None);
    h.assert_idle(all);
    h.assert_idle(plus);
    assert_eq!(h.expect_publish(sys).topic.as_str(), "$app/x");
}

#[test]
fn mqtt_3_3_5_1_overlapping_subscriptions_one_copy_highest_qos() {
    let mut h = Harness::new(Harness::default_config());
    let s = h.connect("s", V311);
    h.subscribe(s, "a/#", QoS::AtMostOnce);
    h.subscribe(s, "a/+", QoS::ExactlyOnce);
    h.subscribe(s, "a/b", QoS::AtLeastOnce);
    let p = h.connect("p", V311);
    h.publish(p, "a/b", b"x", QoS::ExactlyOnce, false, Some(7));
    let m = h.expect_publish(s);
    assert_eq!(m.qos, QoS::ExactlyOnce);
    h.assert_idle(s);
}

#[test]
fn overlapping_subscriptions_v5_carry_every_subscription_identifier() {
    let mut h = Harness::new(Harness::default_config());
    let s = h.connect("s", V5);
    let o = SubscriptionOptions {
        qos: QoS::AtMostOnce,
        ..Default::default()
    };
    h.subscribe_opts(s, "a/#", o, Some(3));
    h.subscribe_opts(s, "a/b", o, Some(9));
    let p = h.connect("p", V5);
    h.publish(p, "a/b", b"x", QoS::AtMostOnce, false, None);
    let m = h.expect_publish(s);
    let mut ids = m.properties.subscription_identifiers.to_vec();
    ids.sort_unstable();
    assert_eq!(ids, [3, 9]);
    h.assert_idle(s);
}

#[test]
fn mqtt_3_8_4_6_delivery_qos_is_minimum() {
    let mut h = Harness::new(Harness::default_config());
    let s = h.connect("s", V311);
    h.subscribe(s, "t", QoS::AtLeastOnce);
    let p = h.connect("p", V311);
    h.publish(p, "t", b"x", QoS::ExactlyOnce, false, Some(1));
    assert_eq!(h.expect_ack(p, AckKind::PubRec).packet_id, 1);
    let m = h.expect_publish(s);
    assert_eq!(m.qos, QoS::AtLeastOnce);
    h.publish(p, "t", b"y", QoS::AtMostOnce, false, None);
    assert_eq!(h.expect_publish(s).qos, QoS::AtMostOnce);
}

#[test]
fn qos1_both_directions() {
    let mut h = Harness::new(Harness::default_config());
    let s = h.connect("s", V311);
    h.subscribe(s, "t", QoS::AtLeastOnce);
    let p = h.connect("p", V311);
    h.publish(p, "t", b"one", QoS::AtLeastOnce, false, Some(10));
    let ack = h.expect_ack(p, AckKind::PubAck);
    assert_eq!((ack.packet_id, ack.reason), (10, ReasonCode::SUCCESS));
    let m = h.expect_publish(s);
    assert_eq!(m.qos, QoS::AtLeastOnce);
    assert!(!m.dup);
    let id = m.packet_id.unwrap();
    assert_ne!(id, 0);
    h.ack(s, AckKind::PubAck, id);
    h.assert_idle(s);
    assert_eq!(
        h.broker
            .sessions
            .iter()
            .map(|(_, s)| s.session.inflight_len())
            .sum::<usize>(),
        0
    );
}

#[test]
fn qos2_inbound_delivers_once_and_completes() {
    let mut h = Harness::new(Harness::default_config());
    let s = h.connect("s", V311);
    h.subscribe(s, "t", QoS::AtMostOnce);
    let p = h.connect("p", V311);
    h.publish(p, "t", b"x", QoS::ExactlyOnce, false, Some(5));
    assert_eq!(h.expect_ack(p, AckKind::PubRec).packet_id, 5);
    assert_eq!(h.expect_publish(s).payload.as_ref(), b"x");
    // A duplicate before PUBREL is acknowledged but not delivered again [MQTT-4.3.3-10].
    let mut dup = publish("t", b"x", QoS::ExactlyOnce, false, Some(5));
    dup.dup = true;
    h.send(p, Packet::Publish(dup));
    assert_eq!(h.expect_ack(p, AckKind::PubRec).packet_id, 5);
    h.assert_idle(s);
    h.ack(p, AckKind::PubRel, 5);
    let comp = h.expect_ack(p, AckKind::PubComp);
    assert_eq!((comp.packet_id, comp.reason), (5, ReasonCode::SUCCESS));
    // After PUBREL the id is free: a new message with it is delivered.
    h.publish(p, "t", b"y", QoS::ExactlyOnce, false, Some(5));
    h.expect_ack(p, AckKind::PubRec);
    assert_eq!(h.expect_publish(s).payload.as_ref(), b"y");
}

#[test]
fn qos2_outbound_flow() {
    let mut h = Harness::new(Harness::default_config());
    let s = h.connect("s", V311);
    h.subscribe(s, "t", QoS::ExactlyOnce);
    let p = h.connect("p", V311);
    h.publish(p, "t", b"x", QoS::ExactlyOnce, false, Some(1));
    let m = h.expect_publish(s);
    assert_eq!(m.qos, QoS::ExactlyOnce);
    let id = m.packet_id.unwrap();
    h.ack(s, AckKind::PubRec, id);
    assert_eq!(h.expect_ack(s, AckKind::PubRel).packet_id, id);
    h.ack(s, AckKind::PubComp, id);
    h.assert_idle(s);
    assert_eq!(
        h.broker
            .sessions
            .iter()
            .map(|(_, s)| s.session.inflight_len())
            .sum::<usize>(),
        0
    );
}

#[test]
fn v5_puback_0x10_when_no_matching_subscribers() {
    let mut h = Harness::new(Harness::default_config());
    let p = h.connect("p", V5);
    h.publish(p, "nobody", b"x", QoS::AtLeastOnce, false, Some(1));
    assert_eq!(
        h.expect_ack(p, AckKind::PubAck).reason,
        ReasonCode::NO_MATCHING_SUBSCRIBERS
    );
    h.publish(p, "nobody", b"x", QoS::ExactlyOnce, false, Some(2));
    assert_eq!(
        h.expect_ack(p, AckKind::PubRec).reason,
        ReasonCode::NO_MATCHING_SUBSCRIBERS
    );
    // 3.1.1 acks carry no reason.
    let p3 = h.connect("p3", V311);
    h.publish(p3, "nobody", b"x", QoS::AtLeastOnce, false, Some(1));
    assert_eq!(
        h.expect_ack(p3, AckKind::PubAck).reason,
        ReasonCode::SUCCESS
    );
}

#[test]
fn v5_properties_forwarded_unchanged() {
    let mut h = Harness::new(Harness::default_config());
    let s = h.connect("s", V5);
    h.subscribe(s, "t", QoS::AtLeastOnce);
    let p = h.connect("p", V5);
    let mut msg = publish("t", b"x", QoS::AtLeastOnce, false, Some(1));
    msg.properties.user_properties = vec![
        (ByteStr::from("k"), ByteStr::from("1")),
        (ByteStr::from("k"), ByteStr::from("2")),
    ];
    msg.properties.content_type = Some(ByteStr::from("text/plain"));
    msg.properties.response_topic = Some(ByteStr::from("reply"));
    msg.properties.correlation_data = Some(Bytes::from_static(b"cd"));
    msg.properties.payload_format_indicator = Some(1);
    msg.properties.message_expiry_interval = Some(100);
    h.send(p, Packet::Publish(msg.clone()));
    let m = h.expect_publish(s);
    assert_eq!(m.properties, msg.properties);
}

#[test]
fn mqtt_3_8_3_3_no_local() {
    let mut h = Harness::new(Harness::default_config());
    let c = h.connect("c", V5);
    let o = SubscriptionOptions {
        qos: QoS::AtMostOnce,
        no_local: true,
        ..Default::default()
    };
    h.subscribe_opts(c, "t", o, None);
    h.publish(c, "t", b"x", QoS::AtMostOnce, false, None);
    h.assert_idle(c);
}

#[test]
fn retained_set_replace_delete() {
    let mut h = Harness::new(Harness::default_config());
    let p = h.connect("p", V311);
    h.publish(p, "r/1", b"first", QoS::AtMostOnce, true, None);
    h.publish(p, "r/1", b"second", QoS::AtMostOnce, true, None);
    h.publish(p, "r/2", b"other", QoS::AtLeastOnce, true, Some(1));
    h.expect_ack(p, AckKind::PubAck);
    assert_eq!(h.broker.stats().retained, 2);
    let s = h.connect("s", V311);
    h.subscribe(s, "r/1", QoS::AtLeastOnce);
    let m = h.expect_publish(s);
    assert!(m.retain, "[MQTT-3.3.1-8] retained delivery has RETAIN set");
    assert_eq!(m.payload.as_ref(), b"second");
    assert_eq!(m.qos, QoS::AtMostOnce);
    h.assert_idle(s);
    // Empty payload deletes [MQTT-3.3.1-10].
    h.publish(p, "r/1", b"", QoS::AtMostOnce, true, None);
    // The delete itself is forwarded to current subscribers (retain cleared in 3.1.1).
    let del = h.expect_publish(s);
    assert!(!del.retain && del.payload.is_empty());
    assert_eq!(h.broker.stats().retained, 1);
    let s2 = h.connect("s2", V311);
    h.subscribe(s2, "r/#", QoS::AtLeastOnce);
    let m = h.expect_publish(s2);
    assert_eq!(
        (m.payload.as_ref(), m.qos),
        (&b"other"[..], QoS::AtLeastOnce)
    );
    h.assert_idle(s2);
}

#[test]
fn mqtt_3_3_1_9_live_forward_clears_retain_v311() {
    let mut h = Harness::new(Harness::default_config());
    let s = h.connect("s", V311);
    h.subscribe(s, "t", QoS::AtMostOnce);
    let p = h.connect("p", V311);
    h.publish(p, "t", b"x", QoS::AtMostOnce, true, None);
    assert!(!h.expect_publish(s).retain);
}

#[test]
fn v5_retain_as_published_and_retain_handling() {
    let mut h = Harness::new(Harness::default_config());
    let p = h.connect("p", V5);
    h.publish(p, "t", b"kept", QoS::AtMostOnce, true, None);
    let s = h.connect("s", V5);
    let rap = SubscriptionOptions {
        qos: QoS::AtMostOnce,
        retain_as_published: true,
        retain_handling: 2,
        ..Default::default()
    };
    h.subscribe_opts(s, "t", rap, None);
    h.assert_idle(s); // retain handling 2: no retained on subscribe
    h.publish(p, "t", b"live", QoS::AtMostOnce, true, None);
    assert!(h.expect_publish(s).retain);
    // Retain handling 1: only for a new subscription.
    let once = SubscriptionOptions {
        retain_handling: 1,
        ..Default::default()
    };
    let s2 = h.connect("s2", V5);
    h.subscribe_opts(s2, "t", once, None);
    assert_eq!(h.expect_publish(s2).payload.as_ref(), b"live");
    h.subscribe_opts(s2, "t", once, None);
    h.assert_idle(s2);
}

#[test]
fn v5_receive_maximum_exceeded_gets_disconnect_0x93() {
    let config = Config {
        max_inflight_messages: 2,
        ..Harness::default_config()
    };
    let mut h = Harness::new(config);
    let p = h.connect("p", V5);
    for id in 1..=2 {
        h.publish(p, "t", b"x", QoS::ExactlyOnce, false, Some(id));
        h.expect_ack(p, AckKind::PubRec);
    }
    h.publish(p, "t", b"x", QoS::ExactlyOnce, false, Some(3));
    match h.expect(p) {
        Packet::Disconnect(d) => assert_eq!(d.reason, ReasonCode::RECEIVE_MAXIMUM_EXCEEDED),
        other => panic!("{other:?}"),
    }
    assert!(h.is_closed(p));
}

#[test]
fn mqtt_3_1_2_25_packet_larger_than_client_maximum_is_dropped() {
    let mut h = Harness::new(Harness::default_config());
    let mut c = connect("s", V5, true);
    c.properties.maximum_packet_size = Some(20);
    let (s, _) = h.connect_with(c);
    h.subscribe(s, "t", QoS::AtLeastOnce);
    let p = h.connect("p", V5);
    h.publish(
        p,
        "t",
        b"this payload is far too long",
        QoS::AtMostOnce,
        false,
        None,
    );
    h.publish(
        p,
        "t",
        b"this payload is far too long",
        QoS::AtLeastOnce,
        false,
        Some(1),
    );
    h.expect_ack(p, AckKind::PubAck);
    h.publish(p, "t", b"ok", QoS::AtLeastOnce, false, Some(2));
    h.expect_ack(p, AckKind::PubAck);
    assert_eq!(h.expect_publish(s).payload.as_ref(), b"ok");
    h.assert_idle(s);
    assert_eq!(h.broker.stats().publish_dropped, 2);
}

#[test]
fn unsubscribe_stops_delivery_v5_reason_codes() {
    let mut h = Harness::new(Harness::default_config());
    let s = h.connect("s", V5);
    h.subscribe(s, "t", QoS::AtMostOnce);
    h.send(
        s,
        Packet::Unsubscribe(crate::codec::Unsubscribe {
            packet_id: 2,
            filters: smallvec::smallvec![ByteStr::from("t"), ByteStr::from("never")],
            properties: Default::default(),
        }),
    );
    match h.expect(s) {
        Packet::UnsubAck(a) => {
            assert_eq!(a.packet_id, 2);
            assert_eq!(
                a.reasons.to_vec(),
                [ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED]
            );
        }
        other => panic!("{other:?}"),
    }
    let p = h.connect("p", V5);
    h.publish(p, "t", b"x", QoS::AtMostOnce, false, None);
    h.assert_idle(s);
}

#[test]
fn inject_routes_like_a_client() {
    let mut h = Harness::new(Harness::default_config());
    let s = h.connect("s", V311);
    h.subscribe(s, "in", QoS::AtLeastOnce);
    h.broker
        .inject(publish("in", b"x", QoS::AtLeastOnce, false, Some(1)), h.now);
    h.drive();
    let m = h.expect_publish(s);
    assert_eq!((m.payload.as_ref(), m.qos), (&b"x"[..], QoS::AtLeastOnce));
}

#[test]
fn qos1_header_template_patched_per_subscriber() {
    static BIG: [u8; 300] = [7; 300];
    let mut h = Harness::new(Harness::default_config());
    let s3 = h.connect("s3", V311);
    h.subscribe(s3, "t", QoS::AtLeastOnce);
    let s5 = h.connect("s5", V5);
    let o = SubscriptionOptions {
        qos: QoS::ExactlyOnce,
        ..Default::default()
    };
    h.subscribe_opts(s5, "t", o, Some(42));
    let p = h.connect("p", V5);
    // Bump s3's packet id counter so the two subscribers use different ids.
    h.publish(p, "t", b"warm", QoS::AtLeastOnce, false, Some(99));
    let w = h.expect_publish(s3);
    h.ack(s3, AckKind::PubAck, w.packet_id.unwrap());
    let w5 = h.expect_publish(s5);
    assert_eq!(w5.qos, QoS::AtLeastOnce);
    h.ack(s5, AckKind::PubAck, w5.packet_id.unwrap());
    h.publish(p, "t", &BIG, QoS::ExactlyOnce, true, Some(1000));
    let m3 = h.expect_publish(s3);
    assert_eq!(
        (m3.qos, m3.packet_id, m3.retain, m3.payload.len()),
        (QoS::AtLeastOnce, Some(2), false, 300)
    );
    let m5 = h.expect_publish(s5);
    assert_eq!((m5.qos, m5.packet_id), (QoS::ExactlyOnce, Some(2)));
    assert_eq!(m5.properties.subscription_identifiers.to_vec(), [42]);
    assert_eq!(m5.payload.as_ref(), &BIG[..]);
}
