//! Clean and persistent sessions, takeover, client identifiers, redelivery.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{BrokerProc, Raw, V4};
use rumqttc::QoS;

/// Messages for an offline persistent session are queued and delivered on reconnect.
///
/// One shard: with two, the QoS 0 message may still be in the mailbox of the session's
/// old shard when the client reconnects on another one; the session then moves first
/// (control lane) and the message follows it to the live connection, which is allowed
/// for QoS 0 (as if published a moment later; src/broker/cross/handoff.rs). What this test
/// checks, that an offline session does not queue QoS 0, needs the publish to reach the
/// session before the reconnect.
#[test]
fn persistent_session_queues_while_offline() {
    let broker = BrokerProc::start("threads 1");
    let mut opts = common::v4_options("durable", broker.port);
    opts.set_clean_session(false);
    let sub = V4::connect_with(opts.clone());
    sub.subscribe("q/#", QoS::AtLeastOnce);
    sub.disconnect();

    let publ = V4::connect("pub", broker.port);
    for i in 0..5 {
        publ.publish(&format!("q/{i}"), QoS::AtLeastOnce, false, format!("m{i}"));
    }
    // A QoS 0 message is not queued for an offline session (queue_qos0_messages false).
    publ.publish("q/zero", QoS::AtMostOnce, false, "zero");
    publ.publish("q/last", QoS::AtLeastOnce, false, "last");
    publ.wait_for(|ev| match ev {
        rumqttc::Event::Incoming(rumqttc::Packet::PubAck(a)) if a.pkid == 6 => Some(()),
        _ => None,
    })
    .expect("all QoS 1 publishes acknowledged");

    let sub = V4::start(opts);
    let ack = sub.wait_connack();
    assert!(ack.session_present, "session present on reconnect");
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(String::from_utf8(sub.next_publish().unwrap().payload.to_vec()).unwrap());
    }
    assert_eq!(got, vec!["m0", "m1", "m2", "m3", "m4", "last"]);
    let extra = sub.next_publish_within(Duration::from_millis(300));
    assert!(extra.is_none(), "nothing after the queue: {extra:?}");
}

/// A clean session starts empty and is discarded at disconnect.
#[test]
fn clean_session_discards_state() {
    let broker = BrokerProc::start("");
    let (mut raw, present, rc) = Raw::mqtt_connect(broker.port, "c1", false);
    assert_eq!((present, rc), (false, 0));
    raw.subscribe(1, &[("t", 1)]);
    raw.disconnect();
    let (raw, present, _) = Raw::mqtt_connect(broker.port, "c1", true);
    assert!(!present, "clean session: no session present [MQTT-3.2.2-1]");
    raw.disconnect();
    // The clean session was not kept: a persistent reconnect starts fresh.
    let (_raw, present, _) = Raw::mqtt_connect(broker.port, "c1", false);
    assert!(!present);
}

/// A second connection with the same client id takes over; the old one is closed.
#[test]
fn client_id_takeover_closes_the_old_connection() {
    let broker = BrokerProc::start("");
    let (mut first, _, _) = Raw::mqtt_connect(broker.port, "same-id", true);
    let (mut second, _, rc) = Raw::mqtt_connect(broker.port, "same-id", true);
    assert_eq!(rc, 0);
    assert!(
        first.closed_by_broker(),
        "old connection closed on takeover"
    );
    // The new connection works.
    assert_eq!(second.subscribe(1, &[("x", 0)]), vec![0]);
}

/// Zero-length client id: assigned with clean session, rejected (0x02) without [MQTT-3.1.3-8].
#[test]
fn mqtt_3_1_3_8_empty_client_id_needs_clean_session() {
    let broker = BrokerProc::start("");
    let (mut ok, _, rc) = Raw::mqtt_connect(broker.port, "", true);
    assert_eq!(rc, 0, "accepted with clean session");
    assert_eq!(ok.subscribe(1, &[("x", 0)]), vec![0]);
    let (mut bad, _, rc) = Raw::mqtt_connect(broker.port, "", false);
    assert_eq!(rc, 0x02, "identifier rejected");
    assert!(bad.closed_by_broker());
}

/// QoS 2 inbound is exactly-once across a reconnect: the publisher gets PUBREC, loses its
/// connection, reconnects and resends PUBLISH (DUP) then PUBREL: one delivery only.
#[test]
fn qos2_exactly_once_across_publisher_reconnect() {
    let broker = BrokerProc::start("");
    let sub = V4::connect("sub", broker.port);
    sub.subscribe("x1", QoS::ExactlyOnce);

    let (mut publ, _, _) = Raw::mqtt_connect(broker.port, "p-once", false);
    publ.send(&common::publish("x1", 2, false, false, 42, b"payload"));
    assert_eq!(publ.recv().unwrap().first, 0x50, "PUBREC");
    drop(publ); // connection lost before PUBREL

    let (mut publ, present, _) = Raw::mqtt_connect(broker.port, "p-once", false);
    assert!(present);
    publ.send(&common::publish("x1", 2, false, true, 42, b"payload"));
    assert_eq!(publ.recv().unwrap().first, 0x50, "PUBREC again");
    publ.send(&common::ack(0x62, 42));
    let comp = publ.recv().unwrap();
    assert_eq!((comp.first, comp.packet_id()), (0x70, 42));

    assert_eq!(&sub.next_publish().unwrap().payload[..], b"payload");
    assert!(
        sub.next_publish_within(Duration::from_millis(500))
            .is_none(),
        "delivered exactly once"
    );
}

/// Outbound: unacknowledged QoS 1/2 messages are resent with DUP=1 when a persistent
/// session reconnects, and a PUBREC'd one continues with PUBREL [MQTT-4.4.0-1].
#[test]
fn mqtt_4_4_0_1_unacked_messages_are_resent_with_dup() {
    let broker = BrokerProc::start("");
    let (mut sub, _, _) = Raw::mqtt_connect(broker.port, "slow", false);
    assert_eq!(sub.subscribe(1, &[("r/1", 1), ("r/2", 2)]), vec![1, 2]);
    let publ = V4::connect("pub", broker.port);
    publ.publish("r/1", QoS::AtLeastOnce, false, "one");
    publ.publish("r/2", QoS::ExactlyOnce, false, "two");
    publ.publish("r/2", QoS::ExactlyOnce, false, "three");
    let p1 = sub.recv().unwrap();
    let p2 = sub.recv().unwrap();
    let p3 = sub.recv().unwrap();
    let (_, id1, _) = p1.publish_parts();
    let (_, _id2, _) = p2.publish_parts();
    let (_, id3, _) = p3.publish_parts();
    // Acknowledge the third with PUBREC only; leave the first two unacknowledged.
    sub.send(&common::ack(0x50, id3));
    assert_eq!(sub.recv().unwrap().first, 0x62, "PUBREL for the third");
    drop(sub);

    let (mut sub, present, _) = Raw::mqtt_connect(broker.port, "slow", false);
    assert!(present);
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(sub.recv().unwrap());
    }
    let pubs: Vec<_> = seen.iter().filter(|p| p.kind() == 3).collect();
    assert_eq!(pubs.len(), 2, "two PUBLISH resent: {seen:?}");
    for p in &pubs {
        assert_eq!(p.first & 0x08, 0x08, "DUP set on resend");
    }
    let (t, id, payload) = pubs[0].publish_parts();
    assert_eq!(
        (t.as_str(), id, payload.as_slice()),
        ("r/1", id1, &b"one"[..])
    );
    let rel: Vec<_> = seen.iter().filter(|p| p.first == 0x62).collect();
    assert_eq!(rel.len(), 1, "PUBREL resent");
    assert_eq!(rel[0].packet_id(), id3);
}

/// max_queued_messages bounds an offline session's queue.
///
/// One shard, for the reason given at `persistent_session_queues_while_offline`: with two,
/// messages still on their way to the offline session's shard when the client reconnects
/// elsewhere follow the session to its live connection (none lost, none twice) instead of
/// meeting the offline bound.
#[test]
fn offline_queue_is_bounded_by_max_queued_messages() {
    let broker = BrokerProc::start("threads 1\nmax_queued_messages 3");
    let (mut sub, _, _) = Raw::mqtt_connect(broker.port, "bounded", false);
    sub.subscribe(1, &[("b", 1)]);
    sub.disconnect();
    let publ = V4::connect("pub", broker.port);
    for i in 0..10 {
        publ.publish("b", QoS::AtLeastOnce, false, format!("{i}"));
    }
    publ.wait_for(|ev| match ev {
        rumqttc::Event::Incoming(rumqttc::Packet::PubAck(a)) if a.pkid == 10 => Some(()),
        _ => None,
    })
    .unwrap();
    let (mut sub, present, _) = Raw::mqtt_connect(broker.port, "bounded", false);
    assert!(present);
    let mut n = 0;
    while let Some(p) = sub.recv_within(Duration::from_millis(500)) {
        if p.kind() == 3 {
            n += 1;
            let (_, id, _) = p.publish_parts();
            sub.send(&common::ack(0x40, id));
        }
    }
    assert_eq!(n, 3, "only max_queued_messages were kept");
}
