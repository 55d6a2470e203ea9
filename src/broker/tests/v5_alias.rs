//! MQTT 5 topic aliases, both ways: the aliases a client sets (up to `max_topic_alias`)
//! and those the broker assigns to a subscriber that announced a Topic Alias Maximum.

use super::harness::{connect, publish, Harness};
use crate::codec::{AckKind, Packet, ProtocolVersion, Publish, QoS, ReasonCode};
use crate::config::Config;

const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V311;

fn aliased(topic: &str, alias: u16, qos: QoS, id: Option<u16>) -> Packet {
    let mut p = publish(topic, b"x", qos, false, id);
    p.properties.topic_alias = Some(alias);
    Packet::Publish(p)
}

/// A v5 subscriber announcing Topic Alias Maximum `max`.
fn subscriber(h: &mut Harness, id: &str, max: Option<u16>, qos: QoS) -> usize {
    let mut c = connect(id, V5, true);
    c.properties.topic_alias_maximum = max;
    let (conn, ack) = h.connect_with(c);
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    h.subscribe(conn, "#", qos);
    conn
}

fn expect_disconnect(h: &mut Harness, conn: usize, reason: ReasonCode) {
    match h.expect(conn) {
        Packet::Disconnect(d) => assert_eq!(d.reason, reason),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    assert!(h.is_closed(conn));
}

#[test]
fn mqtt_3_2_2_17_connack_topic_alias_maximum_is_max_topic_alias() {
    let mut h = Harness::new(Config {
        max_topic_alias: 3,
        ..Harness::default_config()
    });
    let (_, ack) = h.connect_with(connect("a", V5, true));
    assert_eq!(ack.properties.topic_alias_maximum, Some(3));
    let mut h = Harness::new(Config {
        max_topic_alias: 0,
        ..Harness::default_config()
    });
    let (_, ack) = h.connect_with(connect("a", V5, true));
    assert_eq!(ack.properties.topic_alias_maximum, None);
}

#[test]
fn mqtt_3_3_2_12_inbound_alias_set_then_used_without_topic() {
    let mut h = Harness::new(Harness::default_config());
    let sub = h.connect("s", V311);
    h.subscribe(sub, "a/#", QoS::AtLeastOnce);
    let publisher = h.connect("p", V5);
    h.send(publisher, aliased("a/b", 10, QoS::AtMostOnce, None));
    h.send(publisher, aliased("", 10, QoS::AtLeastOnce, Some(7)));
    assert_eq!(h.expect_ack(publisher, AckKind::PubAck).packet_id, 7);
    // The alias moves to another topic.
    h.send(publisher, aliased("a/c", 10, QoS::AtMostOnce, None));
    h.send(publisher, aliased("", 10, QoS::AtMostOnce, None));
    let topics: Vec<String> = (0..4)
        .map(|_| h.expect_publish(sub).topic.as_str().to_owned())
        .collect();
    assert_eq!(topics, ["a/b", "a/b", "a/c", "a/c"]);
    assert!(!h.is_closed(publisher));
}

#[test]
fn mqtt_3_3_2_8_alias_0_gets_disconnect_0x94() {
    let mut h = Harness::new(Harness::default_config());
    let c = h.connect("p", V5);
    h.send(c, aliased("t", 0, QoS::AtMostOnce, None));
    expect_disconnect(&mut h, c, ReasonCode::TOPIC_ALIAS_INVALID);
}

#[test]
fn mqtt_3_3_2_9_alias_above_maximum_gets_disconnect_0x94() {
    let mut h = Harness::new(Config {
        max_topic_alias: 4,
        ..Harness::default_config()
    });
    let c = h.connect("p", V5);
    h.send(c, aliased("t", 4, QoS::AtMostOnce, None));
    assert!(!h.is_closed(c));
    h.send(c, aliased("t", 5, QoS::AtMostOnce, None));
    expect_disconnect(&mut h, c, ReasonCode::TOPIC_ALIAS_INVALID);
}

#[test]
fn unknown_alias_without_topic_gets_disconnect_0x82() {
    let mut h = Harness::new(Harness::default_config());
    let c = h.connect("p", V5);
    h.send(c, aliased("t", 1, QoS::AtMostOnce, None));
    h.send(c, aliased("", 2, QoS::AtMostOnce, None));
    expect_disconnect(&mut h, c, ReasonCode::PROTOCOL_ERROR);
}

#[test]
fn mqtt_3_3_2_7_inbound_aliases_end_with_the_connection() {
    let mut h = Harness::new(Harness::default_config());
    let mut c = connect("p", V5, false);
    c.properties.session_expiry_interval = Some(60);
    let (first, _) = h.connect_with(c.clone());
    h.send(first, aliased("t", 1, QoS::AtMostOnce, None));
    h.drop_conn(first);
    let (second, ack) = h.connect_with(c);
    assert!(ack.session_present);
    h.send(second, aliased("", 1, QoS::AtMostOnce, None));
    expect_disconnect(&mut h, second, ReasonCode::PROTOCOL_ERROR);
}

/// (topic, alias) of the next PUBLISH `conn` received.
fn next(h: &mut Harness, conn: usize) -> (String, Option<u16>) {
    let p: Publish = h.expect_publish(conn);
    (p.topic.as_str().to_owned(), p.properties.topic_alias)
}

#[test]
fn mqtt_3_3_2_11_outbound_alias_on_second_delivery_then_topic_omitted() {
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        let mut h = Harness::new(Harness::default_config());
        let sub = subscriber(&mut h, "s", Some(2), qos);
        let publisher = h.connect("p", V311);
        for i in 0..4 {
            h.publish(publisher, "hot/topic", b"x", qos, false, Some(i + 1));
        }
        let mut got = Vec::new();
        for i in 0..4 {
            got.push(next(&mut h, sub));
            if qos == QoS::AtLeastOnce {
                h.ack(sub, AckKind::PubAck, i + 1);
            }
        }
        let t = "hot/topic".to_owned();
        assert_eq!(
            got,
            [
                (t.clone(), None),
                (t, Some(1)),
                (String::new(), Some(1)),
                (String::new(), Some(1))
            ],
            "{qos:?}"
        );
    }
}

#[test]
fn mqtt_3_1_2_27_no_aliases_without_topic_alias_maximum() {
    let mut h = Harness::new(Harness::default_config());
    let absent = subscriber(&mut h, "s1", None, QoS::AtMostOnce);
    let zero = subscriber(&mut h, "s2", Some(0), QoS::AtMostOnce);
    let old = h.connect("s3", V311);
    h.subscribe(old, "#", QoS::AtMostOnce);
    let publisher = h.connect("p", V311);
    for _ in 0..3 {
        h.publish(publisher, "t", b"x", QoS::AtMostOnce, false, None);
    }
    for conn in [absent, zero, old] {
        for _ in 0..3 {
            assert_eq!(next(&mut h, conn), ("t".to_owned(), None));
        }
    }
}

#[test]
fn mqtt_3_1_2_26_outbound_aliases_stay_within_client_maximum() {
    let mut h = Harness::new(Harness::default_config());
    let sub = subscriber(&mut h, "s", Some(2), QoS::AtMostOnce);
    let publisher = h.connect("p", V311);
    let topics = ["a", "b", "c", "d"];
    let mut known: std::collections::HashMap<u16, String> = Default::default();
    for round in 0..20 {
        for t in &topics[..=(round % 4)] {
            h.publish(publisher, t, b"x", QoS::AtMostOnce, false, None);
            let (topic, alias) = next(&mut h, sub);
            // A client following the spec resolves every PUBLISH to the right topic.
            let resolved = match alias {
                Some(n) => {
                    assert!((1..=2).contains(&n), "alias {n} above the maximum 2");
                    if !topic.is_empty() {
                        known.insert(n, topic.clone());
                    }
                    known
                        .get(&n)
                        .cloned()
                        .expect("alias used before it was set")
                }
                None => topic,
            };
            assert_eq!(resolved, *t);
        }
    }
}

#[test]
fn mqtt_3_3_2_7_outbound_aliases_restart_on_a_new_connection() {
    let mut h = Harness::new(Harness::default_config());
    let mut c = connect("s", V5, false);
    c.properties.topic_alias_maximum = Some(5);
    c.properties.session_expiry_interval = Some(60);
    let (sub, _) = h.connect_with(c.clone());
    h.subscribe(sub, "t", QoS::AtMostOnce);
    let publisher = h.connect("p", V311);
    for _ in 0..3 {
        h.publish(publisher, "t", b"x", QoS::AtMostOnce, false, None);
    }
    assert_eq!(next(&mut h, sub).1, None);
    assert_eq!(next(&mut h, sub).1, Some(1));
    assert_eq!(next(&mut h, sub), (String::new(), Some(1)));
    h.drop_conn(sub);
    let (sub, _) = h.connect_with(c);
    for _ in 0..2 {
        h.publish(publisher, "t", b"x", QoS::AtMostOnce, false, None);
    }
    assert_eq!(next(&mut h, sub), ("t".to_owned(), None));
    assert_eq!(next(&mut h, sub), ("t".to_owned(), Some(1)));
}

#[test]
fn outbound_aliases_save_the_topic_bytes_in_fan_out() {
    let topic = "sensors/building-42/floor-3/room-17/temperature";
    let bytes = |max: Option<u16>| {
        let mut h = Harness::new(Harness::default_config());
        let sub = subscriber(&mut h, "s", max, QoS::AtMostOnce);
        let publisher = h.connect("p", V311);
        let before = h.clients[&sub].bytes;
        for _ in 0..100 {
            h.publish(publisher, topic, b"21.5", QoS::AtMostOnce, false, None);
        }
        for _ in 0..100 {
            let p = h.expect_publish(sub);
            assert_eq!(p.payload.as_ref(), b"21.5");
        }
        h.clients[&sub].bytes - before
    };
    let plain = bytes(None);
    let with_aliases = bytes(Some(10));
    // Without: 2 + 2 + topic + 1 (no properties) + 4 per message. With: the first
    // message as before, the second adds the alias (3 bytes), the other 98 send an
    // empty topic and the alias.
    let per = 2 + 2 + topic.len() + 1 + 4;
    assert_eq!(plain, 100 * per);
    assert_eq!(with_aliases, 2 * per + 3 + 98 * (2 + 2 + 4 + 4));
}

/// One QoS 0 fan-out to subscribers in every alias state: the frame shared by those
/// that use the same alias (encoded once per fan-out) never reaches one whose table
/// says otherwise. `a1` and `a2` bind "t/x" to alias 1, `b` to alias 3 (1 and 2 are
/// taken), `n` has no aliases, `v3` is MQTT 3.1.1.
#[test]
fn qos0_fan_out_shares_frames_per_alias_only() {
    let mut h = Harness::new(Harness::default_config());
    let publisher = h.connect("p", V311);
    let b = subscriber(&mut h, "b", Some(4), QoS::AtMostOnce);
    for topic in ["t/one", "t/two"] {
        for _ in 0..2 {
            h.publish(publisher, topic, b"o", QoS::AtMostOnce, false, None);
        }
    }
    for want in [
        ("t/one", None),
        ("t/one", Some(1)),
        ("t/two", None),
        ("t/two", Some(2)),
    ] {
        assert_eq!(next(&mut h, b), (want.0.to_owned(), want.1));
    }
    let a1 = subscriber(&mut h, "a1", Some(4), QoS::AtMostOnce);
    let a2 = subscriber(&mut h, "a2", Some(4), QoS::AtMostOnce);
    let n = subscriber(&mut h, "n", None, QoS::AtMostOnce);
    let v3 = h.connect("v3", V311);
    h.subscribe(v3, "#", QoS::AtMostOnce);
    // First delivery: the topic; second: topic + alias (bind); third: alias only.
    for payload in [b"1", b"2", b"3"] {
        h.publish(publisher, "t/x", payload, QoS::AtMostOnce, false, None);
    }
    let t = || "t/x".to_owned();
    for (s, alias) in [(a1, 1), (a2, 1), (b, 3)] {
        let got: Vec<_> = (0..3).map(|_| next(&mut h, s)).collect();
        let want = [
            (t(), None),
            (t(), Some(alias)),
            (String::new(), Some(alias)),
        ];
        assert_eq!(got, want, "subscriber {s}");
    }
    for s in [n, v3] {
        let got: Vec<_> = (0..3).map(|_| next(&mut h, s)).collect();
        assert_eq!(
            got,
            [(t(), None), (t(), None), (t(), None)],
            "subscriber {s}"
        );
    }
}
