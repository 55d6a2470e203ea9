//! Scenario tests: wills, persistent sessions and their queues, DUP resend and QoS 2
//! exactly-once across reconnects, the inflight window, back-pressure, expiry, $SYS.

use std::time::Duration;

use super::harness::{connect, publish, will, Harness};
use crate::codec::{AckKind, ByteStr, Disconnect, Packet, ProtocolVersion, QoS, ReasonCode};
use crate::config::Config;

const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

fn disconnect(h: &mut Harness, conn: usize, reason: ReasonCode) {
    h.send(
        conn,
        Packet::Disconnect(Disconnect {
            reason,
            properties: Default::default(),
        }),
    );
    assert!(h.is_closed(conn));
}

#[test]
fn will_published_on_socket_close_with_qos_and_retain() {
    let mut h = Harness::new(Harness::default_config());
    let w = h.connect("w", V311);
    h.subscribe(w, "will/#", QoS::AtLeastOnce);
    let mut c = connect("c", V311, true);
    c.will = Some(will("will/c", b"bye", QoS::AtLeastOnce, true));
    let (conn, _) = h.connect_with(c);
    h.drop_conn(conn);
    let m = h.expect_publish(w);
    assert_eq!((m.payload.as_ref(), m.qos), (&b"bye"[..], QoS::AtLeastOnce));
    // Retained: a later subscriber gets it.
    let late = h.connect("late", V311);
    h.subscribe(late, "will/c", QoS::AtMostOnce);
    let r = h.expect_publish(late);
    assert!(r.retain);
    assert_eq!(r.payload.as_ref(), b"bye");
}

#[test]
fn mqtt_3_1_2_10_no_will_on_disconnect() {
    let mut h = Harness::new(Harness::default_config());
    let w = h.connect("w", V311);
    h.subscribe(w, "will", QoS::AtMostOnce);
    let mut c = connect("c", V311, true);
    c.will = Some(will("will", b"bye", QoS::AtMostOnce, false));
    let (conn, _) = h.connect_with(c);
    disconnect(&mut h, conn, ReasonCode::NORMAL_DISCONNECTION);
    h.drop_conn(conn);
    h.assert_idle(w);
}

#[test]
fn v5_disconnect_with_will_0x04_publishes_it() {
    let mut h = Harness::new(Harness::default_config());
    let w = h.connect("w", V5);
    h.subscribe(w, "will", QoS::AtMostOnce);
    let mut c = connect("c", V5, true);
    c.will = Some(will("will", b"bye", QoS::AtMostOnce, false));
    let (conn, _) = h.connect_with(c);
    disconnect(&mut h, conn, ReasonCode::DISCONNECT_WITH_WILL);
    assert_eq!(h.expect_publish(w).payload.as_ref(), b"bye");
}

#[test]
fn v5_will_delay_interval() {
    let mut h = Harness::new(Harness::default_config());
    let w = h.connect("w", V5);
    h.subscribe(w, "will", QoS::AtMostOnce);
    let mut c = connect("c", V5, false);
    c.properties.session_expiry_interval = Some(3600);
    let mut wl = will("will", b"late", QoS::AtMostOnce, false);
    wl.properties.will_delay_interval = Some(5);
    c.will = Some(wl);
    let (conn, _) = h.connect_with(c.clone());
    h.drop_conn(conn);
    h.advance(Duration::from_secs(4));
    h.assert_idle(w);
    h.advance(Duration::from_secs(2));
    let m = h.expect_publish(w);
    assert_eq!(m.payload.as_ref(), b"late");
    assert_eq!(m.properties.will_delay_interval, None);
    // Reconnecting before the delay cancels it [MQTT-3.1.3-9].
    let (conn, _) = h.connect_with(c.clone());
    h.drop_conn(conn);
    h.advance(Duration::from_secs(2));
    let (_again, ack) = h.connect_with(c);
    assert!(ack.session_present);
    h.advance(Duration::from_secs(10));
    h.assert_idle(w);
}

#[test]
fn will_sent_at_session_end_when_before_will_delay() {
    let mut h = Harness::new(Harness::default_config());
    let w = h.connect("w", V5);
    h.subscribe(w, "will", QoS::AtMostOnce);
    let mut c = connect("c", V5, false).tap_expiry(3);
    let mut wl = will("will", b"end", QoS::AtMostOnce, false);
    wl.properties.will_delay_interval = Some(60);
    c.will = Some(wl);
    let (conn, _) = h.connect_with(c);
    h.drop_conn(conn);
    h.advance(Duration::from_secs(2));
    h.assert_idle(w);
    h.advance(Duration::from_secs(2));
    assert_eq!(h.expect_publish(w).payload.as_ref(), b"end");
}

#[test]
fn persistent_session_queues_qos1_not_qos0() {
    let mut h = Harness::new(Harness::default_config());
    let (s, ack) = h.connect_with(connect("s", V311, false));
    assert!(!ack.session_present);
    h.subscribe(s, "t", QoS::AtLeastOnce);
    disconnect(&mut h, s, ReasonCode::NORMAL_DISCONNECTION);
    let p = h.connect("p", V311);
    h.publish(p, "t", b"q1", QoS::AtLeastOnce, false, Some(1));
    h.publish(p, "t", b"q0", QoS::AtMostOnce, false, None);
    h.publish(p, "t", b"q1b", QoS::AtLeastOnce, false, Some(2));
    let (s, ack) = h.connect_with(connect("s", V311, false));
    assert!(ack.session_present, "[MQTT-3.2.2-2]");
    assert_eq!(h.expect_publish(s).payload.as_ref(), b"q1");
    assert_eq!(h.expect_publish(s).payload.as_ref(), b"q1b");
    h.assert_idle(s);
    // Subscriptions survived too.
    h.publish(p, "t", b"live", QoS::AtMostOnce, false, None);
    assert_eq!(h.expect_publish(s).payload.as_ref(), b"live");
}

#[test]
fn queue_qos0_messages_option() {
    let config = Config {
        queue_qos0_messages: true,
        ..Harness::default_config()
    };
    let mut h = Harness::new(config);
    let (s, _) = h.connect_with(connect("s", V311, false));
    h.subscribe(s, "t", QoS::AtLeastOnce);
    h.drop_conn(s);
    let p = h.connect("p", V311);
    h.publish(p, "t", b"q0", QoS::AtMostOnce, false, None);
    let (s, _) = h.connect_with(connect("s", V311, false));
    let m = h.expect_publish(s);
    assert_eq!((m.payload.as_ref(), m.qos), (&b"q0"[..], QoS::AtMostOnce));
}

#[test]
fn mqtt_4_4_0_1_unacknowledged_publish_resent_with_dup() {
    let mut h = Harness::new(Harness::default_config());
    let (s, _) = h.connect_with(connect("s", V311, false));
    h.subscribe(s, "t", QoS::AtLeastOnce);
    let p = h.connect("p", V311);
    h.publish(p, "t", b"x", QoS::AtLeastOnce, false, Some(1));
    let first = h.expect_publish(s);
    assert!(!first.dup);
    h.drop_conn(s);
    let (s, ack) = h.connect_with(connect("s", V311, false));
    assert!(ack.session_present);
    let again = h.expect_publish(s);
    assert!(again.dup, "[MQTT-3.3.1-1] DUP on resend");
    assert_eq!(again.packet_id, first.packet_id);
    assert_eq!(again.payload, first.payload);
    h.ack(s, AckKind::PubAck, again.packet_id.unwrap());
    h.drop_conn(s);
    let (s, _) = h.connect_with(connect("s", V311, false));
    h.assert_idle(s);
}

#[test]
fn qos2_exactly_once_across_reconnects() {
    let mut h = Harness::new(Harness::default_config());
    let (s, _) = h.connect_with(connect("s", V5, false).tap_expiry(600));
    h.subscribe(s, "t", QoS::ExactlyOnce);
    let p = h.connect("p", V5);
    h.publish(p, "t", b"once", QoS::ExactlyOnce, false, Some(9));
    h.expect_ack(p, AckKind::PubRec);
    let m = h.expect_publish(s);
    let id = m.packet_id.unwrap();
    // Lost before PUBREC: resent with DUP.
    h.drop_conn(s);
    let (s, _) = h.connect_with(connect("s", V5, false).tap_expiry(600));
    let m2 = h.expect_publish(s);
    assert!(m2.dup);
    assert_eq!(m2.packet_id, Some(id));
    h.ack(s, AckKind::PubRec, id);
    assert_eq!(h.expect_ack(s, AckKind::PubRel).packet_id, id);
    // Lost before PUBCOMP: PUBREL resent, never the PUBLISH.
    h.drop_conn(s);
    let (s, _) = h.connect_with(connect("s", V5, false).tap_expiry(600));
    assert_eq!(h.expect_ack(s, AckKind::PubRel).packet_id, id);
    h.assert_idle(s);
    h.ack(s, AckKind::PubComp, id);
    h.drop_conn(s);
    let (s, _) = h.connect_with(connect("s", V5, false).tap_expiry(600));
    h.assert_idle(s);
    // The publisher side: PUBREL completes, a duplicate is never delivered twice.
    h.ack(p, AckKind::PubRel, 9);
    h.expect_ack(p, AckKind::PubComp);
    h.assert_idle(s);
}

trait TapExpiry {
    fn tap_expiry(self, secs: u32) -> Self;
}

impl TapExpiry for crate::codec::Connect {
    fn tap_expiry(mut self, secs: u32) -> Self {
        self.properties.session_expiry_interval = Some(secs);
        self
    }
}

#[test]
fn inflight_window_limits_outbound_qos1() {
    let config = Config {
        max_inflight_messages: 2,
        ..Harness::default_config()
    };
    let mut h = Harness::new(config);
    let s = h.connect("s", V311);
    h.subscribe(s, "t", QoS::AtLeastOnce);
    let p = h.connect("p", V311);
    for id in 1..=5 {
        h.publish(p, "t", b"x", QoS::AtLeastOnce, false, Some(id));
        h.expect_ack(p, AckKind::PubAck);
    }
    let a = h.expect_publish(s);
    let b = h.expect_publish(s);
    h.assert_idle(s);
    h.ack(s, AckKind::PubAck, a.packet_id.unwrap());
    let c = h.expect_publish(s);
    h.assert_idle(s);
    h.ack(s, AckKind::PubAck, b.packet_id.unwrap());
    h.ack(s, AckKind::PubAck, c.packet_id.unwrap());
    h.expect_publish(s);
    h.expect_publish(s);
    h.assert_idle(s);
}

/// The acknowledgements of one read refill the window once (`finish_refill`), with the
/// output order of one refill per acknowledgement: a PINGREQ between them is answered
/// after the messages the earlier acknowledgements let out, a PUBLISH the subscriber
/// sends to itself queues behind the ones waiting, and what the last ones let out goes
/// before the PUBACK of the subscriber's own PUBLISH is written.
#[test]
fn acks_of_one_read_refill_the_window_in_order() {
    let config = Config {
        max_inflight_messages: 3,
        ..Harness::default_config()
    };
    let mut h = Harness::new(config);
    let s = h.connect("s", V311);
    h.subscribe(s, "t", QoS::AtLeastOnce);
    let p = h.connect("p", V311);
    for id in 1..=9u16 {
        let payload: &'static [u8] =
            [b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"8", b"9"][usize::from(id) - 1];
        h.publish(p, "t", payload, QoS::AtLeastOnce, false, Some(id));
        h.expect_ack(p, AckKind::PubAck);
    }
    let first: Vec<_> = (0..3).map(|_| h.expect_publish(s)).collect();
    h.assert_idle(s);
    let mut bytes = bytes::BytesMut::new();
    let mut put = |packet: Packet| crate::codec::encode(&packet, V311, &mut bytes).unwrap();
    put(super::harness::ack(
        AckKind::PubAck,
        first[0].packet_id.unwrap(),
    ));
    put(super::harness::ack(
        AckKind::PubAck,
        first[1].packet_id.unwrap(),
    ));
    put(Packet::PingReq);
    put(super::harness::ack(
        AckKind::PubAck,
        first[2].packet_id.unwrap(),
    ));
    put(Packet::Publish(super::harness::publish(
        "t",
        b"own",
        QoS::AtLeastOnce,
        false,
        Some(77),
    )));
    h.send_bytes(s, &bytes);
    let p4 = h.expect_publish(s);
    let p5 = h.expect_publish(s);
    assert_eq!((&p4.payload[..], &p5.payload[..]), (&b"4"[..], &b"5"[..]));
    assert!(matches!(h.expect(s), Packet::PingResp));
    let p6 = h.expect_publish(s);
    assert_eq!(&p6.payload[..], b"6");
    assert_eq!(h.expect_ack(s, AckKind::PubAck).packet_id, 77);
    h.assert_idle(s);
    // A whole window acknowledged in one read lets the next three out, in order; the
    // subscriber's own message waits behind them.
    let mut bytes = bytes::BytesMut::new();
    for p in [&p4, &p5, &p6] {
        let ack = super::harness::ack(AckKind::PubAck, p.packet_id.unwrap());
        crate::codec::encode(&ack, V311, &mut bytes).unwrap();
    }
    h.send_bytes(s, &bytes);
    let next: Vec<_> = (0..3).map(|_| h.expect_publish(s)).collect();
    let payloads: Vec<&[u8]> = next.iter().map(|p| &p.payload[..]).collect();
    assert_eq!(payloads, [&b"7"[..], b"8", b"9"]);
    h.assert_idle(s);
    h.ack(s, AckKind::PubAck, next[0].packet_id.unwrap());
    assert_eq!(&h.expect_publish(s).payload[..], b"own");
    h.assert_idle(s);
}

/// `max_inflight_bytes` closes the window by bytes too; one message always fits.
#[test]
fn max_inflight_bytes_limits_outbound_qos1() {
    let config = Config {
        max_inflight_messages: 100,
        // Topic "t" + 9-byte payload = 10 bytes per message: two fit, the third waits.
        max_inflight_bytes: 20,
        ..Harness::default_config()
    };
    let mut h = Harness::new(config);
    let s = h.connect("s", V311);
    h.subscribe(s, "t", QoS::AtLeastOnce);
    let p = h.connect("p", V311);
    for id in 1..=4 {
        h.publish(p, "t", b"123456789", QoS::AtLeastOnce, false, Some(id));
        h.expect_ack(p, AckKind::PubAck);
    }
    let a = h.expect_publish(s);
    let b = h.expect_publish(s);
    h.assert_idle(s);
    h.ack(s, AckKind::PubAck, a.packet_id.unwrap());
    let c = h.expect_publish(s);
    h.assert_idle(s);
    h.ack(s, AckKind::PubAck, b.packet_id.unwrap());
    h.ack(s, AckKind::PubAck, c.packet_id.unwrap());
    let d = h.expect_publish(s);
    h.assert_idle(s);
    h.ack(s, AckKind::PubAck, d.packet_id.unwrap());

    // A message bigger than the limit still goes out (alone: the next one waits).
    h.publish(p, "t", &[7u8; 100], QoS::AtLeastOnce, false, Some(9));
    h.expect_ack(p, AckKind::PubAck);
    h.publish(p, "t", b"small", QoS::AtLeastOnce, false, Some(10));
    h.expect_ack(p, AckKind::PubAck);
    let big = h.expect_publish(s);
    assert_eq!(big.payload.len(), 100);
    h.assert_idle(s);
    h.ack(s, AckKind::PubAck, big.packet_id.unwrap());
    assert_eq!(&h.expect_publish(s).payload[..], b"small");
}

#[test]
fn v5_client_receive_maximum_lowers_window() {
    let mut h = Harness::new(Harness::default_config());
    let mut c = connect("s", V5, true);
    c.properties.receive_maximum = Some(1);
    let (s, _) = h.connect_with(c);
    h.subscribe(s, "t", QoS::AtLeastOnce);
    let p = h.connect("p", V5);
    h.publish(p, "t", b"1", QoS::AtLeastOnce, false, Some(1));
    h.publish(p, "t", b"2", QoS::AtLeastOnce, false, Some(2));
    let a = h.expect_publish(s);
    h.assert_idle(s);
    h.ack(s, AckKind::PubAck, a.packet_id.unwrap());
    assert_eq!(h.expect_publish(s).payload.as_ref(), b"2");
}

#[test]
fn backpressure_pauses_publisher_of_full_qos1_subscriber() {
    let config = Config {
        max_inflight_messages: 1,
        max_queued_messages: 2,
        ..Harness::default_config()
    };
    let mut h = Harness::new(config);
    let s = h.connect("s", V311);
    h.subscribe(s, "t", QoS::AtLeastOnce);
    let p = h.connect("p", V311);
    for id in 1..=3 {
        assert!(h.broker.wants_read(p, h.now));
        h.publish(p, "t", b"x", QoS::AtLeastOnce, false, Some(id));
    }
    // 1 inflight + 2 queued: the subscriber is full, the publisher must not be read.
    assert!(!h.broker.wants_read(p, h.now));
    // Nothing was dropped: a connected QoS 1 subscriber never loses a message.
    h.publish(p, "t", b"x", QoS::AtLeastOnce, false, Some(4));
    assert_eq!(h.broker.stats().publish_dropped, 0);
    h.transmitted.clear();
    let mut got = 0;
    while let Some(Packet::Publish(m)) = h.recv(s) {
        got += 1;
        h.ack(s, AckKind::PubAck, m.packet_id.unwrap());
    }
    assert_eq!(got, 4);
    assert!(h.broker.wants_read(p, h.now));
    assert!(
        h.transmitted.contains(&p),
        "poll_transmit yields the released publisher"
    );
}

#[test]
fn backpressure_qos0_drops_and_pauses_when_every_subscriber_is_full() {
    let config = Config {
        max_queued_bytes: 64,
        ..Harness::default_config()
    };
    let mut h = Harness::new(config);
    let s = h.connect("s", V311);
    h.subscribe(s, "t", QoS::AtMostOnce);
    h.stalled.insert(s);
    let p = h.connect("p", V311);
    for _ in 0..20 {
        h.publish(p, "t", b"0123456789", QoS::AtMostOnce, false, None);
    }
    assert!(h.broker.stats().publish_dropped > 0);
    assert!(!h.broker.wants_read(p, h.now));
    h.unstall(s);
    assert!(h.broker.wants_read(p, h.now));
}

#[test]
fn offline_queue_overflow_is_counted() {
    let config = Config {
        max_queued_messages: 2,
        ..Harness::default_config()
    };
    let mut h = Harness::new(config);
    let (s, _) = h.connect_with(connect("s", V311, false));
    h.subscribe(s, "t", QoS::AtLeastOnce);
    h.drop_conn(s);
    let p = h.connect("p", V311);
    for id in 1..=3 {
        h.publish(p, "t", b"x", QoS::AtLeastOnce, false, Some(id));
    }
    assert_eq!(h.broker.stats().publish_dropped, 1);
    assert!(
        h.broker.wants_read(p, h.now),
        "an offline subscriber never pauses publishers"
    );
    let (s, _) = h.connect_with(connect("s", V311, false));
    h.expect_publish(s);
    h.expect_publish(s);
    h.assert_idle(s);
}

#[test]
fn persistent_client_expiration_ends_v311_session() {
    let config = Config {
        persistent_client_expiration: Some(Duration::from_secs(60)),
        ..Harness::default_config()
    };
    let mut h = Harness::new(config);
    let (s, _) = h.connect_with(connect("s", V311, false));
    h.drop_conn(s);
    h.advance(Duration::from_secs(30));
    let (s, ack) = h.connect_with(connect("s", V311, false));
    assert!(ack.session_present);
    h.drop_conn(s);
    h.advance(Duration::from_secs(61));
    let (_, ack) = h.connect_with(connect("s", V311, false));
    assert!(!ack.session_present);
}

#[test]
fn v5_session_expiry_interval() {
    let mut h = Harness::new(Harness::default_config());
    // 0 (absent): the session ends with the connection.
    let (s, _) = h.connect_with(connect("s", V5, false));
    h.drop_conn(s);
    let (s, ack) = h.connect_with(connect("s", V5, false).tap_expiry(10));
    assert!(!ack.session_present);
    h.drop_conn(s);
    h.advance(Duration::from_secs(5));
    let (s, ack) = h.connect_with(connect("s", V5, false).tap_expiry(10));
    assert!(ack.session_present);
    h.drop_conn(s);
    h.advance(Duration::from_secs(11));
    let (_, ack) = h.connect_with(connect("s", V5, false));
    assert!(!ack.session_present);
}

#[test]
fn message_expiry_decremented_while_queued() {
    let mut h = Harness::new(Harness::default_config());
    let (s, _) = h.connect_with(connect("s", V5, false).tap_expiry(600));
    h.subscribe(s, "t", QoS::AtLeastOnce);
    h.drop_conn(s);
    let p = h.connect("p", V5);
    let mut m = publish("t", b"short", QoS::AtLeastOnce, false, Some(1));
    m.properties.message_expiry_interval = Some(5);
    h.send(p, Packet::Publish(m));
    let mut m = publish("t", b"long", QoS::AtLeastOnce, false, Some(2));
    m.properties.message_expiry_interval = Some(100);
    h.send(p, Packet::Publish(m));
    h.advance(Duration::from_secs(10));
    let (s, _) = h.connect_with(connect("s", V5, false).tap_expiry(600));
    let got = h.expect_publish(s);
    assert_eq!(got.payload.as_ref(), b"long");
    assert_eq!(got.properties.message_expiry_interval, Some(90));
    h.assert_idle(s);
}

#[test]
fn sys_topics_published_every_interval() {
    let config = Config {
        sys_interval: Duration::from_secs(10),
        ..Harness::default_config()
    };
    let mut h = Harness::new(config);
    let all = h.connect("all", V311);
    h.subscribe(all, "#", QoS::AtMostOnce);
    let sys = h.connect("sys", V311);
    h.subscribe(sys, "$SYS/#", QoS::AtMostOnce);
    h.advance(Duration::from_secs(10));
    let mut topics = Vec::new();
    while let Some(Packet::Publish(m)) = h.recv(sys) {
        if m.topic.as_str() == "$SYS/broker/version" {
            assert!(m.payload.starts_with(b"shardmq "));
        }
        if m.topic.as_str() == "$SYS/broker/clients/connected" {
            assert_eq!(m.payload.as_ref(), b"2");
        }
        topics.push(m.topic.to_string());
    }
    for t in [
        "$SYS/broker/uptime",
        "$SYS/broker/clients/total",
        "$SYS/broker/clients/disconnected",
        "$SYS/broker/messages/received",
        "$SYS/broker/messages/sent",
        "$SYS/broker/publish/messages/received",
        "$SYS/broker/publish/messages/sent",
        "$SYS/broker/bytes/received",
        "$SYS/broker/bytes/sent",
        "$SYS/broker/subscriptions/count",
        "$SYS/broker/retained messages/count",
        "$SYS/broker/load/messages/received/1min",
        "$SYS/broker/load/messages/received/5min",
        "$SYS/broker/load/messages/received/15min",
        "$SYS/broker/store/messages/count",
    ] {
        assert!(topics.iter().any(|x| x == t), "missing {t}");
    }
    h.assert_idle(all); // [MQTT-4.7.2-1]
                        // They are retained: a late subscriber gets them at once.
    let late = h.connect("late", V311);
    h.subscribe(late, "$SYS/broker/version", QoS::AtMostOnce);
    assert!(h.expect_publish(late).retain);
}

/// An ACL added by a reload applies at once to an offline persistent session too (as its
/// user), so nothing it may not read is queued for it while it is away.
#[test]
fn acl_added_by_reload_applies_to_an_offline_session() {
    let mut h = Harness::new(Harness::default_config());
    let mut c = connect("bob-device", ProtocolVersion::V311, false);
    c.username = Some(ByteStr::from("bob"));
    let (bob, _) = h.connect_with(c.clone());
    h.subscribe(bob, "#", QoS::AtLeastOnce);
    h.drop_conn(bob);
    let acl = crate::auth::Acl::parse(
        "topic write #\nuser bob\ntopic read bob/#\n",
        std::path::Path::new("acl"),
    )
    .unwrap();
    h.broker
        .set_security(std::sync::Arc::new(crate::auth::Security::with_domain(
            crate::auth::Domain {
                allow_anonymous: true,
                passwords: None,
                acl: Some(acl),
            },
        )));
    let p = h.connect("pub", ProtocolVersion::V311);
    h.publish(p, "secret/x", b"no", QoS::AtLeastOnce, false, Some(1));
    h.publish(p, "bob/x", b"yes", QoS::AtLeastOnce, false, Some(2));
    let (bob, ack) = h.connect_with(c);
    assert!(ack.session_present);
    assert_eq!(&h.expect_publish(bob).payload[..], b"yes");
    h.assert_idle(bob);
}
