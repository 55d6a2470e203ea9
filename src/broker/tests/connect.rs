//! Scenario tests: CONNECT rules, takeover, keep alive, malformed input, PINGREQ.

use std::time::Duration;

use super::harness::{connect, will, Harness};
use crate::codec::{ByteStr, Packet, Properties, ProtocolVersion, QoS, ReasonCode};
use crate::config::Config;

const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

#[test]
fn connect_v311_gets_connack_accepted() {
    let mut h = Harness::new(Harness::default_config());
    let (conn, ack) = h.connect_with(connect("c1", V311, true));
    assert_eq!(ack.reason, ReasonCode::V3_ACCEPTED);
    assert!(!ack.session_present);
    assert!(!h.is_closed(conn));
    assert_eq!(h.broker.stats().clients_connected, 1);
}

#[test]
fn connack_bytes_v311() {
    let mut h = Harness::new(Harness::default_config());
    let conn = h.open(V311);
    // CONNECT "MQTT" level 4, clean session, keep alive 60, client id "a".
    let mut buf = bytes::BytesMut::from(
        &[
            0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'a',
        ][..],
    );
    h.broker.on_read(conn, &mut buf, h.now);
    assert!(h.broker.poll_transmit() == Some(conn));
    let out = h.broker.output(conn).unwrap();
    let mut iov = [std::io::IoSlice::new(&[]); 4];
    let n = out.io_slices(&mut iov);
    let bytes: Vec<u8> = iov[..n].iter().flat_map(|s| s.to_vec()).collect();
    assert_eq!(bytes, [0x20, 0x02, 0x00, 0x00]);
}

#[test]
fn mqtt_3_1_2_2_unsupported_level_gets_connack_0x01() {
    let mut h = Harness::new(Harness::default_config());
    let conn = h.open(V311);
    h.send_bytes(
        conn,
        &[
            0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 2, 0x02, 0, 60, 0, 1, b'a',
        ],
    );
    match h.expect(conn) {
        Packet::ConnAck(a) => assert_eq!(a.reason, ReasonCode::V3_UNACCEPTABLE_PROTOCOL_VERSION),
        other => panic!("{other:?}"),
    }
    assert!(h.is_closed(conn));
}

#[test]
fn unsupported_level_above_5_gets_v5_connack_0x84() {
    let mut h = Harness::new(Harness::default_config());
    let conn = h.open(V5);
    h.send_bytes(
        conn,
        &[
            0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 6, 0x02, 0, 60, 0, 0, 1, b'a',
        ],
    );
    match h.expect(conn) {
        Packet::ConnAck(a) => assert_eq!(a.reason, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION),
        other => panic!("{other:?}"),
    }
    assert!(h.is_closed(conn));
}

#[test]
fn mqtt_3_1_0_1_first_packet_must_be_connect() {
    let mut h = Harness::new(Harness::default_config());
    let conn = h.open(V311);
    h.send(conn, Packet::PingReq);
    assert!(h.is_closed(conn));
    h.assert_idle(conn);
}

#[test]
fn mqtt_3_1_0_2_second_connect_closes() {
    let mut h = Harness::new(Harness::default_config());
    let conn = h.connect("c1", V311);
    h.send(conn, Packet::Connect(Box::new(connect("c1", V311, true))));
    assert!(h.is_closed(conn));
}

#[test]
fn second_connect_v5_gets_disconnect_protocol_error() {
    let mut h = Harness::new(Harness::default_config());
    let conn = h.connect("c1", V5);
    h.send(conn, Packet::Connect(Box::new(connect("c1", V5, true))));
    match h.expect(conn) {
        Packet::Disconnect(d) => assert_eq!(d.reason, ReasonCode::PROTOCOL_ERROR),
        other => panic!("{other:?}"),
    }
    assert!(h.is_closed(conn));
}

#[test]
fn mqtt_3_1_3_8_empty_id_without_clean_session_rejected() {
    let mut h = Harness::new(Harness::default_config());
    let (conn, ack) = h.connect_with(connect("", V311, false));
    assert_eq!(ack.reason, ReasonCode::V3_IDENTIFIER_REJECTED);
    assert!(h.is_closed(conn));
}

#[test]
fn empty_id_v311_clean_is_assigned() {
    let mut h = Harness::new(Harness::default_config());
    let (conn, ack) = h.connect_with(connect("", V311, true));
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    assert!(!h.is_closed(conn));
}

#[test]
fn mqtt_3_1_3_6_empty_id_v5_gets_assigned_client_identifier() {
    let mut h = Harness::new(Harness::default_config());
    let (_, ack) = h.connect_with(connect("", V5, false));
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    let id = ack.properties.assigned_client_identifier.clone().unwrap();
    assert!(id.starts_with("auto-"), "{id}");
}

#[test]
fn anonymous_refused_v311_and_v5() {
    let config = Config {
        allow_anonymous: false,
        ..Harness::default_config()
    };
    let mut h = Harness::new(config);
    let (c3, a3) = h.connect_with(connect("a", V311, true));
    assert_eq!(a3.reason, ReasonCode::V3_NOT_AUTHORIZED);
    assert!(h.is_closed(c3));
    let (c5, a5) = h.connect_with(connect("b", V5, true));
    assert_eq!(a5.reason, ReasonCode::NOT_AUTHORIZED);
    assert!(h.is_closed(c5));
    let mut with_user = connect("c", V311, true);
    with_user.username = Some(ByteStr::from("u"));
    let (_, ok) = h.connect_with(with_user);
    assert_eq!(ok.reason, ReasonCode::SUCCESS);
}

#[test]
fn clientid_prefixes_enforced() {
    let config = Config {
        clientid_prefixes: Some("ok-".into()),
        ..Harness::default_config()
    };
    let mut h = Harness::new(config);
    let (_, bad) = h.connect_with(connect("nope", V311, true));
    assert_eq!(bad.reason, ReasonCode::V3_NOT_AUTHORIZED);
    let (_, good) = h.connect_with(connect("ok-1", V311, true));
    assert_eq!(good.reason, ReasonCode::SUCCESS);
}

#[test]
fn mqtt_3_1_4_3_takeover_closes_old_connection_v5_with_0x8e() {
    let mut h = Harness::new(Harness::default_config());
    let mut c = connect("dup", V5, false);
    c.properties.session_expiry_interval = Some(100);
    let (old, _) = h.connect_with(c.clone());
    h.subscribe(old, "t", QoS::AtLeastOnce);
    let (new, ack) = h.connect_with(c);
    assert!(ack.session_present);
    match h.expect(old) {
        Packet::Disconnect(d) => assert_eq!(d.reason, ReasonCode::SESSION_TAKEN_OVER),
        other => panic!("{other:?}"),
    }
    assert!(h.is_closed(old));
    assert!(!h.is_closed(new));
    // The subscription moved with the session.
    let p = h.connect("pub", V5);
    h.publish(p, "t", b"x", QoS::AtMostOnce, false, None);
    assert_eq!(h.expect_publish(new).payload.as_ref(), b"x");
    assert_eq!(h.broker.stats().clients_connected, 2);
}

#[test]
fn takeover_with_clean_session_discards_old_session() {
    let mut h = Harness::new(Harness::default_config());
    let (old, _) = h.connect_with(connect("dup", V311, false));
    h.subscribe(old, "t", QoS::AtMostOnce);
    let (new, ack) = h.connect_with(connect("dup", V311, true));
    assert!(!ack.session_present);
    assert!(h.is_closed(old));
    h.assert_idle(old);
    let p = h.connect("pub", V311);
    h.publish(p, "t", b"x", QoS::AtMostOnce, false, None);
    h.assert_idle(new);
}

#[test]
fn takeover_publishes_old_will() {
    let mut h = Harness::new(Harness::default_config());
    let watcher = h.connect("w", V311);
    h.subscribe(watcher, "will", QoS::AtMostOnce);
    let mut c = connect("dup", V311, true);
    c.will = Some(will("will", b"gone", QoS::AtMostOnce, false));
    h.connect_with(c);
    h.connect_with(connect("dup", V311, true));
    assert_eq!(h.expect_publish(watcher).payload.as_ref(), b"gone");
}

#[test]
fn connection_without_connect_times_out() {
    let mut h = Harness::new(Harness::default_config());
    let conn = h.open(V311);
    h.advance(Duration::from_secs(9));
    assert!(!h.is_closed(conn));
    h.advance(Duration::from_secs(2));
    assert!(h.is_closed(conn));
}

#[test]
fn malformed_packet_v5_gets_disconnect_0x81_and_close() {
    let mut h = Harness::new(Harness::default_config());
    let conn = h.connect("c1", V5);
    // PUBLISH with QoS 3 is malformed [MQTT-3.3.1-4].
    h.send_bytes(conn, &[0x36, 0x05, 0, 1, b't', 0, 1]);
    match h.expect(conn) {
        Packet::Disconnect(d) => assert_eq!(d.reason, ReasonCode::MALFORMED_PACKET),
        other => panic!("{other:?}"),
    }
    assert!(h.is_closed(conn));
}

#[test]
fn malformed_packet_v311_just_closes_and_publishes_will() {
    let mut h = Harness::new(Harness::default_config());
    let watcher = h.connect("w", V311);
    h.subscribe(watcher, "will", QoS::AtMostOnce);
    let mut c = connect("bad", V311, true);
    c.will = Some(will("will", b"w", QoS::AtMostOnce, false));
    let (conn, _) = h.connect_with(c);
    h.send_bytes(conn, &[0x36, 0x05, 0, 1, b't', 0, 1]);
    assert!(h.is_closed(conn));
    h.assert_idle(conn);
    assert_eq!(h.expect_publish(watcher).payload.as_ref(), b"w");
}

#[test]
fn mqtt_3_12_4_1_pingreq_gets_pingresp() {
    let mut h = Harness::new(Harness::default_config());
    let conn = h.connect("c1", V311);
    h.send(conn, Packet::PingReq);
    assert_eq!(h.expect(conn), Packet::PingResp);
}

#[test]
fn mqtt_3_1_2_24_keep_alive_expiry_closes_and_publishes_will() {
    let mut h = Harness::new(Harness::default_config());
    let watcher = h.connect("w", V311);
    h.subscribe(watcher, "will", QoS::AtMostOnce);
    let mut c = connect("ka", V311, true);
    c.keep_alive = 10;
    c.will = Some(will("will", b"timeout", QoS::AtMostOnce, false));
    let (conn, _) = h.connect_with(c);
    h.advance(Duration::from_secs(8));
    h.send(conn, Packet::PingReq);
    assert_eq!(h.expect(conn), Packet::PingResp);
    // 14 s after the PINGREQ is still within 1.5 x 10 s.
    h.advance(Duration::from_secs(14));
    assert!(!h.is_closed(conn));
    h.advance(Duration::from_secs(2));
    assert!(h.is_closed(conn));
    assert_eq!(h.expect_publish(watcher).payload.as_ref(), b"timeout");
    // Watcher (keep alive 60) is fine.
    assert!(!h.is_closed(watcher));
}

#[test]
fn keep_alive_expiry_v5_sends_disconnect_0x8d() {
    let mut h = Harness::new(Harness::default_config());
    let mut c = connect("ka", V5, true);
    c.keep_alive = 2;
    let (conn, _) = h.connect_with(c);
    h.advance(Duration::from_secs(4));
    match h.expect(conn) {
        Packet::Disconnect(d) => assert_eq!(d.reason, ReasonCode::KEEP_ALIVE_TIMEOUT),
        other => panic!("{other:?}"),
    }
    assert!(h.is_closed(conn));
}

#[test]
fn mqtt_3_2_2_21_server_keep_alive_when_max_keepalive_lower() {
    let config = Config {
        max_keepalive: 30,
        ..Harness::default_config()
    };
    let mut h = Harness::new(config);
    let mut c = connect("ka", V5, true);
    c.keep_alive = 0;
    let (_, ack) = h.connect_with(c);
    assert_eq!(ack.properties.server_keep_alive, Some(30));
}

#[test]
fn v5_connack_announces_limits() {
    let config = Config {
        max_packet_size: 1000,
        retain_available: false,
        ..Harness::default_config()
    };
    let mut h = Harness::new(config);
    let (_, ack) = h.connect_with(connect("c", V5, true));
    let p: Properties = ack.properties;
    assert_eq!(p.maximum_packet_size, Some(1000));
    assert_eq!(p.retain_available, Some(0));
    assert_eq!(p.receive_maximum, Some(20));
    assert_eq!(p.topic_alias_maximum, Some(10)); // max_topic_alias's default
    assert_eq!(p.shared_subscription_available, Some(1));
}

#[test]
fn topic_alias_gets_disconnect_0x94_when_max_topic_alias_0() {
    let config = Config {
        max_topic_alias: 0,
        ..Harness::default_config()
    };
    let mut h = Harness::new(config);
    let conn = h.connect("c", V5);
    let mut p = super::harness::publish("t", b"x", QoS::AtMostOnce, false, None);
    p.properties.topic_alias = Some(1);
    h.send(conn, Packet::Publish(p));
    match h.expect(conn) {
        Packet::Disconnect(d) => assert_eq!(d.reason, ReasonCode::TOPIC_ALIAS_INVALID),
        other => panic!("{other:?}"),
    }
    assert!(h.is_closed(conn));
}

#[test]
fn retain_not_available_gets_disconnect_0x9a() {
    let config = Config {
        retain_available: false,
        ..Harness::default_config()
    };
    let mut h = Harness::new(config);
    let conn = h.connect("c", V5);
    h.publish(conn, "t", b"x", QoS::AtMostOnce, true, None);
    match h.expect(conn) {
        Packet::Disconnect(d) => assert_eq!(d.reason, ReasonCode::RETAIN_NOT_SUPPORTED),
        other => panic!("{other:?}"),
    }
}

#[test]
fn socket_close_without_disconnect_counts_and_frees() {
    let mut h = Harness::new(Harness::default_config());
    let conn = h.connect("c", V311);
    h.drop_conn(conn);
    assert_eq!(h.broker.stats().clients_connected, 0);
    assert!(h.broker.output(conn).is_none());
    // The id can be reused.
    let again = h.connect("c", V311);
    assert!(!h.is_closed(again));
}

#[test]
fn random_bytes_never_panic_the_broker() {
    let mut h = Harness::new(Harness::default_config());
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..300 {
        let version = if round % 2 == 0 { V311 } else { V5 };
        let conn = if round % 3 == 0 {
            h.open(version)
        } else {
            h.connect(&format!("f{round}"), version)
        };
        let len = (next() % 64) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if let Some(first) = bytes.first_mut() {
            // Bias towards valid packet types so the parsers behind them run.
            *first = (*first & 0x0F) | (((next() % 14) as u8 + 1) << 4);
        }
        let mut buf = bytes::BytesMut::from(&bytes[..]);
        h.broker.on_read(conn, &mut buf, h.now);
        h.drive();
        h.advance(Duration::from_secs(1));
    }
}

#[test]
fn an_idle_connection_has_one_timer_entry_and_keep_alive_still_applies() {
    // Connect timer and keep alive timer are one entry: the connect timer, due first,
    // arms the keep alive timer (issue 14: 24 bytes of every new connection).
    let mut h = Harness::new(Harness::default_config());
    let before = h.broker.timers.len();
    let conns: Vec<_> = (0..50).map(|i| h.connect(&format!("c{i}"), V311)).collect();
    assert_eq!(h.broker.timers.len() - before, 50);
    // The connect timers (10 s) fired and became keep alive timers (60 s: 90 s).
    h.advance(Duration::from_secs(11));
    assert_eq!(h.broker.timers.len() - before, 50);
    assert!(conns.iter().all(|&c| !h.is_closed(c)));
    h.send(conns[0], Packet::PingReq);
    assert_eq!(h.expect(conns[0]), Packet::PingResp);
    h.advance(Duration::from_secs(78)); // 89 s after CONNECT
    assert!(conns.iter().all(|&c| !h.is_closed(c)));
    h.advance(Duration::from_secs(2));
    assert!(
        conns[1..].iter().all(|&c| h.is_closed(c)),
        "silent for 1.5 x 60 s"
    );
    assert!(
        !h.is_closed(conns[0]),
        "its PINGREQ at 11 s moved its deadline"
    );
    h.advance(Duration::from_secs(11));
    assert!(h.is_closed(conns[0]));
}

#[test]
fn a_keep_alive_shorter_than_the_connect_timeout_gets_its_own_timer() {
    let config = Config {
        connect_timeout: Duration::from_secs(30),
        ..Harness::default_config()
    };
    let mut h = Harness::new(config);
    let mut c = connect("ka", V311, true);
    c.keep_alive = 4;
    let (conn, _) = h.connect_with(c);
    h.advance(Duration::from_secs(5));
    assert!(!h.is_closed(conn));
    h.advance(Duration::from_secs(2)); // 7 s > 1.5 x 4 s, long before 30 s
    assert!(h.is_closed(conn));
}
