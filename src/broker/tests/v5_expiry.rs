//! MQTT 5 Message Expiry Interval: what a subscriber receives is what is left of it, a
//! message past it is dropped (and counted) instead of sent, retained messages too.

use std::time::Duration;

use super::harness::{publish, Harness};
use crate::codec::{AckKind, Packet, ProtocolVersion, QoS};
use crate::config::Config;

const V5: ProtocolVersion = ProtocolVersion::V5;

fn expiring(topic: &str, payload: &'static [u8], secs: u32, retain: bool, id: u16) -> Packet {
    let mut p = publish(topic, payload, QoS::AtLeastOnce, retain, Some(id));
    p.properties.message_expiry_interval = Some(secs);
    Packet::Publish(p)
}

#[test]
fn mqtt_3_3_2_6_retained_message_sent_with_the_expiry_left() {
    let mut h = Harness::new(Harness::default_config());
    let p = h.connect("p", V5);
    h.send(p, expiring("r/t", b"kept", 10, true, 1));
    h.advance(Duration::from_secs(4));
    let s = h.connect("s", V5);
    h.subscribe(s, "r/#", QoS::AtLeastOnce);
    let got = h.expect_publish(s);
    assert!(got.retain);
    assert_eq!(got.payload.as_ref(), b"kept");
    assert_eq!(got.properties.message_expiry_interval, Some(6));
}

#[test]
fn mqtt_3_3_2_5_expired_retained_message_not_sent() {
    let mut h = Harness::new(Harness::default_config());
    let p = h.connect("p", V5);
    h.send(p, expiring("r/old", b"gone", 10, true, 1));
    h.send(p, expiring("r/new", b"kept", 100, true, 2));
    h.advance(Duration::from_secs(11));
    let s = h.connect("s", V5);
    h.subscribe(s, "r/#", QoS::AtLeastOnce);
    let got = h.expect_publish(s);
    assert_eq!(got.payload.as_ref(), b"kept");
    assert_eq!(got.properties.message_expiry_interval, Some(89));
    h.assert_idle(s);
    // A 3.1.1 subscriber does not get it either.
    let old = h.connect("old", ProtocolVersion::V311);
    h.subscribe(old, "r/old", QoS::AtLeastOnce);
    h.assert_idle(old);
}

#[test]
fn mqtt_3_3_2_5_message_queued_behind_a_full_window_expires_and_is_counted() {
    let mut h = Harness::new(Config {
        max_inflight_messages: 1,
        ..Harness::default_config()
    });
    let s = h.connect("s", V5);
    h.subscribe(s, "t", QoS::AtLeastOnce);
    let p = h.connect("p", V5);
    h.send(p, expiring("t", b"first", 5, false, 1));
    h.send(p, expiring("t", b"second", 5, false, 2));
    h.send(p, expiring("t", b"third", 100, false, 3));
    let first = h.expect_publish(s);
    assert_eq!(first.payload.as_ref(), b"first");
    h.assert_idle(s); // the window (1) is full
    let dropped = h.broker.stats().publish_dropped;
    h.advance(Duration::from_secs(6));
    h.ack(s, AckKind::PubAck, first.packet_id.unwrap());
    let next = h.expect_publish(s);
    assert_eq!(next.payload.as_ref(), b"third");
    assert_eq!(next.properties.message_expiry_interval, Some(94));
    assert_eq!(h.broker.stats().publish_dropped, dropped + 1);
}

#[test]
fn qos0_delivery_carries_the_expiry_left() {
    let mut h = Harness::new(Harness::default_config());
    let s = h.connect("s", V5);
    h.subscribe(s, "t", QoS::AtMostOnce);
    let p = h.connect("p", V5);
    let mut m = publish("t", b"x", QoS::AtMostOnce, false, None);
    m.properties.message_expiry_interval = Some(30);
    h.send(p, Packet::Publish(m));
    assert_eq!(
        h.expect_publish(s).properties.message_expiry_interval,
        Some(30)
    );
}
