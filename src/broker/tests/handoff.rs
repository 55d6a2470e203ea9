//! Model check of a session move while messages for it are in flight: a persistent
//! session subscribed on shard 0 reconnects on shard 1 while a publisher (on a third
//! shard, whose messages reach the old and the new shard through different rings, or on
//! either end of the move) publishes to it. In every order of mail delivery (lanes
//! included) and client actions, the session gets each message exactly once, in the
//! publisher's order [MQTT-4.6.0-6]. Found on the earlier protocol: messages forwarded by
//! the stub overtaken by later ones the new shard delivered directly, and a third
//! shard's message lost when it reached the old shard after `Installed`.
#![allow(clippy::unwrap_used)]

use crate::codec::{AckKind, ByteStr, Packet, ProtocolVersion, QoS};

use super::harness::{connect, publish, Harness};
use super::model::{explore, Action, Sim, Step};

const V4: ProtocolVersion = ProtocolVersion::V311;

/// How one exploration is set up.
#[derive(Clone, Copy)]
struct Setup {
    /// Shards (the session's old one is 0, its new one 1).
    shards: usize,
    /// Where the publisher is.
    publisher: usize,
    /// The session is still connected on shard 0 when its client reconnects on shard 1
    /// (a takeover), else it is offline.
    online: bool,
    /// Another subscriber on shard 1, so the publisher's messages go there directly
    /// before the move; without it, shard 1's interest is new with the move.
    other: bool,
    /// QoS 1 messages the publisher sends.
    messages: u16,
}

fn build(setup: Setup) -> Sim {
    let Setup {
        shards,
        publisher,
        online,
        other,
        messages,
    } = setup;
    let mut sim = Sim::new(shards);
    // Set-up, settled before the exploration: the session subscribed on shard 0, maybe
    // a second subscriber on shard 1, the publisher connected.
    let old = sim.shards[0].open(V4);
    sim.shards[0].send(old, Packet::Connect(Box::new(connect("mover", V4, false))));
    sim.settle();
    sim.shards[0].send(old, subscribe("t", 1));
    if other {
        let other = sim.shards[1].open(V4);
        sim.shards[1].send(other, Packet::Connect(Box::new(connect("other", V4, true))));
        sim.settle();
        sim.shards[1].send(other, subscribe("t", 1));
    }
    let publisher_conn = sim.shards[publisher].open(V4);
    sim.shards[publisher].send(
        publisher_conn,
        Packet::Connect(Box::new(connect("publisher", V4, true))),
    );
    sim.settle();
    if !online {
        sim.shards[0].drop_conn(old);
        sim.settle();
    }
    // Explored: the reconnection on shard 1 and the publishes on shard 2.
    sim.script(
        1,
        V4,
        vec![Action::Send(vec![Packet::Connect(Box::new(connect(
            "mover", V4, false,
        )))])],
    );
    let sends = (1..=messages)
        .map(|i| {
            let payload: &'static [u8] = [&b"m1"[..], b"m2", b"m3"][usize::from(i - 1)];
            Action::Send(vec![Packet::Publish(publish(
                "t",
                payload,
                QoS::AtLeastOnce,
                false,
                Some(i),
            ))])
        })
        .collect();
    sim.script_on(publisher, publisher_conn, V4, sends);
    sim
}

fn subscribe(filter: &str, packet_id: u16) -> Packet {
    Packet::Subscribe(crate::codec::Subscribe {
        packet_id,
        filters: smallvec::smallvec![(
            ByteStr::from(filter),
            crate::codec::SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            }
        )],
        properties: Default::default(),
    })
}

/// The payloads the session's new connection received (acknowledging each, so the
/// window never holds one back), after everything settled.
fn received(sim: &mut Sim) -> Vec<Vec<u8>> {
    let (shard, conn) = sim.conn(0);
    let mut got = Vec::new();
    loop {
        sim.settle();
        let h: &mut Harness = &mut sim.shards[shard];
        let Some(packet) = h.recv(conn) else {
            return got;
        };
        if let Packet::Publish(p) = packet {
            got.push(p.payload.to_vec());
            if let Some(id) = p.packet_id {
                h.ack(conn, AckKind::PubAck, id);
            }
        }
    }
}

fn check(sim: &mut Sim, messages: u16, trace: &[Step]) {
    let got = received(sim);
    let want: Vec<Vec<u8>> = (1..=messages)
        .map(|i| format!("m{i}").into_bytes())
        .collect();
    assert_eq!(
        got,
        want,
        "session got {:?}: {trace:?}",
        got.iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect::<Vec<_>>()
    );
}

fn run(setup: Setup) -> usize {
    explore(
        || build(setup),
        |sim, trace| check(sim, setup.messages, trace),
    )
}

/// A third shard publishes while the session moves from shard 0 to shard 1.
#[test]
fn messages_from_a_third_shard_during_a_move_arrive_once_and_in_order() {
    for (online, other) in [(false, true), (true, true), (false, false)] {
        let setup = Setup {
            shards: 3,
            publisher: 2,
            online,
            other,
            messages: 2,
        };
        let runs = run(setup);
        eprintln!("online {online}, other {other}: {runs} executions");
    }
}

/// The publisher is on the old or the new shard of the moving session.
#[test]
fn messages_from_either_end_of_a_move_arrive_once_and_in_order() {
    for publisher in [0, 1] {
        for other in [false, true] {
            let setup = Setup {
                shards: 2,
                publisher,
                online: false,
                other,
                messages: 3,
            };
            let runs = run(setup);
            eprintln!("publisher on {publisher}, other {other}: {runs} executions");
        }
    }
}
