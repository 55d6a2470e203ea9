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

// --- concurrent changes of overlapping wildcard filters ---------------------------------

/// Filters the shards' clients choose from: overlapping wildcard filters, a
/// wildcard-free one, and one only for '$' topics.
const FILTERS: &[&str] = &["a/+", "a/#", "+/b", "#", "+/+", "a/b", "$SYS/#", "+/b/#"];
/// Topics every shard's view is checked against.
const TOPICS: &[&str] = &["a", "a/b", "a/c", "x/b", "a/b/c", "x/b/c", "$SYS/x", "b"];

/// The subscriptions a client holds once it has taken `actions` (a Close ends them all:
/// its session is clean).
fn remaining(actions: &[Action]) -> Vec<&'static str> {
    let mut held: Vec<&'static str> = Vec::new();
    for action in actions {
        match action {
            Action::Close => return Vec::new(),
            Action::Send(packets) => {
                for p in packets {
                    match p {
                        Packet::Subscribe(s) => {
                            for (f, _) in &s.filters {
                                let f = FILTERS.iter().find(|x| **x == f.as_str()).unwrap();
                                if !held.contains(f) {
                                    held.push(f);
                                }
                            }
                        }
                        Packet::Unsubscribe(u) => {
                            for f in &u.filters {
                                held.retain(|x| *x != f.as_str());
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    held
}

/// Sets up one connected client per entry of `scripts` (shard, actions).
fn build_clients(shards: usize, scripts: &[(usize, Vec<Action>)]) -> Sim {
    let mut sim = Sim::new(shards);
    for (i, (shard, actions)) in scripts.iter().enumerate() {
        let conn = connected(&mut sim, *shard, &format!("c{i}"));
        sim.script_on(*shard, conn, V4, actions.clone());
    }
    sim
}

/// Once every client acted and all mail is delivered, each shard routes each topic to
/// exactly the other shards that the naive matcher finds among the subscriptions that
/// remain, and the process-wide table holds exactly those.
fn check_views(sim: &mut Sim, scripts: &[(usize, Vec<Action>)], trace: &[Step]) {
    sim.settle();
    let shards = sim.shards.len();
    let held: Vec<(usize, Vec<&str>)> = scripts
        .iter()
        .map(|(shard, actions)| (*shard, remaining(actions)))
        .collect();
    for topic in TOPICS {
        let want: u64 = held
            .iter()
            .filter(|(_, fs)| fs.iter().any(|f| crate::topic::matches(f, topic)))
            .fold(0, |acc, (s, _)| acc | 1 << s);
        for s in 0..shards {
            let dests = sim.shards[s].broker.routing.remote_dests(topic);
            assert_eq!(
                dests,
                want & !(1 << s),
                "shard {s} routes {topic} to {dests:b}, want {:b}: {trace:?}",
                want & !(1 << s)
            );
        }
    }
    let table = sim.shards[0].broker.routing.interest_table();
    for f in FILTERS {
        for s in 0..shards {
            let want = held.iter().any(|(hs, fs)| *hs == s && fs.contains(f));
            assert_eq!(table.has(f, s), want, "{f} on shard {s}: {trace:?}");
        }
    }
}

/// Clients on two shards change overlapping wildcard filters at the same time (every
/// order of their actions and of the shards' mail): every shard ends with the naive
/// matcher's view of what remains.
#[test]
fn overlapping_wildcard_changes_on_two_shards_converge_in_every_order() {
    let scripts = vec![
        (
            0,
            vec![
                Action::Send(vec![subscribe("a/+", 1)]),
                Action::Send(vec![unsubscribe("a/+", 2)]),
            ],
        ),
        (1, vec![Action::Send(vec![subscribe("a/#", 1)])]),
    ];
    let runs = explore(
        || build_clients(2, &scripts),
        |sim, trace| check_views(sim, &scripts, trace),
    );
    eprintln!("{runs} executions");
    assert!(runs > 1);
}

mod random {
    use proptest::prelude::*;

    use super::*;

    /// One client's action: subscribe, unsubscribe (to `FILTERS[i]`) or close.
    #[derive(Clone, Copy, Debug)]
    enum Op {
        Subscribe(usize),
        Unsubscribe(usize),
        Close,
    }

    impl Op {
        fn action(self) -> Action {
            match self {
                Self::Subscribe(f) => Action::Send(vec![subscribe(FILTERS[f], 1)]),
                Self::Unsubscribe(f) => Action::Send(vec![unsubscribe(FILTERS[f], 2)]),
                Self::Close => Action::Close,
            }
        }
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..FILTERS.len()).prop_map(Op::Subscribe),
            2 => (0..FILTERS.len()).prop_map(Op::Unsubscribe),
            1 => Just(Op::Close),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Random subscribe / unsubscribe / disconnect sequences of clients on three
        /// shards, run in a random order of client actions and mail deliveries (a
        /// control message never overtaken by data, as in the mailbox): the shards'
        /// views end as the naive matcher's over what remains.
        #[test]
        fn random_changes_on_three_shards_give_the_naive_matchers_view(
            ops in prop::collection::vec((0usize..3, prop::collection::vec(op(), 1..6)), 1..6),
            order in prop::collection::vec(any::<prop::sample::Index>(), 200),
        ) {
            let scripts: Vec<(usize, Vec<Action>)> = ops
                .iter()
                .map(|(shard, ops)| (*shard, ops.iter().map(|o| o.action()).collect()))
                .collect();
            let mut sim = build_clients(3, &scripts);
            let mut taken = Vec::new();
            for pick in &order {
                let enabled = sim.enabled();
                if enabled.is_empty() {
                    break;
                }
                let step = enabled[pick.index(enabled.len())];
                taken.push(step);
                sim.apply(step);
            }
            // What the random order left: clients act first, then the mail settles.
            while let Some(step) = sim
                .enabled()
                .into_iter()
                .find(|s| matches!(s, Step::Client(_)))
            {
                taken.push(step);
                sim.apply(step);
            }
            check_views(&mut sim, &scripts, &taken);
        }
    }
}
