//! Sans-IO multi-shard scenarios: N brokers joined by in-memory mailboxes (a `Mesh` that
//! shuttles `poll_shard_message` output into `on_shard_message` until quiet). Covers the
//! replicated interest index, cross-shard fan-out, retained replication, and the home
//! shard / session-move protocol.
#![allow(clippy::unwrap_used)]

use smallvec::smallvec;

use crate::codec::{AckKind, ByteStr, Packet, ProtocolVersion, QoS, SubAck, Subscribe};

use super::harness::{connect, Harness};
use crate::broker::{ConnId, ShardMsg};

const V4: ProtocolVersion = ProtocolVersion::V311;

fn subscribe_packet(filter: &str, qos: QoS) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: smallvec![(
            ByteStr::from(filter),
            crate::codec::SubscriptionOptions {
                qos,
                ..Default::default()
            }
        )],
        properties: Default::default(),
    })
}

pub(super) struct Mesh {
    pub(super) shards: Vec<Harness>,
    /// Messages that crossed shards (for "nothing sent without interest" checks).
    pub(super) publishes_sent: usize,
}

impl Mesh {
    fn new(n: usize) -> Self {
        Self::with_config(n, &Harness::default_config())
    }

    pub(super) fn with_config(n: usize, config: &crate::config::Config) -> Self {
        Self {
            shards: Harness::new_shards(config, n),
            publishes_sent: 0,
        }
    }

    /// Delivers every pending shard message (and drives the outputs) until quiet.
    pub(super) fn settle(&mut self) {
        let order: Vec<usize> = (0..self.shards.len()).collect();
        while self.step(&order) {}
    }

    /// One round: collects every shard's pending messages, in `order` of sender, and
    /// delivers them. Returns whether anything moved.
    fn step(&mut self, order: &[usize]) -> bool {
        let mut moved = Vec::new();
        for &i in order {
            let h = &mut self.shards[i];
            h.drive();
            while let Some((to, msg)) = h.broker.poll_shard_message() {
                moved.push((i, to, msg));
            }
        }
        if moved.is_empty() {
            return false;
        }
        {
            for (from, to, msg) in moved {
                if matches!(msg, ShardMsg::Publish { .. } | ShardMsg::Shared(_)) {
                    self.publishes_sent += 1;
                }
                let h = &mut self.shards[to];
                let now = h.now;
                h.broker.on_shard_message(from, msg, now);
            }
        }
        true
    }

    fn is_stub(&self, shard: usize, client_id: &str) -> bool {
        let b = &self.shards[shard].broker;
        b.sessions
            .key_of(&crate::codec::ByteStr::from(client_id))
            .and_then(|k| b.sessions.get(k))
            .is_some_and(crate::broker::sessions::Slot::is_stub)
    }

    /// SUBSCRIBE, settle, and take the SUBACK out of what the client received (matching
    /// PUBLISH packets may precede it [MQTT-3.8.4] and stay queued).
    pub(super) fn subscribe(
        &mut self,
        shard: usize,
        conn: ConnId,
        filter: &str,
        qos: QoS,
    ) -> SubAck {
        self.shards[shard].send(conn, subscribe_packet(filter, qos));
        self.settle();
        let received = &mut self.shards[shard].clients.get_mut(&conn).unwrap().received;
        let at = received
            .iter()
            .position(|p| matches!(p, Packet::SubAck(_)))
            .expect("no SUBACK after settling");
        match received.remove(at) {
            Some(Packet::SubAck(a)) => a,
            _ => unreachable!(),
        }
    }

    pub(super) fn connect(&mut self, shard: usize, id: &str, clean: bool) -> (ConnId, bool) {
        let h = &mut self.shards[shard];
        let conn = h.open(V4);
        h.send(conn, Packet::Connect(Box::new(connect(id, V4, clean))));
        self.settle();
        match self.shards[shard].expect(conn) {
            Packet::ConnAck(a) => {
                assert_eq!(a.reason.0, 0);
                (conn, a.session_present)
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }
}

#[test]
fn interest_index_follows_subscriptions() {
    let mut m = Mesh::new(2);
    let (publ, _) = m.connect(0, "pub", true);
    let (sub, _) = m.connect(1, "sub", true);
    // No subscriber anywhere: nothing crosses.
    m.shards[0].publish(publ, "a/b", b"x", QoS::AtMostOnce, false, None);
    m.settle();
    assert_eq!(m.publishes_sent, 0);
    m.subscribe(1, sub, "a/+", QoS::AtMostOnce);
    m.settle();
    assert_eq!(m.shards[0].broker.routing.remote_dests("a/b"), 0b10);
    m.shards[0].publish(publ, "a/b", b"x", QoS::AtMostOnce, false, None);
    m.settle();
    assert_eq!(m.publishes_sent, 1);
    assert_eq!(&m.shards[1].expect_publish(sub).payload[..], b"x");
    // A second subscriber to the same filter on the same shard does not re-announce;
    // the last one leaving withdraws the interest.
    let (sub2, _) = m.connect(1, "sub2", true);
    m.subscribe(1, sub2, "a/+", QoS::AtMostOnce);
    m.shards[1].drop_conn(sub2);
    m.settle();
    assert_eq!(m.shards[0].broker.routing.remote_dests("a/b"), 0b10);
    m.shards[1].drop_conn(sub);
    m.settle();
    assert_eq!(m.shards[0].broker.routing.remote_dests("a/b"), 0);
    m.shards[0].publish(publ, "a/b", b"y", QoS::AtMostOnce, false, None);
    m.settle();
    assert_eq!(m.publishes_sent, 1);
}

#[test]
fn cross_shard_qos1_is_delivered_in_order_and_acknowledged() {
    let mut m = Mesh::new(3);
    let (sub1, _) = m.connect(1, "s1", true);
    let (sub2, _) = m.connect(2, "s2", true);
    m.subscribe(1, sub1, "t", QoS::AtLeastOnce);
    m.subscribe(2, sub2, "#", QoS::AtLeastOnce);
    let (publ, _) = m.connect(0, "p", true);
    m.settle();
    for (i, payload) in [&b"1"[..], b"2", b"3"].into_iter().enumerate() {
        let id = u16::try_from(i + 1).unwrap();
        m.shards[0].publish(
            publ,
            "t",
            payload.to_vec().leak(),
            QoS::AtLeastOnce,
            false,
            Some(id),
        );
        assert_eq!(m.shards[0].expect_ack(publ, AckKind::PubAck).packet_id, id);
    }
    m.settle();
    // One Arc per destination shard per message.
    assert_eq!(m.publishes_sent, 6);
    for (shard, conn) in [(1, sub1), (2, sub2)] {
        for want in [b"1", b"2", b"3"] {
            let p = m.shards[shard].expect_publish(conn);
            assert_eq!(p.qos, QoS::AtLeastOnce);
            assert_eq!(&p.payload[..], want);
        }
    }
}

#[test]
fn retained_messages_are_replicated_to_every_shard() {
    let mut m = Mesh::new(2);
    let (publ, _) = m.connect(0, "p", true);
    m.shards[0].publish(publ, "r/1", b"kept", QoS::AtMostOnce, true, None);
    m.settle();
    let (sub, _) = m.connect(1, "s", true);
    m.shards[1].send(sub, subscribe_packet("r/#", QoS::AtMostOnce));
    m.settle();
    // The SUBACK waited for shard 0's interest acknowledgement; the retained message
    // follows it.
    assert!(matches!(m.shards[1].expect(sub), Packet::SubAck(_)));
    let p = m.shards[1].expect_publish(sub);
    assert!(p.retain);
    assert_eq!(&p.payload[..], b"kept");
    // Deleting it (empty payload) deletes every replica.
    m.shards[0].publish(publ, "r/1", b"", QoS::AtMostOnce, true, None);
    m.settle();
    assert_eq!(m.shards[1].broker.routing.retained_len(), 0);
}

#[test]
fn reconnect_on_another_shard_moves_the_session_with_its_queue() {
    let mut m = Mesh::new(2);
    let (c, present) = m.connect(0, "durable", false);
    assert!(!present);
    m.subscribe(0, c, "q/#", QoS::AtLeastOnce);
    m.shards[0].drop_conn(c);
    m.settle();
    let (publ, _) = m.connect(1, "p", true);
    for (i, payload) in [&b"a"[..], b"b"].into_iter().enumerate() {
        let id = u16::try_from(i + 1).unwrap();
        m.shards[1].publish(
            publ,
            "q/x",
            payload.to_vec().leak(),
            QoS::AtLeastOnce,
            false,
            Some(id),
        );
    }
    m.settle();
    let (c2, present) = m.connect(1, "durable", false);
    assert!(present, "[MQTT-3.2.2-2] session present after the move");
    for want in [b"a", b"b"] {
        assert_eq!(&m.shards[1].expect_publish(c2).payload[..], want);
    }
    // The stub on shard 0 is gone and the subscription now lives on shard 1 only.
    assert!(!m.shards[0].broker.sessions.has_client_ids());
    assert_eq!(m.shards[0].broker.routing.local_subscriptions(), 0);
    assert!(!m.shards[0]
        .broker
        .cross
        .advertises(&crate::codec::ByteStr::from("q/#")));
    m.shards[1].publish(publ, "q/y", b"c", QoS::AtLeastOnce, false, Some(3));
    m.settle();
    assert_eq!(&m.shards[1].expect_publish(c2).payload[..], b"c");
    assert!(m.shards[0].clients[&c]
        .received
        .iter()
        .all(|p| !matches!(p, Packet::Publish(_))));
}

#[test]
fn live_takeover_across_shards_closes_the_old_connection() {
    let mut m = Mesh::new(2);
    let (old, _) = m.connect(0, "dup", false);
    m.subscribe(0, old, "t", QoS::AtLeastOnce);
    let (new, present) = m.connect(1, "dup", false);
    assert!(present);
    assert!(
        m.shards[0].is_closed(old),
        "[MQTT-3.1.4-3] old connection closed"
    );
    let (publ, _) = m.connect(0, "p", true);
    m.shards[0].publish(publ, "t", b"after", QoS::AtLeastOnce, false, Some(1));
    m.settle();
    assert_eq!(&m.shards[1].expect_publish(new).payload[..], b"after");
}

#[test]
fn stub_forwards_messages_that_raced_the_move() {
    let mut m = Mesh::new(2);
    let (c, _) = m.connect(0, "mover", false);
    m.subscribe(0, c, "t", QoS::AtLeastOnce);
    m.shards[0].drop_conn(c);
    m.settle();
    // Start the move but deliver a publish to the old shard before it completes: the
    // publisher's shard 1 still believes only shard 0 is interested.
    let (publ, _) = m.connect(1, "p", true);
    let conn = m.shards[1].open(V4);
    m.shards[1].send(conn, Packet::Connect(Box::new(connect("mover", V4, false))));
    m.shards[1].publish(publ, "t", b"raced", QoS::AtLeastOnce, false, Some(1));
    m.settle();
    let ack = m.shards[1].expect(conn);
    assert!(matches!(ack, Packet::ConnAck(a) if a.session_present));
    assert_eq!(&m.shards[1].expect_publish(conn).payload[..], b"raced");
    assert!(m.shards[1].recv(conn).is_none(), "delivered once");
}

#[test]
fn retained_for_a_wildcard_is_sent_in_budgeted_batches() {
    let mut h = Harness::new(Harness::default_config());
    let publ = h.connect("p", V4);
    let n = crate::broker::routing::RETAINED_BATCH * 2 + 7;
    for i in 0..n {
        let topic: &'static str = format!("r/{i}").leak();
        h.publish(publ, topic, b"v", QoS::AtMostOnce, true, None);
    }
    let sub = h.connect("s", V4);
    h.send(
        sub,
        Packet::Subscribe(crate::codec::Subscribe {
            packet_id: 1,
            filters: smallvec::smallvec![(
                crate::codec::ByteStr::from("r/#"),
                crate::codec::SubscriptionOptions::default()
            )],
            properties: Default::default(),
        }),
    );
    // `send` drives deferred work to the end: SUBACK first, then every retained message.
    assert!(matches!(h.expect(sub), Packet::SubAck(_)));
    let mut got = 0;
    while let Some(Packet::Publish(p)) = h.recv(sub) {
        assert!(p.retain);
        got += 1;
    }
    assert_eq!(got, n);
}

#[test]
fn retained_batches_leave_the_rest_for_later() {
    let mut h = Harness::new(Harness::default_config());
    let publ = h.connect("p", V4);
    for i in 0..(crate::broker::routing::RETAINED_BATCH + 1) {
        let topic: &'static str = format!("r/{i}").leak();
        h.publish(publ, topic, b"v", QoS::AtMostOnce, true, None);
    }
    let sub = h.connect("s", V4);
    let mut buf = bytes::BytesMut::new();
    crate::codec::encode(
        &Packet::Subscribe(crate::codec::Subscribe {
            packet_id: 1,
            filters: smallvec::smallvec![(
                crate::codec::ByteStr::from("r/#"),
                crate::codec::SubscriptionOptions::default()
            )],
            properties: Default::default(),
        }),
        V4,
        &mut buf,
    )
    .unwrap();
    let now = h.now;
    h.broker.on_read(sub, &mut buf, now);
    assert!(
        h.broker.has_deferred_work(),
        "one batch now, the rest deferred"
    );
    assert!(h.broker.run_deferred(now));
    assert!(!h.broker.has_deferred_work());
}

#[test]
fn concurrent_retained_sets_converge_on_every_shard() {
    let mut m = Mesh::new(3);
    let (a, _) = m.connect(0, "a", true);
    let (b, _) = m.connect(1, "b", true);
    m.settle();
    // Both set the same topic before either replica update is delivered.
    m.shards[0].publish(a, "r/x", b"from-a", QoS::AtMostOnce, true, None);
    m.shards[1].publish(b, "r/x", b"from-b", QoS::AtMostOnce, true, None);
    m.settle();
    let values: Vec<Vec<u8>> = m
        .shards
        .iter()
        .map(|h| {
            h.broker
                .routing
                .retained()
                .get("r/x")
                .unwrap()
                .payload
                .to_vec()
        })
        .collect();
    assert_eq!(values[0], values[1]);
    assert_eq!(values[1], values[2]);
}

/// A publish from a third shard that reaches the new shard before the session does, and
/// the old shard after it left, is forwarded once (not lost); one that reaches the new
/// shard after the install is delivered there and not forwarded again.
#[test]
fn handoff_watermarks_neither_lose_nor_duplicate() {
    let mut m = Mesh::new(3);
    let (c, _) = m.connect(0, "mover", false);
    m.subscribe(0, c, "t", QoS::AtLeastOnce);
    m.shards[0].drop_conn(c);
    // Shard 1 already wants "t" (another subscriber), so publishers address it directly.
    let (other, _) = m.connect(1, "other", true);
    m.subscribe(1, other, "t", QoS::AtMostOnce);
    let (publ, _) = m.connect(2, "p", true);
    m.settle();
    // The move starts; step until shard 0 has handed the session over.
    let conn = m.shards[1].open(V4);
    m.shards[1].send(conn, Packet::Connect(Box::new(connect("mover", V4, false))));
    let order = [0, 1, 2];
    while !m.is_stub(0, "mover") {
        assert!(m.step(&order), "the move never started");
    }
    // Published now: shard 2's copies are delivered before the session (Moved) reaches
    // shard 1, so shard 1 cannot deliver it and shard 0's stub must hold and forward it.
    m.shards[2].publish(publ, "t", b"raced", QoS::AtLeastOnce, false, Some(1));
    assert!(m.step(&[2, 0, 1]));
    // Published after the install reaches shard 1 directly; the stub must not forward it.
    m.settle();
    m.shards[2].publish(publ, "t", b"after", QoS::AtLeastOnce, false, Some(2));
    m.settle();
    assert!(matches!(m.shards[1].expect(conn), Packet::ConnAck(a) if a.session_present));
    let mut got = Vec::new();
    while let Some(p) = m.shards[1].recv(conn) {
        if let Packet::Publish(p) = p {
            got.push(p.payload.to_vec());
        }
    }
    assert_eq!(got, vec![b"raced".to_vec(), b"after".to_vec()]);
    assert!(!m.is_stub(0, "mover"), "stub removed after Installed");
}

fn has_suback(m: &Mesh, shard: usize, conn: ConnId) -> bool {
    m.shards[shard].clients[&conn]
        .received
        .iter()
        .any(|p| matches!(p, Packet::SubAck(_)))
}

/// After SUBACK, a publish on any shard matching the filter is delivered: the SUBACK of a
/// filter's first subscriber waits until every other shard applied the interest, and so
/// does a second subscriber's while that interest is still in flight.
#[test]
fn suback_waits_for_every_shard_to_apply_the_interest() {
    let mut m = Mesh::new(3);
    let (sub, _) = m.connect(1, "sub", true);
    let (sub2, _) = m.connect(1, "sub2", true);
    let (known, _) = m.connect(1, "known", true);
    let (publ, _) = m.connect(2, "pub", true);
    m.subscribe(1, known, "k", QoS::AtMostOnce);
    m.shards[1].send(sub, subscribe_packet("s/+", QoS::AtLeastOnce));
    m.shards[1].send(sub2, subscribe_packet("s/+", QoS::AtMostOnce));
    // A filter every shard already knows is acknowledged at once.
    m.shards[1].send(known, subscribe_packet("k", QoS::AtLeastOnce));
    assert!(has_suback(&m, 1, known));
    assert!(
        !has_suback(&m, 1, sub),
        "SUBACK before the other shards know"
    );
    assert!(
        !has_suback(&m, 1, sub2),
        "second subscriber overtook the interest"
    );
    // The Interest reaches shards 0 and 2; only shard 0's acknowledgement comes back.
    let mut acks_from_2 = Vec::new();
    assert!(m.step(&[1]));
    m.shards[0].drive();
    while let Some((to, msg)) = m.shards[0].broker.poll_shard_message() {
        let now = m.shards[to].now;
        m.shards[to].broker.on_shard_message(0, msg, now);
    }
    while let Some(x) = m.shards[2].broker.poll_shard_message() {
        acks_from_2.push(x);
    }
    m.shards[1].drive();
    assert!(
        !has_suback(&m, 1, sub),
        "SUBACK before shard 2 acknowledged"
    );
    assert!(!has_suback(&m, 1, sub2));
    for (to, msg) in acks_from_2 {
        let now = m.shards[to].now;
        m.shards[to].broker.on_shard_message(2, msg, now);
    }
    m.shards[1].drive();
    assert!(has_suback(&m, 1, sub));
    assert!(has_suback(&m, 1, sub2));
    // Causally after the SUBACK, a publish on shard 2 (the last to acknowledge) is
    // delivered.
    m.shards[2].publish(publ, "s/x", b"after", QoS::AtLeastOnce, false, Some(1));
    m.settle();
    m.shards[2].expect_ack(publ, AckKind::PubAck);
    assert!(matches!(m.shards[1].expect(sub), Packet::SubAck(_)));
    assert_eq!(&m.shards[1].expect_publish(sub).payload[..], b"after");
    assert!(matches!(m.shards[1].expect(sub2), Packet::SubAck(_)));
    assert_eq!(&m.shards[1].expect_publish(sub2).payload[..], b"after");
    // A subscriber that leaves before its SUBACK is released just drops it.
    let (gone, _) = m.connect(2, "gone", true);
    m.shards[2].send(gone, subscribe_packet("g", QoS::AtMostOnce));
    m.shards[2].drop_conn(gone);
    m.settle();
    assert!(!m.shards[2].broker.cross.has_held_subacks());
    assert!(!has_suback(&m, 2, gone));
}

#[test]
fn one_shard_sends_suback_at_once() {
    let mut h = Harness::new(Harness::default_config());
    let c = h.connect("solo", V4);
    h.send(c, subscribe_packet("t", QoS::AtMostOnce));
    assert!(matches!(h.expect(c), Packet::SubAck(_)));
}

#[test]
fn internal_subscription_gets_each_message_once_across_shards() {
    use crate::broker::embed::InternalSub;
    use crate::topic::TopicFilter;
    let mut m = Mesh::new(2);
    let (tx, rx) = crossbeam_channel::bounded(64);
    let sub = InternalSub {
        id: 7,
        filter: TopicFilter::parse("x/#").unwrap(),
        qos: QoS::AtLeastOnce,
        tx,
        dropped: std::sync::Arc::default(),
        share: None,
    };
    for (i, h) in m.shards.iter_mut().enumerate() {
        h.broker.add_internal(sub.clone(), i == 0);
    }
    drop(sub);
    // Network subscribers on both shards make every message cross shards too.
    let (s0, _) = m.connect(0, "s0", true);
    let (s1, _) = m.connect(1, "s1", true);
    m.subscribe(0, s0, "x/#", QoS::AtMostOnce);
    m.subscribe(1, s1, "x/#", QoS::AtMostOnce);
    let (p0, _) = m.connect(0, "p0", true);
    let (p1, _) = m.connect(1, "p1", true);
    m.shards[0].publish(p0, "x/0", b"a", QoS::AtMostOnce, false, None);
    m.shards[1].publish(p1, "x/1", b"b", QoS::AtMostOnce, false, None);
    m.settle();
    let mut got: Vec<String> = rx.try_iter().map(|m| m.topic.to_string()).collect();
    got.sort();
    assert_eq!(got, ["x/0", "x/1"]);
    for (shard, conn) in [(0, s0), (1, s1)] {
        m.shards[shard].expect_publish(conn);
        m.shards[shard].expect_publish(conn);
    }
    // Removed from every shard: the channel's senders are gone.
    for h in &mut m.shards {
        assert!(h.broker.remove_internal(7));
    }
    assert!(matches!(
        rx.try_recv(),
        Err(crossbeam_channel::TryRecvError::Disconnected)
    ));
}

/// A session that moves to another shard while offline (its new connection left before
/// the move completed) keeps being checked as its user: nothing its ACL denies is queued.
#[test]
fn offline_session_moved_across_shards_keeps_its_acl() {
    let mut m = Mesh::new(2);
    for h in &mut m.shards {
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
    }
    let mut c = connect("bob-device", V4, false);
    c.username = Some(ByteStr::from("bob"));
    let bob = m.shards[0].open(V4);
    m.shards[0].send(bob, Packet::Connect(Box::new(c.clone())));
    m.settle();
    m.subscribe(0, bob, "#", QoS::AtLeastOnce);
    m.shards[0].drop_conn(bob);
    m.settle();
    // Reconnects on shard 1 and leaves before its claim completes: the session moves
    // to shard 1 and stays offline there.
    let gone = m.shards[1].open(V4);
    m.shards[1].send(gone, Packet::Connect(Box::new(c.clone())));
    m.shards[1].drop_conn(gone);
    m.settle();
    assert!(m.shards[1]
        .broker
        .sessions
        .live_key_of(&c.client_id)
        .is_some());
    let (publ, _) = m.connect(1, "p", true);
    m.shards[1].publish(publ, "secret/x", b"no", QoS::AtLeastOnce, false, Some(1));
    m.shards[1].publish(publ, "bob/x", b"yes", QoS::AtLeastOnce, false, Some(2));
    m.settle();
    let bob = m.shards[1].open(V4);
    m.shards[1].send(bob, Packet::Connect(Box::new(c)));
    m.settle();
    assert!(matches!(m.shards[1].expect(bob), Packet::ConnAck(a) if a.session_present));
    assert_eq!(&m.shards[1].expect_publish(bob).payload[..], b"yes");
    m.shards[1].assert_idle(bob);
}

#[test]
fn messages_handed_back_are_reused_and_deliveries_stay_intact() {
    let mut m = Mesh::new(2);
    let (sub, _) = m.connect(1, "s", true);
    m.subscribe(1, sub, "t", QoS::AtMostOnce);
    let (publ, _) = m.connect(0, "p", true);
    m.settle();
    assert_eq!(m.shards[0].broker.cross.recycled(), 0);
    let rounds: [[&'static [u8]; 3]; 2] = [[b"a1", b"a2", b"a3"], [b"b1", b"b2", b"b3"]];
    for payloads in rounds {
        for payload in payloads {
            m.shards[0].publish(publ, "t", payload, QoS::AtMostOnce, false, None);
        }
        // Shard 1 delivers, then hands the three records back to shard 0, which keeps
        // their (emptied) allocations; the second round is written into them.
        m.settle();
        assert_eq!(m.shards[0].broker.cross.recycled(), 3);
        for want in payloads {
            let p = m.shards[1].expect_publish(sub);
            assert_eq!(&p.payload[..], want);
            assert_eq!(p.topic.as_str(), "t");
        }
        m.shards[1].assert_idle(sub);
    }
}
