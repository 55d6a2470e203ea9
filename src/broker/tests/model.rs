//! A model checker for the cross-shard protocols: N shards (sans-IO brokers driven by the
//! harness) whose mail goes through in-memory lanes, FIFO per (sender, receiver, lane) as
//! the mailbox rings are, and clients that act in a fixed order per connection.
//! [`explore`] runs every order in which the shards may take their mail (a control lane
//! may overtake a data lane, as in the mailbox) and in which the clients act, and calls a
//! check at the end of each execution. Steps delivered to different shards commute (each
//! touches only its receiver), except through the process-wide interest table
//! (`cross/interest.rs`): a shard reads it only through the snapshots its mail brings,
//! but the snapshot a change produces holds every earlier change, so two steps that
//! change it (on different shards) do not commute; each step's footprint on the table is
//! recorded when it runs and such pairs are explored in both orders. A DFS with sleep
//! sets visits one execution per class of equivalent orders without missing a distinct
//! one.
//! Executions are replayed from a fresh build, so brokers never need to be cloned.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, VecDeque};

use bytes::BytesMut;

use crate::broker::{ConnId, ShardMsg};
use crate::codec::{self, Packet, ProtocolVersion};
use crate::mailbox::Lane;

use super::harness::Harness;

/// Something a client does on its connection.
#[derive(Clone)]
pub(super) enum Action {
    /// Writes these packets (encoded together, as one TCP segment).
    Send(Vec<Packet>),
    /// Closes its socket (nothing if the broker closed it already).
    Close,
}

/// One step of an execution: deliver the oldest message of one lane from one shard to
/// another (or to itself), or let a client take its next action.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Step {
    Mail { from: usize, to: usize, data: bool },
    Client(usize),
}

/// A client connection and the actions it has still to take.
struct Script {
    shard: usize,
    conn: ConnId,
    version: ProtocolVersion,
    actions: VecDeque<Action>,
}

pub(super) struct Sim {
    pub(super) shards: Vec<Harness>,
    /// In flight: (sender, receiver, data lane) -> (enqueue number, message).
    mail: BTreeMap<(usize, usize, bool), VecDeque<(u64, ShardMsg)>>,
    sent: u64,
    scripts: Vec<Script>,
    /// Each client action taken: (script, SUBACKs every script's client had received
    /// before it), for checks of what must follow a SUBACK.
    pub(super) actions_taken: Vec<(usize, Vec<usize>)>,
}

/// What a step did to the interest table: whether it changed it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
struct Footprint {
    wrote: bool,
}

impl Footprint {
    /// Two changes on different shards see each other's order (in their snapshots).
    fn conflicts(self, other: Self) -> bool {
        self.wrote && other.wrote
    }
}

impl Sim {
    pub(super) fn new(n: usize) -> Self {
        Self {
            shards: Harness::new_shards(&Harness::default_config(), n),
            mail: BTreeMap::new(),
            sent: 0,
            scripts: Vec::new(),
            actions_taken: Vec::new(),
        }
    }

    /// SUBACKs the client of script `i` has received.
    pub(super) fn subacks(&self, i: usize) -> usize {
        let s = &self.scripts[i];
        self.shards[s.shard].clients[&s.conn]
            .received
            .iter()
            .filter(|p| matches!(p, Packet::SubAck(_)))
            .count()
    }

    /// Applies `step` and says what it did to the interest table.
    fn apply_traced(&mut self, step: Step) -> Footprint {
        let table = std::sync::Arc::clone(self.shards[0].broker.routing.interest_table());
        let before = table.version();
        self.apply(step);
        Footprint {
            wrote: table.version() != before,
        }
    }

    /// Opens a connection on `shard` whose `actions` the exploration will schedule;
    /// returns its index (for [`Sim::conn`]).
    pub(super) fn script(
        &mut self,
        shard: usize,
        version: ProtocolVersion,
        actions: Vec<Action>,
    ) -> usize {
        let conn = self.shards[shard].open(version);
        self.script_on(shard, conn, version, actions)
    }

    /// Schedules `actions` on a connection opened (and maybe connected) during set-up.
    pub(super) fn script_on(
        &mut self,
        shard: usize,
        conn: ConnId,
        version: ProtocolVersion,
        actions: Vec<Action>,
    ) -> usize {
        self.scripts.push(Script {
            shard,
            conn,
            version,
            actions: actions.into(),
        });
        self.scripts.len() - 1
    }

    /// The connection of script `i` (and its shard).
    pub(super) fn conn(&self, i: usize) -> (usize, ConnId) {
        (self.scripts[i].shard, self.scripts[i].conn)
    }

    pub(super) fn receiver(&self, step: Step) -> usize {
        match step {
            Step::Mail { to, .. } => to,
            Step::Client(i) => self.scripts[i].shard,
        }
    }

    /// The first message of each lane, except a data message with a control message of
    /// the same pair queued before it: the mailbox drains the control lane first, so a
    /// control message overtakes data but never the reverse.
    pub(super) fn enabled(&self) -> Vec<Step> {
        let mut out: Vec<Step> = self
            .mail
            .iter()
            .filter_map(|(&(from, to, data), q)| {
                let (n, _) = q.front()?;
                let control_first = data
                    && self
                        .mail
                        .get(&(from, to, false))
                        .and_then(VecDeque::front)
                        .is_some_and(|(c, _)| c < n);
                (!control_first).then_some(Step::Mail { from, to, data })
            })
            .collect();
        for (i, s) in self.scripts.iter().enumerate() {
            if !s.actions.is_empty() {
                out.push(Step::Client(i));
            }
        }
        out
    }

    /// Drives `shard`'s outputs and moves its mail into the lanes.
    pub(super) fn collect(&mut self, shard: usize) {
        let h = &mut self.shards[shard];
        h.drive();
        while let Some((to, msg)) = h.broker.poll_shard_message() {
            let data = msg.lane() == Lane::Data;
            self.sent += 1;
            let n = self.sent;
            self.mail
                .entry((shard, to, data))
                .or_default()
                .push_back((n, msg));
        }
    }

    pub(super) fn apply(&mut self, step: Step) {
        let shard = self.receiver(step);
        match step {
            Step::Mail { from, to, data } => {
                let (_, msg) = self
                    .mail
                    .get_mut(&(from, to, data))
                    .unwrap()
                    .pop_front()
                    .unwrap();
                let h = &mut self.shards[to];
                let now = h.now;
                h.broker.on_shard_message(from, msg, now);
            }
            Step::Client(i) => {
                let seen = (0..self.scripts.len()).map(|j| self.subacks(j)).collect();
                self.actions_taken.push((i, seen));
                let s = &mut self.scripts[i];
                let (conn, version) = (s.conn, s.version);
                let action = s.actions.pop_front().unwrap();
                let h = &mut self.shards[shard];
                if !h.clients[&conn].closed {
                    match action {
                        Action::Send(packets) => {
                            let mut buf = BytesMut::new();
                            for p in &packets {
                                codec::encode(p, version, &mut buf).unwrap();
                            }
                            h.send_bytes(conn, &buf);
                        }
                        Action::Close => h.drop_conn(conn),
                    }
                }
            }
        }
        self.collect(shard);
    }

    /// Delivers everything in flight in a fixed order (set-up before an exploration, and
    /// the checks after one). Clients do not act.
    pub(super) fn settle(&mut self) {
        for s in 0..self.shards.len() {
            self.collect(s);
        }
        loop {
            let Some(step) = self
                .enabled()
                .into_iter()
                .find(|s| matches!(s, Step::Mail { .. }))
            else {
                return;
            };
            self.apply(step);
        }
    }
}

/// Explores every execution of the scripts `build` sets up (up to commuting deliveries
/// to different shards), calling `check` with the finished state and the steps taken;
/// returns how many executions were checked.
pub(super) fn explore(build: impl Fn() -> Sim, mut check: impl FnMut(&mut Sim, &[Step])) -> usize {
    struct Node {
        sleep: Vec<(Step, Footprint)>,
        done: Vec<(Step, Footprint)>,
    }
    let mut path: Vec<Step> = Vec::new();
    let mut nodes = vec![Node {
        sleep: Vec::new(),
        done: Vec::new(),
    }];
    let mut sim = build();
    let mut executions = 0;
    loop {
        let enabled = sim.enabled();
        let node = nodes.last_mut().unwrap();
        let next = enabled.iter().copied().find(|s| {
            !node.sleep.iter().any(|(t, _)| t == s) && !node.done.iter().any(|(t, _)| t == s)
        });
        if let Some(step) = next {
            let receiver = sim.receiver(step);
            assert!(path.len() < 300, "no end in sight: {path:?}");
            // A step's footprint depends only on its receiver's state, which the steps
            // of other receivers taken since do not change.
            let footprint = sim.apply_traced(step);
            let sleep: Vec<(Step, Footprint)> = node
                .sleep
                .iter()
                .chain(node.done.iter())
                .copied()
                .filter(|&(s, f)| sim.receiver(s) != receiver && !f.conflicts(footprint))
                .collect();
            node.done.push((step, footprint));
            path.push(step);
            nodes.push(Node {
                sleep,
                done: Vec::new(),
            });
            continue;
        }
        if enabled.is_empty() {
            executions += 1;
            check(&mut sim, &path);
        }
        // Back to the deepest node with an unexplored step, replaying its prefix.
        nodes.pop();
        path.pop();
        if nodes.is_empty() {
            return executions;
        }
        sim = build();
        for &step in &path {
            sim.apply(step);
        }
    }
}
