//! Persistence hook scenarios without sockets or files: records drained from one broker
//! are applied to a [`State`] (the "disk"), a second broker restores from it, and the
//! clients see what the spec requires after a restart.

use std::time::{Duration, Instant};

use crate::codec::{AckKind, Packet, ProtocolVersion, QoS};
use crate::persist::{Record, State};

use super::harness::{connect, will, Harness};

const T0: u64 = 1_700_000_000_000;

fn harness() -> Harness {
    let mut h = Harness::new(Harness::default_config());
    h.broker.enable_persistence(h.now, T0, 1);
    h
}

/// One loop iteration's worth of records onto the "disk".
fn save(h: &mut Harness, state: &mut State) -> Vec<Record> {
    let mut out = Vec::new();
    h.broker.drain_persist(&mut out);
    for r in &out {
        state.apply(r.clone());
    }
    out
}

/// A broker started `later` after the first one, restored from `state`.
fn restart(state: &State, later: Duration) -> Harness {
    let mut h = Harness::new(Harness::default_config());
    h.broker
        .enable_persistence(h.now, T0 + later.as_millis() as u64, 2);
    h.broker.restore_retained(state, h.now);
    h.broker.restore_sessions(state, &|_| true, h.now);
    h.drive();
    h
}

#[test]
fn qos0_to_connected_and_clean_sessions_records_nothing() {
    let mut h = harness();
    let mut state = State::default();
    let sub = h.connect("clean-sub", ProtocolVersion::V311);
    h.subscribe(sub, "t", QoS::AtMostOnce);
    let publisher = h.connect("pub", ProtocolVersion::V311);
    save(&mut h, &mut state);
    h.publish(publisher, "t", b"x", QoS::AtMostOnce, false, None);
    h.publish(publisher, "t", b"y", QoS::AtLeastOnce, false, Some(1));
    assert!(!h.broker.has_persist_events());
    assert!(state.is_empty());
}

#[test]
fn inflight_qos2_and_qos1_resume_with_their_packet_ids_after_restart() {
    let mut h = harness();
    let mut state = State::default();
    let (sub, _) = h.connect_with(connect("s", ProtocolVersion::V311, false));
    h.subscribe(sub, "t", QoS::ExactlyOnce);
    let publisher = h.connect("p", ProtocolVersion::V311);
    h.publish(publisher, "t", b"two", QoS::ExactlyOnce, false, Some(5));
    let q2 = h.expect_publish(sub);
    h.ack(sub, AckKind::PubRec, q2.packet_id.unwrap());
    h.expect_ack(sub, AckKind::PubRel);
    h.publish(publisher, "t", b"one", QoS::AtLeastOnce, false, Some(6));
    let q1 = h.expect_publish(sub);
    h.publish(publisher, "t", b"queued", QoS::AtLeastOnce, false, Some(7));
    h.expect_publish(sub);
    h.ack(sub, AckKind::PubAck, 3); // the third one completes before the crash
    save(&mut h, &mut state);
    let s = &state.sessions[&crate::codec::ByteStr::from("s")];
    assert_eq!(s.messages.len(), 2, "{s:?}");

    let mut h = restart(&state, Duration::from_secs(5));
    let (sub, ack) = h.connect_with(connect("s", ProtocolVersion::V311, false));
    assert!(ack.session_present);
    // [MQTT-4.4.0-1]: PUBREL for the PUBREC'd QoS 2 message, the QoS 1 one again with DUP.
    let rel = h.expect_ack(sub, AckKind::PubRel);
    assert_eq!(rel.packet_id, q2.packet_id.unwrap());
    let again = h.expect_publish(sub);
    assert!(again.dup);
    assert_eq!(again.packet_id, q1.packet_id);
    assert_eq!(&again.payload[..], b"one");
    h.assert_idle(sub);
    // The restored subscription is live; new ids do not collide with restored ones.
    let publisher = h.connect("p", ProtocolVersion::V311);
    h.publish(publisher, "t", b"new", QoS::AtLeastOnce, false, Some(1));
    let new = h.expect_publish(sub);
    assert_ne!(new.packet_id, q1.packet_id);
    assert_ne!(new.packet_id, q2.packet_id);
}

#[test]
fn acknowledged_messages_are_not_restored() {
    let mut h = harness();
    let mut state = State::default();
    let (sub, _) = h.connect_with(connect("s", ProtocolVersion::V311, false));
    h.subscribe(sub, "t", QoS::AtLeastOnce);
    let publisher = h.connect("p", ProtocolVersion::V311);
    for i in 1..=3 {
        h.publish(publisher, "t", b"m", QoS::AtLeastOnce, false, Some(i));
        let p = h.expect_publish(sub);
        h.ack(sub, AckKind::PubAck, p.packet_id.unwrap());
    }
    save(&mut h, &mut state);
    let mut h = restart(&state, Duration::from_secs(1));
    let (sub, ack) = h.connect_with(connect("s", ProtocolVersion::V311, false));
    assert!(ack.session_present);
    h.assert_idle(sub);
}

#[test]
fn session_that_expired_while_down_is_gone_and_its_delayed_will_is_published() {
    let mut h = harness();
    let mut state = State::default();
    // A persistent watcher, offline, subscribed to the will topic.
    let (w, _) = h.connect_with(connect("watcher", ProtocolVersion::V311, false));
    h.subscribe(w, "will/#", QoS::AtLeastOnce);
    h.send(w, Packet::Disconnect(Default::default()));
    // A v5 client with session expiry 60 s and will delay 30 s drops its connection.
    let mut c = connect("dying", ProtocolVersion::V5, false);
    c.properties.session_expiry_interval = Some(60);
    let mut wl = will("will/dying", b"bye", QoS::AtLeastOnce, false);
    wl.properties.will_delay_interval = Some(30);
    c.will = Some(wl);
    let (d, _) = h.connect_with(c);
    h.drop_conn(d);
    let records = save(&mut h, &mut state);
    assert!(records.iter().any(|r| matches!(r, Record::Will { .. })));

    // Down for 90 s: the session expired and the will delay passed.
    let mut h = restart(&state, Duration::from_secs(90));
    let mut c = connect("dying", ProtocolVersion::V5, false);
    c.properties.session_expiry_interval = Some(60);
    let (_, ack) = h.connect_with(c);
    assert!(!ack.session_present);
    let (w, ack) = h.connect_with(connect("watcher", ProtocolVersion::V311, false));
    assert!(ack.session_present);
    let p = h.expect_publish(w);
    assert_eq!(&p.payload[..], b"bye");
}

#[test]
fn delayed_will_still_pending_after_restart_fires_at_its_time() {
    let mut h = harness();
    let mut state = State::default();
    let watcher = h.connect("watcher", ProtocolVersion::V311);
    h.subscribe(watcher, "will/#", QoS::AtMostOnce);
    let mut c = connect("dying", ProtocolVersion::V5, false);
    c.properties.session_expiry_interval = Some(600);
    let mut wl = will("will/dying", b"bye", QoS::AtMostOnce, false);
    wl.properties.will_delay_interval = Some(30);
    c.will = Some(wl);
    let (d, _) = h.connect_with(c);
    h.drop_conn(d);
    save(&mut h, &mut state);

    let mut h = restart(&state, Duration::from_secs(10));
    let watcher = h.connect("watcher", ProtocolVersion::V311);
    h.subscribe(watcher, "will/#", QoS::AtMostOnce);
    h.advance(Duration::from_secs(15));
    h.assert_idle(watcher);
    h.advance(Duration::from_secs(6));
    assert_eq!(&h.expect_publish(watcher).payload[..], b"bye");
}

#[test]
fn retained_messages_and_their_deletion_survive_restart() {
    let mut h = harness();
    let mut state = State::default();
    let publisher = h.connect("p", ProtocolVersion::V311);
    h.publish(publisher, "keep/a", b"1", QoS::AtLeastOnce, true, Some(1));
    h.publish(publisher, "keep/b", b"2", QoS::AtMostOnce, true, None);
    h.publish(publisher, "keep/b", b"", QoS::AtMostOnce, true, None);
    save(&mut h, &mut state);
    assert_eq!(state.retained.len(), 1);
    let mut h = restart(&state, Duration::from_secs(1));
    let s = h.connect("s", ProtocolVersion::V311);
    h.subscribe(s, "keep/#", QoS::AtLeastOnce);
    let p = h.expect_publish(s);
    assert!(p.retain);
    assert_eq!(&p.payload[..], b"1");
    h.assert_idle(s);
}

#[test]
fn offline_queue_is_bounded_in_bytes_and_drops_are_counted() {
    // `max_queued_bytes` counts what a queued message keeps alive (its footprint): room
    // for four of the messages below, not five.
    let footprint = crate::session::Message::new(
        super::harness::publish(
            "t",
            b"01234567890123456789",
            QoS::AtLeastOnce,
            false,
            Some(1),
        ),
        Instant::now(),
        None,
    )
    .footprint();
    let config = crate::config::Config {
        max_queued_bytes: (4 * footprint + footprint / 2) as u64,
        ..Harness::default_config()
    };
    let mut h = Harness::new(config);
    h.broker.enable_persistence(h.now, T0, 1);
    let mut state = State::default();
    let (s, _) = h.connect_with(connect("s", ProtocolVersion::V311, false));
    h.subscribe(s, "t", QoS::AtLeastOnce);
    h.send(s, Packet::Disconnect(Default::default()));
    let p = h.connect("p", ProtocolVersion::V311);
    for i in 1..=10 {
        h.publish(
            p,
            "t",
            b"01234567890123456789",
            QoS::AtLeastOnce,
            false,
            Some(i),
        );
    }
    assert_eq!(h.broker.stats().publish_dropped, 6);
    save(&mut h, &mut state);
    let stored = &state.sessions[&crate::codec::ByteStr::from("s")];
    assert_eq!(stored.messages.len(), 4, "dropped messages are not stored");
    let (s, _) = h.connect_with(connect("s", ProtocolVersion::V311, false));
    for _ in 0..4 {
        h.expect_publish(s);
    }
    h.assert_idle(s);
}

#[test]
fn messages_caught_between_shards_by_a_crash_are_delivered_after_restart() {
    let mut h = harness();
    let mut state = State::default();
    let (s, _) = h.connect_with(connect("s", ProtocolVersion::V311, false));
    h.subscribe(s, "t", QoS::AtLeastOnce);
    h.send(s, Packet::Disconnect(Default::default()));
    save(&mut h, &mut state);
    // Shard 1 routed a message to shard 0 and acknowledged it; shard 0 never got it.
    state.apply(Record::Routed {
        boot: 1,
        from: 1,
        n: 1,
        seqs: vec![(0, 1)],
        received: T0,
        publish: super::harness::publish("t", b"in the mailbox", QoS::AtLeastOnce, false, Some(3)),
    });
    let mut h = restart(&state, Duration::from_secs(1));
    let (s, ack) = h.connect_with(connect("s", ProtocolVersion::V311, false));
    assert!(ack.session_present);
    assert_eq!(&h.expect_publish(s).payload[..], b"in the mailbox");
}

#[test]
fn routed_records_precede_the_ack_and_delivery_is_reported_per_source() {
    let mut h = harness();
    let mut state = State::default();
    h.connect("p", ProtocolVersion::V311);
    // The hook itself: a QoS 1 message to shards 1 and 3, then shard 2 delivering two.
    let msg = crate::session::Message::new(
        super::harness::publish("t", b"x", QoS::AtLeastOnce, false, Some(1)),
        h.now,
        None,
    );
    h.broker.persist.routed(0, &msg, 0b1010);
    h.broker.persist.received_remote(2, &msg);
    h.broker.persist.received_remote(2, &msg);
    let records = save(&mut h, &mut state);
    assert!(matches!(
        &records[..],
        [
            Record::Routed { seqs, .. },
            Record::Delivered { from: 2, to: 0, upto: 2, .. }
        ] if seqs == &vec![(1, 1), (3, 1)]
    ));
    assert_eq!(state.routed.len(), 1);
}

#[test]
fn options_byte_roundtrips() {
    for b in 0u8..64 {
        if b & 3 == 3 {
            continue;
        }
        assert_eq!(
            crate::broker::persist_hook::options_byte(
                crate::broker::persist_hook::options_from_byte(b)
            ),
            b
        );
    }
}

#[test]
fn inbound_qos2_id_awaiting_pubrel_survives_restart_and_pubrel_releases_it() {
    let mut h = harness();
    let mut state = State::default();
    let sub = h.connect("sub", ProtocolVersion::V311);
    h.subscribe(sub, "t", QoS::ExactlyOnce);
    let (p, _) = h.connect_with(connect("p", ProtocolVersion::V311, false));
    h.publish(p, "t", b"once", QoS::ExactlyOnce, false, Some(9));
    h.expect_ack(p, AckKind::PubRec);
    h.expect_publish(sub);
    let records = save(&mut h, &mut state);
    assert!(records
        .iter()
        .any(|r| matches!(r, Record::InboundQos2 { packet_id: 9, .. })));

    let mut h = restart(&state, Duration::from_secs(1));
    let sub = h.connect("sub", ProtocolVersion::V311);
    h.subscribe(sub, "t", QoS::ExactlyOnce);
    let (p, ack) = h.connect_with(connect("p", ProtocolVersion::V311, false));
    assert!(ack.session_present);
    // [MQTT-4.3.3-10]: the resend is answered, not delivered again.
    let mut dup = super::harness::publish("t", b"once", QoS::ExactlyOnce, false, Some(9));
    dup.dup = true;
    h.send(p, Packet::Publish(dup));
    h.expect_ack(p, AckKind::PubRec);
    h.assert_idle(sub);
    h.ack(p, AckKind::PubRel, 9);
    h.expect_ack(p, AckKind::PubComp);
    let records = save(&mut h, &mut state);
    assert!(records
        .iter()
        .any(|r| matches!(r, Record::InboundQos2Released { packet_id: 9, .. })));
    assert!(state.sessions[&crate::codec::ByteStr::from("p")]
        .inbound_qos2
        .is_empty());
    // A PUBREL for an id not held records no release.
    h.ack(p, AckKind::PubRel, 10);
    h.expect_ack(p, AckKind::PubComp);
    assert!(!save(&mut h, &mut state)
        .iter()
        .any(|r| matches!(r, Record::InboundQos2Released { .. })));
}

#[test]
fn retained_messages_queued_by_subscribe_are_recorded() {
    let config = crate::config::Config {
        max_inflight_messages: 1,
        ..Harness::default_config()
    };
    let mut h = Harness::new(config.clone());
    h.broker.enable_persistence(h.now, T0, 1);
    let mut state = State::default();
    let p = h.connect("p", ProtocolVersion::V311);
    for (i, topic) in ["r/1", "r/2", "r/3"].into_iter().enumerate() {
        h.publish(
            p,
            topic,
            b"kept",
            QoS::AtLeastOnce,
            true,
            Some(i as u16 + 1),
        );
    }
    let (s, _) = h.connect_with(connect("s", ProtocolVersion::V311, false));
    h.subscribe(s, "r/#", QoS::AtLeastOnce);
    let first = h.expect_publish(s); // one in flight (not acknowledged), two queued
    h.assert_idle(s);
    save(&mut h, &mut state);
    let stored = &state.sessions[&crate::codec::ByteStr::from("s")];
    assert_eq!(stored.messages.len(), 3, "{stored:?}");
    assert!(stored.messages.values().all(|m| m.retain));

    let mut h = Harness::new(config);
    h.broker.enable_persistence(h.now, T0 + 1000, 2);
    h.broker.restore_retained(&state, h.now);
    h.broker.restore_sessions(&state, &|_| true, h.now);
    let (s, ack) = h.connect_with(connect("s", ProtocolVersion::V311, false));
    assert!(ack.session_present);
    let again = h.expect_publish(s);
    assert!(again.dup && again.retain);
    assert_eq!(again.packet_id, first.packet_id);
    let mut topics = vec![again.topic.to_string()];
    for _ in 0..2 {
        h.ack(s, AckKind::PubAck, topics.len() as u16);
        topics.push(h.expect_publish(s).topic.to_string());
    }
    topics.sort();
    assert_eq!(topics, ["r/1", "r/2", "r/3"]);
}

/// A broker whose listener 0 takes the TLS certificate identity as user name, with an
/// ACL where only user alice reads `alice/#`.
fn identity_broker(unix_ms: u64, boot: u64) -> Harness {
    let mut config = Harness::default_config();
    config.listeners[0].tls = Some(crate::config::TlsConfig {
        require_certificate: true,
        use_identity_as_username: true,
        ..Default::default()
    });
    let mut h = Harness::new(config);
    let acl = crate::auth::Acl::parse(
        "topic write alice/#\nuser alice\ntopic read alice/#\n",
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
    h.broker.enable_persistence(h.now, unix_ms, boot);
    h
}

/// Connects `id` (clean session 0) presenting the certificate identity `cert`.
fn connect_with_cert(h: &mut Harness, id: &str, cert: Option<&str>) -> (usize, bool) {
    let conn = h.open(ProtocolVersion::V311);
    h.broker.set_identity(conn, cert.map(str::to_owned));
    h.send(
        conn,
        Packet::Connect(Box::new(connect(id, ProtocolVersion::V311, false))),
    );
    match h.expect(conn) {
        Packet::ConnAck(a) => {
            assert_eq!(a.reason.0, 0);
            (conn, a.session_present)
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[test]
fn restored_session_reads_with_the_acl_of_its_certificate_identity() {
    let mut h = identity_broker(T0, 1);
    let mut state = State::default();
    let (a, _) = connect_with_cert(&mut h, "device", Some("alice"));
    assert_eq!(h.subscribe(a, "alice/#", QoS::AtLeastOnce).reasons[0].0, 1);
    h.send(a, Packet::Disconnect(Default::default()));
    let records = save(&mut h, &mut state);
    assert!(records.iter().any(|r| matches!(
        r,
        Record::SessionUser { identity: Some(i), username: Some(u), .. }
            if i.as_str() == "alice" && u.as_str() == "alice"
    )));

    let mut h = identity_broker(T0 + 1000, 2);
    h.broker.restore_retained(&state, h.now);
    h.broker.restore_sessions(&state, &|_| true, h.now);
    // Published while the session is offline: it is checked with alice's ACL.
    let (anon, _) = connect_with_cert(&mut h, "anon", None);
    h.publish(
        anon,
        "alice/x",
        b"for alice",
        QoS::AtLeastOnce,
        false,
        Some(1),
    );
    let (a, present) = connect_with_cert(&mut h, "device", Some("alice"));
    assert!(present);
    assert_eq!(&h.expect_publish(a).payload[..], b"for alice");
}
