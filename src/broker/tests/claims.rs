//! Model check of the cross-shard claim protocol (CONNECT -> `Claim` at the home shard ->
//! `Takeover` at the previous owner -> `Moved` -> `Installed` / `Forget`): several
//! connections with one client id race on 2 or 3 shards, and every order in which the
//! shards may take their mail (per-pair FIFO, as the rings are) and in which the clients
//! act is explored. Deliveries to different shards commute (each touches only its
//! receiver), so a DFS with sleep sets visits one execution per class of equivalent
//! orders without missing a distinct one. At the end of each execution: exactly one
//! contender holds a connected session (none if the winner itself went away), every other
//! one was closed, no CONNECT waits forever, the home directory points at the session,
//! and a message published afterwards reaches the survivor's subscription.
#![allow(clippy::unwrap_used)]

use smallvec::smallvec;

use crate::broker::ConnState;
use crate::codec::{ByteStr, Packet, ProtocolVersion, QoS, Subscribe};

use super::harness::connect;
use super::model::{explore, Action, Sim, Step};

const V4: ProtocolVersion = ProtocolVersion::V311;
const ID: &str = "storm";

/// One racing connection: its shard, whether it asks for a clean session, whether the
/// client closes its socket at some point (any point after its CONNECT was sent), and
/// whether it pipelines a SUBSCRIBE behind its CONNECT (the storm clients do; it adds the
/// interest protocol's messages to the interleavings).
#[derive(Clone, Copy)]
struct Contender {
    shard: usize,
    clean: bool,
    closes: bool,
    subscribes: bool,
}

fn subscribe_x(packet_id: u16) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id,
        filters: smallvec![(
            ByteStr::from("x/#"),
            crate::codec::SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            }
        )],
        properties: Default::default(),
    })
}

fn build(n: usize, contenders: &[Contender]) -> Sim {
    let mut sim = Sim::new(n);
    for c in contenders {
        let mut first = vec![Packet::Connect(Box::new(connect(ID, V4, c.clean)))];
        if c.subscribes {
            first.push(subscribe_x(1));
        }
        let mut actions = vec![Action::Send(first)];
        if c.closes {
            actions.push(Action::Close);
        }
        sim.script(c.shard, V4, actions);
    }
    sim
}

/// Whether contender `i` holds a connected session that got its CONNACK.
fn active(sim: &Sim, i: usize) -> bool {
    let (shard, conn) = sim.conn(i);
    let h = &sim.shards[shard];
    let connacked = h.clients[&conn]
        .received
        .iter()
        .any(|p| matches!(p, Packet::ConnAck(a) if a.reason.0 == 0));
    let state = h.broker.conns.get(conn).map(|c| c.state);
    connacked && !h.clients[&conn].closed && matches!(state, Some(ConnState::Active(_)))
}

/// The invariants of a finished execution; `trace` names it in failures.
fn check(sim: &mut Sim, contenders: &[Contender], trace: &[Step]) {
    let n = sim.shards.len();
    let home = crate::broker::home_shard(ID, n);
    let id = ByteStr::from(ID);
    for (s, h) in sim.shards.iter().enumerate() {
        let b = &h.broker;
        assert!(
            b.cross.claims_quiet(),
            "shard {s}: a CONNECT waits for its home or a takeover never ran: {trace:?}"
        );
        assert!(
            b.sessions.key_of(&id) == b.sessions.live_key_of(&id),
            "shard {s}: stub left behind: {trace:?}"
        );
    }
    let mut survivors = Vec::new();
    for i in 0..contenders.len() {
        let (shard, conn) = sim.conn(i);
        if active(sim, i) {
            survivors.push(i);
        } else {
            assert!(
                sim.shards[shard].clients[&conn].closed,
                "contender {i} is neither connected nor closed: {trace:?}"
            );
        }
    }
    assert!(
        survivors.len() <= 1,
        "{} survivors ({survivors:?}): {trace:?}",
        survivors.len()
    );
    if !contenders.iter().any(|c| c.closes) {
        assert_eq!(survivors.len(), 1, "no survivor: {trace:?}");
    }
    // Sessions of the id (not stubs) across shards, and where the home thinks it is.
    let holders: Vec<usize> = (0..n)
        .filter(|&s| sim.shards[s].broker.sessions.live_key_of(&id).is_some())
        .collect();
    assert!(holders.len() <= 1, "sessions on {holders:?}: {trace:?}");
    let Some(&i) = survivors.first() else {
        return;
    };
    let (s, conn) = sim.conn(i);
    assert_eq!(holders, vec![s], "survivor's session: {trace:?}");
    assert_eq!(
        sim.shards[home].broker.cross.claim_owner(&id),
        Some(s),
        "home directory: {trace:?}"
    );
    // The survivor's subscription works: publish from every shard.
    if !contenders[i].subscribes {
        sim.shards[s].send(conn, subscribe_x(2));
        sim.settle();
    }
    sim.shards[s]
        .clients
        .get_mut(&conn)
        .unwrap()
        .received
        .clear();
    for from in 0..n {
        let h = &mut sim.shards[from];
        let p = h.open(V4);
        h.send(
            p,
            Packet::Connect(Box::new(connect(&format!("pub{from}"), V4, true))),
        );
        h.publish(p, "x/1", b"m", QoS::AtMostOnce, false, None);
        sim.settle();
    }
    let got = sim.shards[s].clients[&conn]
        .received
        .iter()
        .filter(|p| matches!(p, Packet::Publish(_)))
        .count();
    assert_eq!(got, n, "survivor got {got} of {n} messages: {trace:?}");
}

fn run(n: usize, contenders: &[Contender]) -> usize {
    explore(
        || build(n, contenders),
        |sim, trace| check(sim, contenders, trace),
    )
}

fn contenders(
    shards: &[usize],
    clean: bool,
    closes: Option<usize>,
    subscribes: bool,
) -> Vec<Contender> {
    shards
        .iter()
        .enumerate()
        .map(|(i, &shard)| Contender {
            shard,
            clean,
            closes: closes == Some(i),
            subscribes,
        })
        .collect()
}

#[test]
fn claims_of_three_contenders_on_two_shards_resolve_in_every_order() {
    for shards in [[0, 1, 0], [1, 0, 1]] {
        let runs = run(2, &contenders(&shards, false, None, true));
        eprintln!("2 shards {shards:?} persistent: {runs} executions");
        let runs = run(2, &contenders(&shards, true, None, false));
        eprintln!("2 shards {shards:?} clean: {runs} executions");
    }
}

#[test]
fn claims_of_three_contenders_on_three_shards_resolve_in_every_order() {
    for clean in [false, true] {
        let runs = run(3, &contenders(&[0, 1, 2], clean, None, false));
        eprintln!("3 shards clean {clean}: {runs} executions");
    }
}

#[test]
fn claims_resolve_when_a_contender_leaves_at_any_moment() {
    for closes in 0..3 {
        let runs = run(2, &contenders(&[0, 1, 0], false, Some(closes), false));
        eprintln!("contender {closes} leaves: {runs} executions");
    }
}
