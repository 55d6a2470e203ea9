//! Scenario tests for Mosquitto's per-listener and delivery options (issue 11 part B):
//! `max_qos`, `upgrade_outgoing_qos`, `use_username_as_clientid`.

use super::harness::{connect, will, Harness};
use crate::codec::{AckKind, ByteStr, Packet, ProtocolVersion, QoS, ReasonCode};
use crate::config::Config;

const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// CONNECT with a user name.
fn connect_as(
    id: &str,
    version: ProtocolVersion,
    clean: bool,
    user: &str,
) -> crate::codec::Connect {
    let mut c = connect(id, version, clean);
    c.username = Some(ByteStr::from(user));
    c
}

fn with_max_qos(max: u8) -> Config {
    let mut config = Harness::default_config();
    config.listeners[0].max_qos = max;
    config
}

#[test]
fn max_qos_v5_connack_announces_it_and_suback_is_capped() {
    let mut h = Harness::new(with_max_qos(1));
    let (conn, ack) = h.connect_with(connect("c", V5, true));
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    // [MQTT-3.2.2-9]
    assert_eq!(ack.properties.maximum_qos, Some(1));
    let suback = h.subscribe(conn, "t", QoS::ExactlyOnce);
    assert_eq!(suback.reasons[0], ReasonCode(1));
    // A QoS 2 message to the capped subscription arrives at QoS 1.
    let p = h.connect("p", V5);
    h.publish(p, "t", b"x", QoS::AtLeastOnce, false, Some(7));
    h.expect_ack(p, AckKind::PubAck);
    assert_eq!(h.expect_publish(conn).qos, QoS::AtLeastOnce);
}

#[test]
fn max_qos_default_announces_nothing() {
    let mut h = Harness::new(Harness::default_config());
    let (_, ack) = h.connect_with(connect("c", V5, true));
    assert_eq!(ack.properties.maximum_qos, None);
}

#[test]
fn max_qos_v5_publish_above_it_gets_disconnect_0x9b() {
    let mut h = Harness::new(with_max_qos(1));
    let sub = h.connect("s", V311);
    h.subscribe(sub, "t", QoS::ExactlyOnce);
    let p = h.connect("p", V5);
    h.publish(p, "t", b"x", QoS::ExactlyOnce, false, Some(1));
    match h.expect(p) {
        Packet::Disconnect(d) => assert_eq!(d.reason, ReasonCode::QOS_NOT_SUPPORTED),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    assert!(h.is_closed(p));
    h.assert_idle(sub); // not routed
}

#[test]
fn max_qos_v311_publish_above_it_closes_and_subscribe_is_capped() {
    let mut h = Harness::new(with_max_qos(0));
    let sub = h.connect("s", V311);
    assert_eq!(
        h.subscribe(sub, "t", QoS::AtLeastOnce).reasons[0],
        ReasonCode(0)
    );
    let p = h.connect("p", V311);
    h.publish(p, "t", b"x", QoS::AtLeastOnce, false, Some(1));
    assert!(h.is_closed(p));
    assert!(h.recv(p).is_none(), "3.1.1: no PUBACK, no DISCONNECT");
    h.assert_idle(sub);
    // QoS 0 still flows.
    let p2 = h.connect("p2", V311);
    h.publish(p2, "t", b"y", QoS::AtMostOnce, false, None);
    assert_eq!(h.expect_publish(sub).payload.as_ref(), b"y");
}

#[test]
fn max_qos_will_above_it_refuses_connect() {
    let mut h = Harness::new(with_max_qos(1));
    let mut c = connect("w5", V5, true);
    c.will = Some(will("w", b"bye", QoS::ExactlyOnce, false));
    let (conn, ack) = h.connect_with(c);
    assert_eq!(ack.reason, ReasonCode::QOS_NOT_SUPPORTED);
    assert!(h.is_closed(conn));
    // 3.1.1: closed without CONNACK, as Mosquitto.
    let mut c = connect("w3", V311, true);
    c.will = Some(will("w", b"bye", QoS::ExactlyOnce, false));
    let conn = h.open(V311);
    h.send(conn, Packet::Connect(Box::new(c)));
    assert!(h.is_closed(conn));
    assert!(h.recv(conn).is_none());
    // At the maximum it is fine.
    let mut c = connect("ok", V5, true);
    c.will = Some(will("w", b"bye", QoS::AtLeastOnce, false));
    assert_eq!(h.connect_with(c).1.reason, ReasonCode::SUCCESS);
}

#[test]
fn upgrade_outgoing_qos_delivers_at_the_subscription_qos() {
    for upgrade in [false, true] {
        let mut config = Harness::default_config();
        config.upgrade_outgoing_qos = upgrade;
        let mut h = Harness::new(config);
        let p = h.connect("p", V311);
        h.publish(p, "r", b"kept", QoS::AtMostOnce, true, None);
        let s = h.connect("s", V311);
        h.subscribe(s, "r", QoS::ExactlyOnce);
        let want = if upgrade {
            QoS::ExactlyOnce
        } else {
            QoS::AtMostOnce
        };
        let retained = h.expect_publish(s);
        assert_eq!((retained.qos, retained.retain), (want, true));
        assert_eq!(retained.packet_id.is_some(), upgrade);
        h.subscribe(s, "t", QoS::AtLeastOnce);
        h.publish(p, "t", b"live", QoS::AtMostOnce, false, None);
        let live = h.expect_publish(s);
        let want = if upgrade {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        assert_eq!(live.qos, want, "upgrade_outgoing_qos {upgrade}");
        assert_eq!(live.packet_id.is_some(), upgrade);
    }
}

fn with_username_as_clientid() -> Config {
    let mut config = Harness::default_config();
    config.listeners[0].use_username_as_clientid = true;
    config
}

#[test]
fn use_username_as_clientid_replaces_the_client_id() {
    let mut h = Harness::new(with_username_as_clientid());
    let (a, ack) = h.connect_with(connect_as("first", V311, false, "alice"));
    assert_eq!(ack.reason, ReasonCode::V3_ACCEPTED);
    h.subscribe(a, "t", QoS::AtLeastOnce);
    // Another client id with the same username is the same client: it takes over the
    // session (present) and its subscription.
    let (b, ack) = h.connect_with(connect_as("second", V311, false, "alice"));
    assert!(ack.session_present);
    assert!(h.is_closed(a));
    let (p, _) = h.connect_with(connect_as("p", V311, true, "publisher"));
    h.publish(p, "t", b"x", QoS::AtMostOnce, false, None);
    assert_eq!(h.expect_publish(b).payload.as_ref(), b"x");
}

#[test]
fn use_username_as_clientid_without_username_is_not_authorised() {
    let mut h = Harness::new(with_username_as_clientid());
    let (conn, ack) = h.connect_with(connect("anon", V311, true));
    assert_eq!(ack.reason, ReasonCode::V3_NOT_AUTHORIZED);
    assert!(h.is_closed(conn));
    let (_, ack) = h.connect_with(connect("anon", V5, true));
    assert_eq!(ack.reason, ReasonCode::NOT_AUTHORIZED);
}

#[test]
fn use_username_as_clientid_v5_empty_id_is_assigned_the_username() {
    let mut h = Harness::new(with_username_as_clientid());
    let (_, ack) = h.connect_with(connect_as("", V5, true, "bob"));
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    assert_eq!(
        ack.properties.assigned_client_identifier.as_deref(),
        Some("bob")
    );
}

/// Listener 0 plain, listener 1 under `site1/`.
fn with_mount_point() -> Config {
    let mut config = Harness::default_config();
    let mut mounted = config.listeners[0].clone();
    mounted.port = 1884;
    mounted.mount_point = Some("site1/".into());
    config.listeners.push(mounted);
    config
}

fn connect_on(h: &mut Harness, listener: usize, c: crate::codec::Connect) -> usize {
    let conn = h.open_on(c.protocol, listener);
    h.send(conn, Packet::Connect(Box::new(c)));
    match h.expect(conn) {
        Packet::ConnAck(a) => assert_eq!(a.reason.0, 0, "{a:?}"),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    conn
}

#[test]
fn mount_point_prefixes_topics_in_and_strips_them_out() {
    let mut h = Harness::new(with_mount_point());
    let outside = h.connect("outside", V311);
    h.subscribe(outside, "#", QoS::AtLeastOnce);
    let inner_sub = connect_on(&mut h, 1, connect("inner-sub", V5, true));
    h.subscribe(inner_sub, "a/#", QoS::AtLeastOnce);
    let inner_pub = connect_on(&mut h, 1, connect("inner-pub", V311, true));
    // In: the mounted client's topic lands under site1/ for everyone else.
    h.publish(inner_pub, "a/b", b"in", QoS::AtMostOnce, false, None);
    assert_eq!(h.expect_publish(outside).topic.as_str(), "site1/a/b");
    // Out: a mounted client sees it without the prefix.
    assert_eq!(h.expect_publish(inner_sub).topic.as_str(), "a/b");
    // A plain client's publish under site1/ reaches the mounted one, stripped, at QoS 1.
    let plain = h.connect("plain", V311);
    h.publish(
        plain,
        "site1/a/c",
        b"from outside",
        QoS::AtLeastOnce,
        false,
        Some(3),
    );
    let got = h.expect_publish(inner_sub);
    assert_eq!((got.topic.as_str(), got.qos), ("a/c", QoS::AtLeastOnce));
    assert_eq!(h.expect_publish(outside).topic.as_str(), "site1/a/c");
    // Topics outside site1/ never reach the mounted client.
    h.publish(plain, "a/d", b"elsewhere", QoS::AtMostOnce, false, None);
    assert_eq!(h.expect_publish(outside).topic.as_str(), "a/d");
    h.assert_idle(inner_sub);
    // Unsubscribe is mounted too.
    h.send(
        inner_sub,
        Packet::Unsubscribe(crate::codec::Unsubscribe {
            packet_id: 9,
            filters: smallvec::smallvec![ByteStr::from("a/#")],
            properties: Default::default(),
        }),
    );
    match h.expect(inner_sub) {
        Packet::UnsubAck(a) => assert_eq!(a.reasons[0], ReasonCode::SUCCESS),
        other => panic!("{other:?}"),
    }
    h.publish(plain, "site1/a/e", b"gone", QoS::AtMostOnce, false, None);
    h.assert_idle(inner_sub);
}

#[test]
fn mount_point_applies_to_shared_subscriptions_and_topic_aliases() {
    let mut h = Harness::new(with_mount_point());
    let mut c = connect("inner", V5, true);
    c.properties.topic_alias_maximum = Some(2);
    let inner = connect_on(&mut h, 1, c);
    // `$share/g/hot` under the mount point is the group's filter `site1/hot`.
    h.subscribe(inner, "$share/g/hot", QoS::AtLeastOnce);
    let plain = h.connect("plain", V311);
    h.publish(plain, "hot", b"outside", QoS::AtMostOnce, false, None);
    h.assert_idle(inner);
    let mut got = Vec::new();
    for id in 1..=3 {
        h.publish(plain, "site1/hot", b"x", QoS::AtLeastOnce, false, Some(id));
        let p = h.expect_publish(inner);
        got.push((p.topic.as_str().to_owned(), p.properties.topic_alias));
        h.ack(
            inner,
            crate::codec::AckKind::PubAck,
            p.packet_id.unwrap_or(0),
        );
    }
    // The alias binds the topic the client sees (stripped), then stands for it.
    assert_eq!(
        got,
        [
            ("hot".to_owned(), None),
            ("hot".to_owned(), Some(1)),
            (String::new(), Some(1))
        ]
    );
}

#[test]
fn mount_point_retained_and_wills_are_mounted() {
    let mut h = Harness::new(with_mount_point());
    let outside = h.connect("outside", V311);
    h.subscribe(outside, "site1/#", QoS::AtMostOnce);
    let mut c = connect("dying", V311, true);
    c.will = Some(will("status", b"gone", QoS::AtMostOnce, true));
    let dying = connect_on(&mut h, 1, c);
    h.drop_conn(dying);
    let w = h.expect_publish(outside);
    assert_eq!(
        (w.topic.as_str(), w.payload.as_ref()),
        ("site1/status", &b"gone"[..])
    );
    // The will was retained under site1/: a mounted subscriber gets it stripped.
    let inner = connect_on(&mut h, 1, connect("inner", V311, true));
    h.subscribe(inner, "status", QoS::AtMostOnce);
    let r = h.expect_publish(inner);
    assert_eq!((r.topic.as_str(), r.retain), ("status", true));
}

fn acl(text: &str) -> std::sync::Arc<crate::auth::Security> {
    let acl = crate::auth::Acl::parse(text, std::path::Path::new("acl")).unwrap();
    std::sync::Arc::new(crate::auth::Security::with_domain(crate::auth::Domain {
        allow_anonymous: true,
        passwords: None,
        acl: Some(acl),
    }))
}

#[test]
fn check_retain_source_rechecks_the_publishers_acl_before_sending_a_retained_message() {
    for check in [false, true] {
        let mut config = Harness::default_config();
        config.check_retain_source = check;
        let mut h = Harness::new(config);
        h.broker
            .set_security(acl("topic read #\nuser alice\ntopic write status/#\n"));
        let (alice, _) = h.connect_with(connect_as("alice-dev", V311, true, "alice"));
        h.publish(alice, "status/a", b"up", QoS::AtMostOnce, true, None);
        // An anonymous reader gets it while alice may still write there.
        let r1 = h.connect("r1", V311);
        h.subscribe(r1, "status/#", QoS::AtMostOnce);
        assert_eq!(h.expect_publish(r1).payload.as_ref(), b"up");
        // The ACL is reloaded: alice may no longer write status/#.
        h.broker
            .set_security(acl("topic read #\nuser alice\ntopic write other/#\n"));
        let r2 = h.connect("r2", V311);
        h.subscribe(r2, "status/#", QoS::AtMostOnce);
        if check {
            h.assert_idle(r2);
        } else {
            assert_eq!(h.expect_publish(r2).payload.as_ref(), b"up");
        }
    }
}

/// The source of a retained message is persisted: after a restart, `check_retain_source`
/// still knows whose ACL to ask.
#[test]
fn check_retain_source_survives_a_restart() {
    const T0: u64 = 1_700_000_000_000;
    let config = || {
        let mut c = Harness::default_config();
        c.check_retain_source = true;
        c
    };
    let mut h = Harness::new(config());
    h.broker.enable_persistence(h.now, T0, 1);
    h.broker
        .set_security(acl("topic read #\nuser alice\ntopic write status/#\n"));
    let (alice, _) = h.connect_with(connect_as("alice-dev", V311, true, "alice"));
    h.publish(alice, "status/a", b"up", QoS::AtMostOnce, true, None);
    let mut records = Vec::new();
    h.broker.drain_persist(&mut records);
    let mut state = crate::persist::State::default();
    for r in records {
        state.apply(r);
    }
    assert!(state
        .retained_sources
        .contains_key(&ByteStr::from("status/a")));
    for (rules, delivered) in [
        ("topic read #\nuser alice\ntopic write status/#\n", true),
        ("topic read #\nuser alice\ntopic write other/#\n", false),
    ] {
        let mut h = Harness::new(config());
        h.broker.enable_persistence(h.now, T0 + 1000, 2);
        h.broker.set_security(acl(rules));
        h.broker.restore_retained(&state, h.now);
        let r = h.connect("reader", V311);
        h.subscribe(r, "status/#", QoS::AtMostOnce);
        if delivered {
            assert_eq!(h.expect_publish(r).payload.as_ref(), b"up");
        } else {
            h.assert_idle(r);
        }
    }
}

#[test]
fn memory_limit_refuses_new_messages_until_memory_is_released() {
    let mut config = Harness::default_config();
    config.memory_limit = 4000;
    let mut h = Harness::new(config);
    // A subscriber that reads nothing: what it is sent stays held in its output.
    let slow = h.connect("slow", V311);
    h.subscribe(slow, "t", QoS::AtMostOnce);
    h.stalled.insert(slow);
    let quiet = h.connect("quiet", V311);
    h.subscribe(quiet, "u", QoS::AtMostOnce);
    let p5 = h.connect("p5", V5);
    static KB: [u8; 1000] = [b'x'; 1000];
    for id in 1..=4 {
        h.publish(p5, "t", &KB, QoS::AtLeastOnce, false, Some(id));
        assert_eq!(
            h.expect_ack(p5, AckKind::PubAck).reason,
            ReasonCode::SUCCESS
        );
    }
    // 4 x 1000 bytes held (the gauge adds what it accepts until it refreshes, and sees
    // them after): v5 gets 0x97 and the message goes nowhere.
    h.advance(std::time::Duration::from_millis(20));
    h.publish(p5, "u", b"refused", QoS::AtLeastOnce, false, Some(6));
    assert_eq!(
        h.expect_ack(p5, AckKind::PubAck).reason,
        ReasonCode::QUOTA_EXCEEDED
    );
    h.publish(p5, "u", b"refused", QoS::ExactlyOnce, false, Some(7));
    assert_eq!(
        h.expect_ack(p5, AckKind::PubRec).reason,
        ReasonCode::QUOTA_EXCEEDED
    );
    // 3.1.1 QoS 1: disconnected without PUBACK (the client resends it later).
    let p3 = h.connect("p3", V311);
    h.publish(p3, "u", b"refused", QoS::AtLeastOnce, false, Some(1));
    assert!(h.is_closed(p3));
    assert!(h.recv(p3).is_none());
    // QoS 0 is dropped.
    let p0 = h.connect("p0", V311);
    h.publish(p0, "u", b"dropped", QoS::AtMostOnce, false, None);
    h.assert_idle(quiet);
    assert_eq!(h.broker.stats().publish_refused_memory, 4);
    // The slow subscriber reads: memory is released, messages flow again.
    h.unstall(slow);
    h.advance(std::time::Duration::from_millis(20));
    h.publish(p0, "u", b"again", QoS::AtMostOnce, false, None);
    assert_eq!(h.expect_publish(quiet).payload.as_ref(), b"again");
}

#[test]
fn memory_limit_is_split_across_shards() {
    let mut config = Harness::default_config();
    config.memory_limit = 10_001;
    let share = |c: &Config, n| crate::broker::memory_limit::MemoryLimit::new(c, n).share();
    assert_eq!((share(&config, 1), share(&config, 4)), (10_001, 2501));
    config.memory_limit = 0;
    assert_eq!(share(&config, 4), 0, "unset");
}
