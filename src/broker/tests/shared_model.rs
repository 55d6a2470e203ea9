//! Model check of shared subscription groups across shards (`routing/shared.rs`: member
//! counts carried by `ShareInterest`, the publishing shard's choice of shard, a message
//! passed on when its member left on the way, hand-over of unacknowledged messages):
//! members join and leave while messages are published on another shard, and every order
//! in which the shards may take their mail and the clients act is explored (see
//! `model.rs`). At the end of each execution every message reached exactly one member.
#![allow(clippy::unwrap_used)]

use smallvec::smallvec;

use crate::codec::{ByteStr, Packet, ProtocolVersion, QoS, Subscribe, SubscriptionOptions};

use super::harness::{connect, publish};
use super::model::{explore, Action, Sim, Step};
use crate::broker::ConnId;

const V4: ProtocolVersion = ProtocolVersion::V311;
const SHARE: &str = "$share/g/t";

fn subscribe(qos: QoS) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: smallvec![(
            ByteStr::from(SHARE),
            SubscriptionOptions {
                qos,
                ..Default::default()
            }
        )],
        properties: Default::default(),
    })
}

fn unsubscribe() -> Packet {
    Packet::Unsubscribe(crate::codec::Unsubscribe {
        packet_id: 2,
        filters: smallvec![ByteStr::from(SHARE)],
        properties: Default::default(),
    })
}

/// A client connected on `shard` during set-up (and, with `qos`, a member of the group).
fn member(sim: &mut Sim, shard: usize, id: &str, qos: Option<QoS>) -> ConnId {
    let h = &mut sim.shards[shard];
    let conn = h.open(V4);
    h.send(conn, Packet::Connect(Box::new(connect(id, V4, true))));
    sim.settle();
    if let Some(qos) = qos {
        sim.shards[shard].send(conn, subscribe(qos));
        sim.settle();
    }
    sim.shards[shard]
        .clients
        .get_mut(&conn)
        .unwrap()
        .received
        .clear();
    conn
}

/// Schedules connection `p` on shard 0 to publish "m1" then "m2" to "t" at `qos`.
fn publish_two(sim: &mut Sim, p: ConnId, qos: QoS) {
    let id = |n| (qos != QoS::AtMostOnce).then_some(n);
    let m1 = publish("t", b"m1", qos, false, id(1));
    let m2 = publish("t", b"m2", qos, false, id(2));
    let actions = vec![
        Action::Send(vec![Packet::Publish(m1)]),
        Action::Send(vec![Packet::Publish(m2)]),
    ];
    sim.script_on(0, p, V4, actions);
}

/// How many times each payload in `payloads` reached the connections `members`.
fn deliveries(sim: &Sim, members: &[(usize, ConnId)], payload: &[u8]) -> usize {
    members
        .iter()
        .map(|&(s, c)| {
            sim.shards[s].clients[&c]
                .received
                .iter()
                .filter(|p| matches!(p, Packet::Publish(p) if p.payload.as_ref() == payload))
                .count()
        })
        .sum()
}

/// Shard 1 has a member; a second member joins on shard 2 while shard 0 publishes two
/// QoS 0 messages: each reaches exactly one member, whatever the order.
#[test]
fn a_member_joining_while_messages_fly_never_doubles_or_loses_one() {
    let build = || {
        let mut sim = Sim::new(3);
        member(&mut sim, 1, "a", Some(QoS::AtMostOnce));
        let p = member(&mut sim, 0, "p", None);
        let join = vec![
            Packet::Connect(Box::new(connect("b", V4, true))),
            subscribe(QoS::AtMostOnce),
        ];
        sim.script(2, V4, vec![Action::Send(join)]);
        publish_two(&mut sim, p, QoS::AtMostOnce);
        sim
    };
    let runs = explore(build, |sim: &mut Sim, trace: &[Step]| {
        sim.settle();
        let a = (1, 0);
        let b = (2, sim.conn(0).1);
        for m in [&b"m1"[..], b"m2"] {
            assert_eq!(deliveries(sim, &[a, b], m), 1, "{m:?}: {trace:?}");
        }
    });
    eprintln!("join: {runs} executions");
    assert!(runs > 1);
}

/// Members on shards 1 and 2; the one on shard 1 unsubscribes (without acknowledging
/// anything) while shard 0 publishes two QoS 1 messages: whatever the order, the member
/// on shard 2 ends up with each exactly once (directly, passed on by shard 1 after its
/// member left, or handed over by the leaving member).
#[test]
fn a_member_leaving_while_messages_fly_strands_nothing() {
    let build = || {
        let mut sim = Sim::new(3);
        let a = member(&mut sim, 1, "a", Some(QoS::AtLeastOnce));
        member(&mut sim, 2, "b", Some(QoS::AtLeastOnce));
        let p = member(&mut sim, 0, "p", None);
        sim.script_on(1, a, V4, vec![Action::Send(vec![unsubscribe()])]);
        publish_two(&mut sim, p, QoS::AtLeastOnce);
        sim
    };
    let runs = explore(build, |sim: &mut Sim, trace: &[Step]| {
        sim.settle();
        // Connections are numbered per shard from 0: "a" and "b" are the first.
        let b = (2, 0);
        for m in [&b"m1"[..], b"m2"] {
            assert_eq!(deliveries(sim, &[b], m), 1, "{m:?}: {trace:?}");
        }
        for s in 0..3 {
            assert_eq!(
                sim.shards[s].broker.routing.groups().counts(SHARE),
                [0, 0, 1],
                "shard {s}: {trace:?}"
            );
        }
    });
    eprintln!("leave: {runs} executions");
    assert!(runs > 1);
}
