//! Shared subscriptions (`$share/GROUP/FILTER`) without sockets: one member per message
//! on one shard and across shards, the strategies, skipping a member without room, the
//! hand-over of a leaving member's unacknowledged messages, the SUBSCRIBE rules of the
//! spec, and a restart with persistence.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use crate::codec::{
    AckKind, Disconnect, Packet, ProtocolVersion, Publish, QoS, ReasonCode, SubscriptionOptions,
};
use crate::config::{Config, ShareStrategy};
use crate::persist::State;

use super::harness::{connect, Harness};
use super::shards::Mesh;
use crate::broker::ConnId;

const V4: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// The PUBLISH packets `conn` received (other packets are dropped).
fn publishes(h: &mut Harness, conn: ConnId) -> Vec<Publish> {
    let mut out = Vec::new();
    while let Some(p) = h.recv(conn) {
        if let Packet::Publish(p) = p {
            out.push(p);
        }
    }
    out
}

fn qos(q: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos: q,
        ..Default::default()
    }
}

fn config(strategy: ShareStrategy) -> Config {
    Config {
        shared_subscription_strategy: strategy,
        ..Harness::default_config()
    }
}

/// A client of `version` connected to shard `shard` of the mesh.
fn mesh_client(m: &mut Mesh, shard: usize, id: &str, version: ProtocolVersion) -> ConnId {
    let h = &mut m.shards[shard];
    let conn = h.open(version);
    h.send(conn, Packet::Connect(Box::new(connect(id, version, true))));
    m.settle();
    match m.shards[shard].expect(conn) {
        Packet::ConnAck(a) => assert_eq!(a.reason.0, 0),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    conn
}

#[test]
fn one_member_gets_each_message_in_turn_on_one_shard() {
    let mut h = Harness::new(Harness::default_config());
    // 3.1.1 and 5.0 members alike (Mosquitto lets 3.1.1 clients share too).
    let a = h.connect("a", V4);
    let b = h.connect("b", V5);
    let plain = h.connect("plain", V4);
    assert_eq!(
        h.subscribe(a, "$share/g/t/+", QoS::AtMostOnce).reasons[0].0,
        0
    );
    assert_eq!(
        h.subscribe(b, "$share/g/t/+", QoS::AtMostOnce).reasons[0].0,
        0
    );
    h.subscribe(plain, "t/#", QoS::AtMostOnce);
    let p = h.connect("p", V4);
    for _ in 0..10 {
        h.publish(p, "t/x", b"m", QoS::AtMostOnce, false, None);
    }
    let (na, nb) = (publishes(&mut h, a).len(), publishes(&mut h, b).len());
    assert_eq!((na, nb), (5, 5), "round robin splits the stream evenly");
    assert_eq!(
        publishes(&mut h, plain).len(),
        10,
        "a plain subscriber gets all"
    );
    assert_eq!(h.broker.stats.subscriptions, 3);
}

#[test]
fn exactly_one_member_per_message_across_three_shards() {
    let mut m = Mesh::with_config(3, &Harness::default_config());
    let members = [
        (0, mesh_client(&mut m, 0, "m0", V5)),
        (1, mesh_client(&mut m, 1, "m1", V4)),
        (2, mesh_client(&mut m, 2, "m2", V5)),
        (2, mesh_client(&mut m, 2, "m3", V5)),
    ];
    for &(s, c) in &members {
        assert_eq!(
            m.subscribe(s, c, "$share/work/jobs", QoS::AtLeastOnce)
                .reasons[0]
                .0,
            1
        );
    }
    // Every shard knows every shard's member count.
    for s in 0..3 {
        assert_eq!(
            m.shards[s]
                .broker
                .routing
                .groups()
                .counts("$share/work/jobs"),
            [1, 1, 2]
        );
    }
    let p0 = mesh_client(&mut m, 0, "p0", V4);
    let p1 = mesh_client(&mut m, 1, "p1", V4);
    for i in 0..40u16 {
        let (s, p) = if i % 2 == 0 { (0, p0) } else { (1, p1) };
        let q = if i % 4 < 2 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        m.shards[s].publish(
            p,
            "jobs",
            b"j",
            q,
            false,
            (q != QoS::AtMostOnce).then_some(i + 1),
        );
        m.settle();
    }
    let mut total = 0;
    for &(s, c) in &members {
        let got = publishes(&mut m.shards[s], c);
        for p in &got {
            if let Some(id) = p.packet_id {
                m.shards[s].ack(c, AckKind::PubAck, id);
            }
        }
        // Each publishing shard walks the 4 members in turn: 20 / 4 each.
        assert_eq!(got.len(), 10, "member on shard {s}");
        total += got.len();
    }
    assert_eq!(total, 40, "every message to exactly one member");
}

#[test]
fn a_group_costs_no_more_cross_shard_messages_than_a_subscription() {
    let mut m = Mesh::with_config(2, &Harness::default_config());
    let member = mesh_client(&mut m, 1, "member", V5);
    let plain = mesh_client(&mut m, 1, "plain", V5);
    m.subscribe(1, member, "$share/g/t", QoS::AtMostOnce);
    m.subscribe(1, plain, "t", QoS::AtMostOnce);
    let p = mesh_client(&mut m, 0, "p", V4);
    let before = m.publishes_sent;
    for _ in 0..5 {
        m.shards[0].publish(p, "t", b"x", QoS::AtMostOnce, false, None);
    }
    m.settle();
    // One mailbox message per publish carries both the plain and the group delivery.
    assert_eq!(m.publishes_sent - before, 5);
    assert_eq!(publishes(&mut m.shards[1], member).len(), 5);
    assert_eq!(publishes(&mut m.shards[1], plain).len(), 5);
}

#[test]
fn a_member_without_room_is_skipped_and_counted() {
    let cfg = Config {
        max_inflight_messages: 1,
        ..Harness::default_config()
    };
    let mut h = Harness::new(cfg);
    let stuck = h.connect("stuck", V5);
    let ok = h.connect("ok", V5);
    h.subscribe(stuck, "$share/g/t", QoS::AtLeastOnce);
    h.subscribe(ok, "$share/g/t", QoS::AtLeastOnce);
    let p = h.connect("p", V4);
    let mut ok_got = 0;
    for i in 1..=10 {
        h.publish(p, "t", b"m", QoS::AtLeastOnce, false, Some(i));
        for m in publishes(&mut h, ok) {
            ok_got += 1;
            h.ack(ok, AckKind::PubAck, m.packet_id.unwrap());
        }
    }
    // "stuck" never acknowledges: its window (1) and one queued message, then it is
    // passed over while "ok" has room.
    assert_eq!(publishes(&mut h, stuck).len(), 1);
    let stuck_key = h.broker.sessions.live_key_of(&"stuck".into()).unwrap();
    assert_eq!(
        h.broker
            .sessions
            .get(stuck_key)
            .unwrap()
            .session
            .queued_len(),
        1
    );
    assert_eq!(ok_got, 8);
    assert!(
        h.broker.stats.shared_skipped >= 3,
        "{}",
        h.broker.stats.shared_skipped
    );

    // Its session ends: the 2 messages it never acknowledged go to "ok".
    h.send(stuck, Packet::Disconnect(Disconnect::default()));
    let mut handed = 0;
    loop {
        let got = publishes(&mut h, ok);
        if got.is_empty() {
            break;
        }
        for m in got {
            handed += 1;
            h.ack(ok, AckKind::PubAck, m.packet_id.unwrap());
        }
    }
    assert_eq!(handed, 2, "handed over on session end");
    assert_eq!(ok_got + handed, 10, "nothing lost");
}

#[test]
fn an_unsubscribing_member_hands_its_unacked_messages_over() {
    let mut h = Harness::new(Harness::default_config());
    let a = h.connect("a", V4);
    let b = h.connect("b", V4);
    h.subscribe(a, "$share/g/t", QoS::ExactlyOnce);
    h.subscribe(b, "$share/g/t", QoS::ExactlyOnce);
    let p = h.connect("p", V4);
    for i in 1..=4 {
        h.publish(p, "t", b"m", QoS::AtLeastOnce, false, Some(i));
    }
    assert_eq!(publishes(&mut h, a).len(), 2);
    assert_eq!(publishes(&mut h, b).len(), 2);
    h.send(
        a,
        Packet::Unsubscribe(crate::codec::Unsubscribe {
            packet_id: 9,
            filters: smallvec::smallvec!["$share/g/t".into()],
            properties: Default::default(),
        }),
    );
    assert!(matches!(h.expect(a), Packet::UnsubAck(_)));
    let handed = publishes(&mut h, b);
    assert_eq!(handed.len(), 2, "a's two unacknowledged messages");
    assert!(handed.iter().all(|p| p.qos == QoS::AtLeastOnce));
    // a no longer gets the group's messages.
    h.publish(p, "t", b"m", QoS::AtLeastOnce, false, Some(5));
    h.assert_idle(a);
    assert_eq!(publishes(&mut h, b).len(), 1);
}

#[test]
fn a_member_that_ends_hands_over_to_a_member_on_another_shard() {
    let mut m = Mesh::with_config(2, &Harness::default_config());
    let a = mesh_client(&mut m, 0, "a", V5);
    let b = mesh_client(&mut m, 1, "b", V5);
    m.subscribe(0, a, "$share/g/t", QoS::AtLeastOnce);
    m.subscribe(1, b, "$share/g/t", QoS::AtLeastOnce);
    let p = mesh_client(&mut m, 1, "p", V4);
    for i in 1..=4 {
        m.shards[1].publish(p, "t", b"m", QoS::AtLeastOnce, false, Some(i));
        m.settle();
    }
    assert_eq!(publishes(&mut m.shards[0], a).len(), 2);
    let b_first = publishes(&mut m.shards[1], b);
    assert_eq!(b_first.len(), 2);
    m.shards[0].drop_conn(a); // clean session: it ends
    m.settle();
    let handed = publishes(&mut m.shards[1], b);
    assert_eq!(
        handed.len(),
        2,
        "a's unacknowledged messages reach b on shard 1"
    );
    assert_eq!(
        m.shards[1].broker.routing.groups().counts("$share/g/t"),
        [0, 1]
    );
}

#[test]
fn hash_topic_keeps_a_topic_on_one_member() {
    let mut h = Harness::new(config(ShareStrategy::HashTopic));
    let members: Vec<ConnId> = (0..3).map(|i| h.connect(&format!("m{i}"), V4)).collect();
    for &c in &members {
        h.subscribe(c, "$share/g/t/+", QoS::AtMostOnce);
    }
    let p = h.connect("p", V4);
    for _ in 0..5 {
        h.publish(p, "t/a", b"x", QoS::AtMostOnce, false, None);
    }
    let counts: Vec<usize> = members
        .iter()
        .map(|&c| publishes(&mut h, c).len())
        .collect();
    assert_eq!(counts.iter().sum::<usize>(), 5);
    assert!(counts.contains(&5), "{counts:?}");
}

#[test]
fn sticky_stays_on_one_member_until_it_leaves() {
    let mut h = Harness::new(config(ShareStrategy::Sticky));
    let a = h.connect("a", V4);
    let b = h.connect("b", V4);
    h.subscribe(a, "$share/g/t", QoS::AtMostOnce);
    h.subscribe(b, "$share/g/t", QoS::AtMostOnce);
    let p = h.connect("p", V4);
    for _ in 0..4 {
        h.publish(p, "t", b"x", QoS::AtMostOnce, false, None);
    }
    let (na, nb) = (publishes(&mut h, a).len(), publishes(&mut h, b).len());
    assert!((na, nb) == (4, 0) || (na, nb) == (0, 4), "{na} {nb}");
    let (gone, other) = if na == 4 { (a, b) } else { (b, a) };
    h.drop_conn(gone);
    h.publish(p, "t", b"x", QoS::AtMostOnce, false, None);
    assert_eq!(publishes(&mut h, other).len(), 1);
}

#[test]
fn random_and_hash_client_deliver_each_message_once() {
    for strategy in [ShareStrategy::Random, ShareStrategy::HashClient] {
        let mut h = Harness::new(config(strategy));
        let a = h.connect("a", V4);
        let b = h.connect("b", V4);
        h.subscribe(a, "$share/g/t", QoS::AtMostOnce);
        h.subscribe(b, "$share/g/t", QoS::AtMostOnce);
        let p = h.connect("p", V4);
        for _ in 0..20 {
            h.publish(p, "t", b"x", QoS::AtMostOnce, false, None);
        }
        let (na, nb) = (publishes(&mut h, a).len(), publishes(&mut h, b).len());
        assert_eq!(na + nb, 20, "{strategy:?}");
        if strategy == ShareStrategy::HashClient {
            assert!(na == 20 || nb == 20, "one publisher, one member: {na} {nb}");
        }
    }
}

#[test]
fn mqtt_4_8_2_1_malformed_share_filters_get_0x8f() {
    let mut h = Harness::new(Harness::default_config());
    let c = h.connect("c", V5);
    for bad in [
        "$share//t",
        "$share/g+/t",
        "$share/#/t",
        "$share/g",
        "$share/g/",
        "$share/",
    ] {
        let ack = h.subscribe(c, bad, QoS::AtMostOnce);
        assert_eq!(ack.reasons[0], ReasonCode::TOPIC_FILTER_INVALID, "{bad}");
    }
    let v3 = h.connect("v3", V4);
    let ack = h.subscribe(v3, "$share//t", QoS::AtMostOnce);
    assert_eq!(ack.reasons[0], ReasonCode::V3_SUBACK_FAILURE);
    assert_eq!(h.broker.stats.subscriptions, 0);
}

#[test]
fn mqtt_3_8_3_4_no_local_on_a_shared_subscription_is_a_protocol_error() {
    let mut h = Harness::new(Harness::default_config());
    let c = h.connect("c", V5);
    let opts = SubscriptionOptions {
        no_local: true,
        ..qos(QoS::AtMostOnce)
    };
    h.send(
        c,
        Packet::Subscribe(crate::codec::Subscribe {
            packet_id: 1,
            filters: smallvec::smallvec![("$share/g/t".into(), opts)],
            properties: Default::default(),
        }),
    );
    match h.expect(c) {
        Packet::Disconnect(d) => assert_eq!(d.reason, ReasonCode::PROTOCOL_ERROR),
        other => panic!("expected DISCONNECT 0x82, got {other:?}"),
    }
    assert!(h.is_closed(c));
}

#[test]
fn mqtt_3_8_4_no_retained_messages_on_a_shared_subscribe() {
    let mut h = Harness::new(Harness::default_config());
    let p = h.connect("p", V4);
    h.publish(p, "t", b"kept", QoS::AtMostOnce, true, None);
    let c = h.connect("c", V5);
    h.subscribe(c, "$share/g/t", QoS::AtMostOnce);
    h.assert_idle(c);
    // The plain subscription gets it (the store has it).
    h.subscribe(c, "t", QoS::AtMostOnce);
    assert_eq!(publishes(&mut h, c).len(), 1);
}

#[test]
fn subscription_identifier_comes_with_a_shared_delivery() {
    let mut h = Harness::new(Harness::default_config());
    let c = h.connect("c", V5);
    h.subscribe_opts(c, "$share/g/t", qos(QoS::AtLeastOnce), Some(42));
    let p = h.connect("p", V4);
    h.publish(p, "t", b"x", QoS::AtLeastOnce, false, Some(1));
    let got = h.expect_publish(c);
    assert_eq!(got.properties.subscription_identifiers.as_slice(), [42]);
}

#[test]
fn resubscribing_a_member_does_not_add_a_second_one() {
    let mut h = Harness::new(Harness::default_config());
    let a = h.connect("a", V4);
    let b = h.connect("b", V4);
    h.subscribe(a, "$share/g/t", QoS::AtMostOnce);
    h.subscribe(a, "$share/g/t", QoS::AtLeastOnce); // [MQTT-3.8.4-3] replaces
    h.subscribe(b, "$share/g/t", QoS::AtMostOnce);
    let p = h.connect("p", V4);
    for _ in 0..4 {
        h.publish(p, "t", b"x", QoS::AtMostOnce, false, None);
    }
    assert_eq!(publishes(&mut h, a).len(), 2);
    assert_eq!(publishes(&mut h, b).len(), 2);
}

#[test]
fn a_persistent_member_keeps_its_shared_subscription_across_a_restart() {
    const T0: u64 = 1_700_000_000_000;
    let mut h = Harness::new(Harness::default_config());
    h.broker.enable_persistence(h.now, T0, 1);
    let mut state = State::default();
    let mut c = connect("worker", V4, false);
    c.clean_start = false;
    let (w, _) = h.connect_with(c.clone());
    h.subscribe(w, "$share/g/jobs", QoS::AtLeastOnce);
    let mut out = Vec::new();
    h.broker.drain_persist(&mut out);
    for r in out {
        state.apply(r);
    }

    let mut h = Harness::new(Harness::default_config());
    h.broker
        .enable_persistence(h.now, T0 + Duration::from_secs(5).as_millis() as u64, 2);
    h.broker.restore_sessions(&state, &|_| true, h.now);
    h.drive();
    let (w, ack) = h.connect_with(c);
    assert!(ack.session_present);
    let other = h.connect("other", V4);
    h.subscribe(other, "$share/g/jobs", QoS::AtLeastOnce);
    let p = h.connect("p", V4);
    for i in 1..=4 {
        h.publish(p, "jobs", b"j", QoS::AtLeastOnce, false, Some(i));
    }
    assert_eq!(
        publishes(&mut h, w).len(),
        2,
        "restored member is in the group"
    );
    assert_eq!(publishes(&mut h, other).len(), 2);
}

#[test]
fn acl_rules_apply_to_the_filter_without_the_share_prefix() {
    let mut h = Harness::new(Harness::default_config());
    let acl = crate::auth::Acl::parse(
        "topic write #\nuser w\ntopic read jobs/#\n",
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
    let mut c = connect("worker", V5, true);
    c.username = Some("w".into());
    let (w, _) = h.connect_with(c);
    // As Mosquitto: the rule for "jobs/#" grants "$share/g/jobs/#".
    let ok = h.subscribe(w, "$share/g/jobs/#", QoS::AtLeastOnce);
    assert_eq!(ok.reasons[0].0, 1);
    let denied = h.subscribe(w, "$share/g/secret/#", QoS::AtLeastOnce);
    assert_eq!(denied.reasons[0], ReasonCode::NOT_AUTHORIZED);
    let p = h.connect("p", V4);
    h.publish(p, "jobs/1", b"j", QoS::AtMostOnce, false, None);
    h.publish(p, "secret/1", b"s", QoS::AtMostOnce, false, None);
    let got = publishes(&mut h, w);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].topic.as_str(), "jobs/1");
}
