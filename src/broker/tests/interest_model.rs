//! Model check of the interest protocol (`cross/interest.rs`) with the process-wide
//! interest table: a client subscribes (and unsubscribes, and subscribes again) on one
//! shard while clients on other shards publish, in every order in which the shards may
//! take their mail and the clients act (see `model.rs`: each shard routes by the newest
//! table snapshot its mail brought). At the end of each
//! execution: a message published after the subscriber had its SUBACK reached it, no
//! message reached it twice, and every shard's view of the interest agrees with the
//! subscriptions that remain. Run for a wildcard-free filter (the table) and a wildcard
//! filter (each shard's trie).
#![allow(clippy::unwrap_used)]

use smallvec::smallvec;

use crate::codec::{ByteStr, Packet, ProtocolVersion, QoS, Subscribe, SubscriptionOptions};

use super::harness::{connect, publish};
use super::model::{explore, Action, Sim, Step};
use crate::broker::ConnId;

const V4: ProtocolVersion = ProtocolVersion::V311;

fn subscribe(filter: &str, packet_id: u16) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id,
        filters: smallvec![(
            ByteStr::from(filter.to_owned()),
            SubscriptionOptions {
                qos: QoS::AtMostOnce,
                ..Default::default()
            }
        )],
        properties: Default::default(),
    })
}

fn unsubscribe(filter: &str, packet_id: u16) -> Packet {
    Packet::Unsubscribe(crate::codec::Unsubscribe {
        packet_id,
        filters: smallvec![ByteStr::from(filter.to_owned())],
        properties: Default::default(),
    })
}

/// A client connected on `shard` during set-up.
fn connected(sim: &mut Sim, shard: usize, id: &str) -> ConnId {
    let h = &mut sim.shards[shard];
    let conn = h.open(V4);
    h.send(conn, Packet::Connect(Box::new(connect(id, V4, true))));
    sim.settle();
    sim.shards[shard]
        .clients
        .get_mut(&conn)
        .unwrap()
        .received
        .clear();
    conn
}

/// How many PUBLISH packets with `payload` the client `conn` on `shard` received.
fn got(sim: &Sim, shard: usize, conn: ConnId, payload: &[u8]) -> usize {
    sim.shards[shard].clients[&conn]
        .received
        .iter()
        .filter(|p| matches!(p, Packet::Publish(p) if p.payload.as_ref() == payload))
        .count()
}

/// The scenario: the subscriber on shard 1 takes `subscriber` actions on `filter`; one
/// client on shard 0 and one on shard 2 each publish `per_publisher` messages to `topic`
/// (payloads "p0-1", "p2-1", ...; at most 2 each). Checks as in the module documentation, with
/// `subscribed_at_end` the subscriber's state once it has acted, and `needed` the SUBACK
/// count after which a message must arrive (its last subscription's).
fn run(filter: &str, topic: &'static str, subscriber: &[Packet], per_publisher: u16) -> usize {
    let subscribed_at_end = matches!(subscriber.last(), Some(Packet::Subscribe(_)));
    let needed = subscriber
        .iter()
        .filter(|p| matches!(p, Packet::Subscribe(_)))
        .count();
    let build = || {
        let mut sim = Sim::new(3);
        let sub = connected(&mut sim, 1, "sub");
        let actions = subscriber
            .iter()
            .map(|p| Action::Send(vec![p.clone()]))
            .collect();
        sim.script_on(1, sub, V4, actions);
        for shard in [0, 2] {
            let p = connected(&mut sim, shard, &format!("pub{shard}"));
            let actions = (1..=per_publisher)
                .map(|i| {
                    let payload: &'static [u8] = match (shard, i) {
                        (0, 1) => b"p0-1",
                        (0, _) => b"p0-2",
                        (_, 1) => b"p2-1",
                        _ => b"p2-2",
                    };
                    Action::Send(vec![Packet::Publish(publish(
                        topic,
                        payload,
                        QoS::AtMostOnce,
                        false,
                        None,
                    ))])
                })
                .collect();
            sim.script_on(shard, p, V4, actions);
        }
        sim
    };
    let runs = explore(build, |sim: &mut Sim, trace: &[Step]| {
        sim.settle();
        let (_, sub) = sim.conn(0);
        // Script 1 publishes from shard 0, script 2 from shard 2, in payload order.
        let mut sent = [0u16; 3];
        let taken = sim.actions_taken.clone();
        for (script, subacks_seen) in taken {
            if script == 0 {
                continue;
            }
            let shard = if script == 1 { 0 } else { 2 };
            sent[script] += 1;
            let payload = format!("p{shard}-{}", sent[script]).into_bytes();
            let n = got(sim, 1, sub, &payload);
            assert!(n <= 1, "{payload:?} delivered {n} times: {trace:?}");
            if subscribed_at_end && subacks_seen[0] >= needed {
                assert_eq!(n, 1, "{payload:?} published after the SUBACK: {trace:?}");
            }
        }
        assert_eq!(sim.subacks(0), needed, "{trace:?}");
        for s in [0, 2] {
            let dests = sim.shards[s].broker.routing.remote_dests(topic);
            let want = if subscribed_at_end { 0b010 } else { 0 };
            assert_eq!(
                dests, want,
                "shard {s} routes {topic} to {dests:b}: {trace:?}"
            );
        }
        let table = sim.shards[0].broker.routing.interest_table();
        assert_eq!(table.has(filter, 1), subscribed_at_end, "{trace:?}");
    });
    eprintln!("{filter}: {runs} executions");
    assert!(runs > 1);
    runs
}

/// A wildcard-free filter (kept in the process-wide table): a message published on
/// another shard after the SUBACK is delivered.
#[test]
fn exact_filter_publish_after_suback_on_any_shard_arrives() {
    run("a/b", "a/b", &[subscribe("a/b", 1)], 2);
}

/// The same for a wildcard filter (kept in each shard's trie).
#[test]
fn wildcard_filter_publish_after_suback_on_any_shard_arrives() {
    run("a/+", "a/b", &[subscribe("a/+", 1)], 2);
}

/// Subscribe, unsubscribe and subscribe again while messages fly: the table's bit of
/// the subscriber's shard follows, each shard ends with the right view, and what is
/// published after the second SUBACK arrives.
#[test]
fn exact_filter_resubscribed_while_messages_fly() {
    run(
        "a/b",
        "a/b",
        &[
            subscribe("a/b", 1),
            unsubscribe("a/b", 2),
            subscribe("a/b", 3),
        ],
        1,
    );
}

/// Subscribe then unsubscribe: every shard stops routing to the subscriber's shard and
/// the table forgets the filter.
#[test]
fn exact_filter_unsubscribed_leaves_no_interest() {
    run(
        "a/b",
        "a/b",
        &[subscribe("a/b", 1), unsubscribe("a/b", 2)],
        1,
    );
}
