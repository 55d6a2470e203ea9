//! PUBLISH / SUBSCRIBE through a real broker process with rumqttc (MQTT 3.1.1).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{BrokerProc, Raw, V4};
use rumqttc::{QoS, SubscribeReasonCode};

#[test]
fn qos0_qos1_qos2_round_trip() {
    let broker = BrokerProc::start("");
    let sub = V4::connect("sub", broker.port);
    assert_eq!(
        sub.subscribe("a/b", QoS::ExactlyOnce),
        vec![SubscribeReasonCode::Success(QoS::ExactlyOnce)]
    );
    let publ = V4::connect("pub", broker.port);
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        publ.publish("a/b", qos, false, format!("m{i}"));
        let p = sub.next_publish().expect("message delivered");
        assert_eq!(p.topic, "a/b");
        assert_eq!(&p.payload[..], format!("m{i}").as_bytes());
        assert_eq!(p.qos, qos, "delivered at the publish QoS (granted 2)");
        assert!(!p.retain);
    }
}

#[test]
fn qos_is_downgraded_to_the_granted_qos() {
    let broker = BrokerProc::start("");
    let sub = V4::connect("sub", broker.port);
    sub.subscribe("down", QoS::AtMostOnce);
    let publ = V4::connect("pub", broker.port);
    publ.publish("down", QoS::ExactlyOnce, false, "x");
    let p = sub.next_publish().unwrap();
    assert_eq!(p.qos, QoS::AtMostOnce);
}

#[test]
fn wildcards_plus_and_hash() {
    let broker = BrokerProc::start("");
    let sub = V4::connect("sub", broker.port);
    sub.subscribe("sport/+/player1", QoS::AtLeastOnce);
    sub.subscribe("news/#", QoS::AtLeastOnce);
    let publ = V4::connect("pub", broker.port);
    // Only the 2nd, 3rd and 5th match.
    for t in [
        "sport/tennis/player2",
        "sport/tennis/player1",
        "news",
        "other/news",
        "news/a/b/c",
    ] {
        publ.publish(t, QoS::AtLeastOnce, false, t);
    }
    let got: Vec<String> = (0..3).map(|_| sub.next_publish().unwrap().topic).collect();
    assert_eq!(got, vec!["sport/tennis/player1", "news", "news/a/b/c"]);
    assert!(sub
        .next_publish_within(Duration::from_millis(300))
        .is_none());
}

/// [MQTT-4.7.2-1] a leading wildcard does not match topics that start with '$'.
#[test]
fn mqtt_4_7_2_1_wildcards_do_not_match_dollar_topics() {
    let broker = BrokerProc::start("sys_interval 1");
    let sub = V4::connect("sub", broker.port);
    sub.subscribe("#", QoS::AtMostOnce);
    sub.subscribe("+/broker/version", QoS::AtMostOnce);
    let publ = V4::connect("pub", broker.port);
    publ.publish("$private/x", QoS::AtMostOnce, false, "hidden");
    publ.publish("visible", QoS::AtMostOnce, false, "seen");
    let p = sub.next_publish().unwrap();
    assert_eq!(p.topic, "visible");
    // $SYS is published every second; none of it may reach '#' or '+/...'.
    assert!(sub
        .next_publish_within(Duration::from_millis(2500))
        .is_none());
}

/// [MQTT-3.3.5-1] overlapping subscriptions deliver one copy at the highest QoS.
#[test]
fn mqtt_3_3_5_1_overlapping_subscriptions_deliver_one_copy() {
    let broker = BrokerProc::start("");
    let sub = V4::connect("sub", broker.port);
    sub.subscribe("a/#", QoS::AtMostOnce);
    sub.subscribe("a/+", QoS::ExactlyOnce);
    sub.subscribe("a/b", QoS::AtLeastOnce);
    let publ = V4::connect("pub", broker.port);
    publ.publish("a/b", QoS::ExactlyOnce, false, "one");
    let p = sub.next_publish().unwrap();
    assert_eq!(p.qos, QoS::ExactlyOnce);
    assert!(
        sub.next_publish_within(Duration::from_millis(500))
            .is_none(),
        "exactly one copy"
    );
}

#[test]
fn unsubscribe_stops_delivery() {
    let broker = BrokerProc::start("");
    let sub = V4::connect("sub", broker.port);
    sub.subscribe("u/1", QoS::AtLeastOnce);
    sub.client.unsubscribe("u/1").unwrap();
    sub.wait_for(|ev| {
        matches!(ev, rumqttc::Event::Incoming(rumqttc::Packet::UnsubAck(_))).then_some(())
    })
    .expect("UNSUBACK");
    let publ = V4::connect("pub", broker.port);
    publ.publish("u/1", QoS::AtLeastOnce, false, "gone");
    assert!(sub
        .next_publish_within(Duration::from_millis(500))
        .is_none());
}

/// Messages from one publisher arrive in order, at every QoS.
#[test]
fn order_is_kept_per_publisher() {
    let broker = BrokerProc::start("");
    let sub = V4::connect("sub", broker.port);
    sub.subscribe("seq", QoS::AtLeastOnce);
    let publ = V4::connect("pub", broker.port);
    for i in 0..200u32 {
        publ.publish("seq", QoS::AtLeastOnce, false, i.to_be_bytes().to_vec());
    }
    for i in 0..200u32 {
        let p = sub.next_publish().unwrap();
        assert_eq!(&p.payload[..], i.to_be_bytes());
    }
}

/// The raw QoS 2 flow, byte by byte: PUBLISH -> PUBREC, PUBREL -> PUBCOMP, and the
/// subscriber side PUBLISH -> PUBREC -> PUBREL -> PUBCOMP.
#[test]
fn qos2_flow_both_directions() {
    let broker = BrokerProc::start("");
    let (mut sub, _, rc) = Raw::mqtt_connect(broker.port, "rsub", true);
    assert_eq!(rc, 0);
    assert_eq!(sub.subscribe(1, &[("q2", 2)]), vec![2]);
    let (mut publ, _, _) = Raw::mqtt_connect(broker.port, "rpub", true);
    publ.send(&common::publish("q2", 2, false, false, 7, b"exactly"));
    let rec = publ.recv().unwrap();
    assert_eq!((rec.first, rec.packet_id()), (0x50, 7), "PUBREC");
    publ.send(&common::ack(0x62, 7));
    let comp = publ.recv().unwrap();
    assert_eq!((comp.first, comp.packet_id()), (0x70, 7), "PUBCOMP");

    let p = sub.recv().unwrap();
    assert_eq!(p.first & 0xF6, 0x34, "QoS 2 PUBLISH");
    let (topic, id, payload) = p.publish_parts();
    assert_eq!(
        (topic.as_str(), payload.as_slice()),
        ("q2", &b"exactly"[..])
    );
    assert_ne!(id, 0);
    sub.send(&common::ack(0x50, id));
    let rel = sub.recv().unwrap();
    assert_eq!((rel.first, rel.packet_id()), (0x62, id), "PUBREL");
    sub.send(&common::ack(0x70, id));
    // Nothing else arrives: delivered exactly once.
    assert!(sub.recv_within(Duration::from_millis(300)).is_none());
}

/// A duplicate QoS 2 PUBLISH (same packet id, before PUBREL) is not delivered twice.
#[test]
fn qos2_duplicate_publish_is_delivered_once() {
    let broker = BrokerProc::start("");
    let sub = V4::connect("sub", broker.port);
    sub.subscribe("dup", QoS::AtLeastOnce);
    let (mut publ, _, _) = Raw::mqtt_connect(broker.port, "rpub", true);
    publ.send(&common::publish("dup", 2, false, false, 9, b"once"));
    assert_eq!(publ.recv().unwrap().first, 0x50);
    publ.send(&common::publish("dup", 2, false, true, 9, b"once"));
    assert_eq!(publ.recv().unwrap().first, 0x50);
    publ.send(&common::ack(0x62, 9));
    assert_eq!(publ.recv().unwrap().first, 0x70);
    assert_eq!(&sub.next_publish().unwrap().payload[..], b"once");
    assert!(sub
        .next_publish_within(Duration::from_millis(500))
        .is_none());
}
