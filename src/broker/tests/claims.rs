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

use std::collections::{BTreeMap, VecDeque};

use bytes::BytesMut;
use smallvec::smallvec;

use crate::codec::{self, ByteStr, Packet, ProtocolVersion, QoS, Subscribe};

use super::harness::{connect, Harness};
use crate::broker::{ConnId, ConnState, ShardMsg};

const V4: ProtocolVersion = ProtocolVersion::V311;
const ID: &str = "storm";

/// One racing connection: its shard, whether it asks for a clean session, and whether
/// the client closes its socket at some point (any point after its CONNECT was sent).
#[derive(Clone, Copy)]
struct Contender {
    shard: usize,
    clean: bool,
    closes: bool,
    /// Pipelines a SUBSCRIBE behind its CONNECT (the storm clients do; it adds the
    /// interest protocol's messages to the interleavings).
    subscribes: bool,
}

/// A step of an execution: deliver the oldest message from one shard to another (or to
/// itself), or let a contender act (send CONNECT + SUBSCRIBE, then maybe close).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Step {
    Mail { from: usize, to: usize },
    Client(usize),
}

struct Sim {
    shards: Vec<Harness>,
    mail: BTreeMap<(usize, usize), VecDeque<ShardMsg>>,
    contenders: Vec<Contender>,
    conns: Vec<ConnId>,
    /// Actions each contender has taken (0: none, 1: connected, 2: closed).
    acted: Vec<u8>,
}

impl Sim {
    fn new(n: usize, contenders: &[Contender]) -> Self {
        let mut shards: Vec<Harness> = (0..n)
            .map(|i| Harness::new_shard(Harness::default_config(), i, n))
            .collect();
        let conns = contenders
            .iter()
            .map(|c| shards[c.shard].open(V4))
            .collect();
        Self {
            shards,
            mail: BTreeMap::new(),
            contenders: contenders.to_vec(),
            conns,
            acted: vec![0; contenders.len()],
        }
    }

    fn receiver(&self, step: Step) -> usize {
        match step {
            Step::Mail { to, .. } => to,
            Step::Client(i) => self.contenders[i].shard,
        }
    }

    fn enabled(&self) -> Vec<Step> {
        let mut out: Vec<Step> = self
            .mail
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(&(from, to), _)| Step::Mail { from, to })
            .collect();
        for (i, c) in self.contenders.iter().enumerate() {
            if self.acted[i] == 0 || (self.acted[i] == 1 && c.closes) {
                out.push(Step::Client(i));
            }
        }
        out
    }

    fn collect(&mut self, shard: usize) {
        let h = &mut self.shards[shard];
        h.drive();
        while let Some((to, msg)) = h.broker.poll_shard_message() {
            self.mail.entry((shard, to)).or_default().push_back(msg);
        }
    }

    fn apply(&mut self, step: Step) {
        let shard = self.receiver(step);
        match step {
            Step::Mail { from, to } => {
                let msg = self.mail.get_mut(&(from, to)).unwrap().pop_front().unwrap();
                let h = &mut self.shards[to];
                let now = h.now;
                h.broker.on_shard_message(from, msg, now);
            }
            Step::Client(i) => {
                let c = self.contenders[i];
                let conn = self.conns[i];
                let h = &mut self.shards[shard];
                if self.acted[i] == 0 {
                    // CONNECT with a SUBSCRIBE pipelined behind it, as the storm clients do.
                    let mut buf = BytesMut::new();
                    let connect = Packet::Connect(Box::new(connect(ID, V4, c.clean)));
                    codec::encode(&connect, V4, &mut buf).unwrap();
                    let subscribe = Packet::Subscribe(Subscribe {
                        packet_id: 1,
                        filters: smallvec![(
                            ByteStr::from("x/#"),
                            codec::SubscriptionOptions {
                                qos: QoS::AtLeastOnce,
                                ..Default::default()
                            }
                        )],
                        properties: Default::default(),
                    });
                    if c.subscribes {
                        codec::encode(&subscribe, V4, &mut buf).unwrap();
                    }
                    if !h.clients[&conn].closed {
                        h.send_bytes(conn, &buf);
                    }
                } else if !h.clients[&conn].closed {
                    h.drop_conn(conn);
                }
                self.acted[i] += 1;
            }
        }
        self.collect(shard);
    }

    /// Delivers everything left in a fixed order (for the checks after an execution).
    fn settle(&mut self) {
        loop {
            let Some(&(from, to)) = self
                .mail
                .iter()
                .find(|(_, q)| !q.is_empty())
                .map(|(k, _)| k)
            else {
                return;
            };
            self.apply(Step::Mail { from, to });
        }
    }

    /// Whether contender `i` holds a connected session that got its CONNACK.
    fn active(&self, i: usize) -> bool {
        let h = &self.shards[self.contenders[i].shard];
        let conn = self.conns[i];
        let connacked = h.clients[&conn]
            .received
            .iter()
            .any(|p| matches!(p, Packet::ConnAck(a) if a.reason.0 == 0));
        let state = h.broker.conns.get(conn).map(|c| c.state);
        connacked && !h.clients[&conn].closed && matches!(state, Some(ConnState::Active(_)))
    }

    /// The invariants of a finished execution; `trace` names it in failures.
    fn check(&mut self, trace: &[Step]) {
        let n = self.shards.len();
        let home = crate::broker::home_shard(ID, n);
        let id = ByteStr::from(ID);
        for (s, h) in self.shards.iter().enumerate() {
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
        for i in 0..self.contenders.len() {
            let conn = self.conns[i];
            let h = &self.shards[self.contenders[i].shard];
            let closed = h.clients[&conn].closed;
            if self.active(i) {
                survivors.push(i);
            } else {
                assert!(
                    closed,
                    "contender {i} is neither connected nor closed: {trace:?}"
                );
            }
        }
        assert!(
            survivors.len() <= 1,
            "{} survivors ({survivors:?}): {trace:?}",
            survivors.len()
        );
        let anyone_left = self.contenders.iter().any(|c| c.closes);
        if !anyone_left {
            assert_eq!(survivors.len(), 1, "no survivor: {trace:?}");
        }
        // Sessions of the id (not stubs) across shards, and where the home thinks it is.
        let holders: Vec<usize> = (0..n)
            .filter(|&s| {
                let b = &self.shards[s].broker;
                b.sessions.live_key_of(&id).is_some()
            })
            .collect();
        assert!(holders.len() <= 1, "sessions on {holders:?}: {trace:?}");
        if let Some(&i) = survivors.first() {
            let s = self.contenders[i].shard;
            assert_eq!(holders, vec![s], "survivor's session: {trace:?}");
            assert_eq!(
                self.shards[home].broker.cross.claim_owner(&id),
                Some(s),
                "home directory: {trace:?}"
            );
            // The survivor's subscription works: publish from every shard.
            let conn = self.conns[i];
            if !self.contenders[i].subscribes {
                self.shards[s].send(
                    conn,
                    Packet::Subscribe(Subscribe {
                        packet_id: 2,
                        filters: smallvec![(ByteStr::from("x/#"), Default::default())],
                        properties: Default::default(),
                    }),
                );
                self.collect(s);
                self.settle();
            }
            self.shards[s]
                .clients
                .get_mut(&conn)
                .unwrap()
                .received
                .clear();
            for from in 0..n {
                let h = &mut self.shards[from];
                let p = h.open(V4);
                h.send(
                    p,
                    Packet::Connect(Box::new(connect(&format!("pub{from}"), V4, true))),
                );
                h.publish(p, "x/1", b"m", QoS::AtMostOnce, false, None);
                self.collect(from);
                self.settle();
            }
            let got = self.shards[s].clients[&conn]
                .received
                .iter()
                .filter(|p| matches!(p, Packet::Publish(_)))
                .count();
            assert_eq!(got, n, "survivor got {got} of {n} messages: {trace:?}");
        }
    }
}

/// Explores every execution of `contenders` on `n` shards (up to commuting deliveries to
/// different shards); returns how many were checked.
fn explore(n: usize, contenders: &[Contender]) -> usize {
    struct Node {
        sleep: Vec<Step>,
        done: Vec<Step>,
    }
    let independent = |sim: &Sim, a: Step, b: Step| sim.receiver(a) != sim.receiver(b);
    let mut path: Vec<Step> = Vec::new();
    let mut nodes = vec![Node {
        sleep: Vec::new(),
        done: Vec::new(),
    }];
    let mut sim = Sim::new(n, contenders);
    let mut executions = 0;
    loop {
        let enabled = sim.enabled();
        let node = nodes.last_mut().unwrap();
        let next = enabled
            .iter()
            .copied()
            .find(|s| !node.sleep.contains(s) && !node.done.contains(s));
        if let Some(step) = next {
            let sleep: Vec<Step> = node
                .sleep
                .iter()
                .chain(node.done.iter())
                .copied()
                .filter(|&s| independent(&sim, s, step))
                .collect();
            node.done.push(step);
            assert!(path.len() < 200, "no end in sight: {path:?}");
            sim.apply(step);
            path.push(step);
            nodes.push(Node {
                sleep,
                done: Vec::new(),
            });
            continue;
        }
        if enabled.is_empty() {
            executions += 1;
            sim.check(&path);
        }
        // Backtrack to the deepest node with an unexplored step, replaying its prefix.
        nodes.pop();
        path.pop();
        if nodes.is_empty() {
            return executions;
        }
        sim = Sim::new(n, contenders);
        for &step in &path {
            sim.apply(step);
        }
    }
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
        let runs = explore(2, &contenders(&shards, false, None, true));
        eprintln!("2 shards {shards:?} persistent: {runs} executions");
        let runs = explore(2, &contenders(&shards, true, None, false));
        eprintln!("2 shards {shards:?} clean: {runs} executions");
    }
}

#[test]
fn claims_of_three_contenders_on_three_shards_resolve_in_every_order() {
    for clean in [false, true] {
        let runs = explore(3, &contenders(&[0, 1, 2], clean, None, false));
        eprintln!("3 shards clean {clean}: {runs} executions");
    }
}

#[test]
fn claims_resolve_when_a_contender_leaves_at_any_moment() {
    for closes in 0..3 {
        let runs = explore(2, &contenders(&[0, 1, 0], false, Some(closes), false));
        eprintln!("contender {closes} leaves: {runs} executions");
    }
}
