//! Protocol rules at the connection level, with hand-written bytes: what happens before
//! CONNECT, on a second CONNECT, on an unsupported protocol level and on malformed input.
//! Each case also checks that the broker still serves other clients.
#![allow(clippy::unwrap_used)]

mod common;

use common::{BrokerProc, Raw, V4};
use rumqttc::QoS;

/// The broker still routes messages for a healthy pair of clients.
fn still_serving(broker: &BrokerProc) {
    let sub = V4::connect("healthy-sub", broker.port);
    sub.subscribe("health", QoS::AtLeastOnce);
    let publ = V4::connect("healthy-pub", broker.port);
    publ.publish("health", QoS::AtLeastOnce, false, "ok");
    assert_eq!(
        &sub.next_publish().expect("broker still serving").payload[..],
        b"ok"
    );
}

/// [MQTT-3.1.0-1] the first packet must be CONNECT.
#[test]
fn mqtt_3_1_0_1_packet_before_connect_closes() {
    let broker = BrokerProc::start("");
    let mut raw = Raw::connect(broker.port);
    raw.send(&common::publish("t", 0, false, false, 0, b"x"));
    assert!(raw.closed_by_broker());
    still_serving(&broker);
}

/// [MQTT-3.1.0-2] a second CONNECT is a protocol violation.
#[test]
fn mqtt_3_1_0_2_second_connect_closes() {
    let broker = BrokerProc::start("");
    let (mut raw, _, _) = Raw::mqtt_connect(broker.port, "twice", true);
    raw.send(&common::connect_v311("twice", true, 60, None));
    assert!(raw.closed_by_broker());
    still_serving(&broker);
}

/// [MQTT-3.1.2-2] unsupported protocol level: CONNACK 0x01 (3.1.1 framing) for a level
/// below 5, reason 0x84 (5.0 framing) above it, then close.
#[test]
fn mqtt_3_1_2_2_unsupported_protocol_level() {
    let broker = BrokerProc::start("");
    for (level, expected) in [(2u8, vec![0x00, 0x01]), (6, vec![0x00, 0x84, 0x00])] {
        let mut raw = Raw::connect(broker.port);
        let mut c = common::connect_v311("lvl", true, 60, None);
        c[8] = level; // protocol level byte (after 0x10, len, 00 04 'MQTT')
        raw.send(&c);
        let ack = raw.recv().expect("CONNACK");
        assert_eq!(
            (ack.first, ack.body.clone()),
            (0x20, expected),
            "level {level}"
        );
        assert!(raw.closed_by_broker());
    }
    still_serving(&broker);
}

/// [MQTT-3.3.1-4] QoS 3 is malformed: the connection is closed.
#[test]
fn mqtt_3_3_1_4_qos_3_closes() {
    let broker = BrokerProc::start("");
    let (mut raw, _, _) = Raw::mqtt_connect(broker.port, "q3", true);
    raw.send(&common::frame(0x36, &[0, 1, b't', 0, 1, b'x']));
    assert!(raw.closed_by_broker());
    still_serving(&broker);
}

/// [MQTT-3.3.2-2] no wildcards in a PUBLISH topic.
#[test]
fn mqtt_3_3_2_2_wildcard_in_publish_topic_closes() {
    let broker = BrokerProc::start("");
    let (mut raw, _, _) = Raw::mqtt_connect(broker.port, "wild", true);
    raw.send(&common::publish("a/+/b", 0, false, false, 0, b"x"));
    assert!(raw.closed_by_broker());
    still_serving(&broker);
}

/// [MQTT-1.5.5-1] a remaining length of more than 4 bytes is malformed.
#[test]
fn mqtt_1_5_5_1_remaining_length_over_4_bytes_closes() {
    let broker = BrokerProc::start("");
    let (mut raw, _, _) = Raw::mqtt_connect(broker.port, "rl", true);
    raw.send(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]);
    assert!(raw.closed_by_broker());
    still_serving(&broker);
}

/// [MQTT-2.3.1-1] packet identifier 0 in a QoS 1 PUBLISH.
#[test]
fn mqtt_2_3_1_1_packet_id_zero_closes() {
    let broker = BrokerProc::start("");
    let (mut raw, _, _) = Raw::mqtt_connect(broker.port, "pid0", true);
    raw.send(&common::publish("t", 1, false, false, 0, b"x"));
    assert!(raw.closed_by_broker());
    still_serving(&broker);
}

/// [MQTT-1.5.3-2] U+0000 in a topic is malformed.
#[test]
fn mqtt_1_5_3_2_nul_in_topic_closes() {
    let broker = BrokerProc::start("");
    let (mut raw, _, _) = Raw::mqtt_connect(broker.port, "nul", true);
    raw.send(&common::publish("a\0b", 0, false, false, 0, b"x"));
    assert!(raw.closed_by_broker());
    still_serving(&broker);
}

/// [MQTT-1.5.3-1] invalid UTF-8 in a topic is malformed.
#[test]
fn mqtt_1_5_3_1_invalid_utf8_closes() {
    let broker = BrokerProc::start("");
    let (mut raw, _, _) = Raw::mqtt_connect(broker.port, "utf", true);
    raw.send(&common::frame(0x30, &[0, 2, 0xC3, 0x28, b'x']));
    assert!(raw.closed_by_broker());
    still_serving(&broker);
}

/// [MQTT-2.2.2-2] reserved flags of SUBSCRIBE must be 0010.
#[test]
fn mqtt_2_2_2_2_bad_subscribe_flags_close() {
    let broker = BrokerProc::start("");
    let (mut raw, _, _) = Raw::mqtt_connect(broker.port, "flags", true);
    let mut s = common::subscribe(1, &[("t", 0)]);
    s[0] = 0x80;
    raw.send(&s);
    assert!(raw.closed_by_broker());
    still_serving(&broker);
}

/// A malformed packet from one client does not lose the messages queued for another.
#[test]
fn malformed_input_loses_nothing_for_others() {
    let broker = BrokerProc::start("");
    let sub = V4::connect("keeper", broker.port);
    sub.subscribe("keep", QoS::AtLeastOnce);
    let publ = V4::connect("pub", broker.port);
    for i in 0..50 {
        publ.publish("keep", QoS::AtLeastOnce, false, format!("{i}"));
    }
    let (mut bad, _, _) = Raw::mqtt_connect(broker.port, "bad", true);
    bad.send(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]);
    assert!(bad.closed_by_broker());
    for i in 0..50 {
        assert_eq!(
            sub.next_publish().unwrap().payload,
            format!("{i}").into_bytes()
        );
    }
}
