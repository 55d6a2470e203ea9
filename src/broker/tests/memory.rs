//! What outlives a loop iteration never pins a read buffer (issue 9): a message kept in a
//! session queue, in the inflight window or in a full output holds a compacted copy of
//! its bytes, not a slice of the 64 KiB buffer it was read with; and the accounting
//! ([`Broker::held_bytes`]) counts what is really kept.
#![allow(clippy::unwrap_used)]

use bytes::BytesMut;

use crate::codec::{self, Packet, ProtocolVersion, QoS};

use super::harness::{connect, publish, Harness};
use crate::broker::{out_queue::CHUNK_OVERHEAD, Broker, ConnId};

const V4: ProtocolVersion = ProtocolVersion::V311;
const READ_BUFFER: usize = 64 * 1024;

/// One read of a busy publisher: a 64 KiB buffer of small QoS 0 PUBLISHes nobody
/// subscribes to, with one `payload`-byte message to `q` (QoS `qos`) among them.
fn busy_read(payload: &'static [u8], qos: QoS) -> BytesMut {
    let mut buf = BytesMut::with_capacity(READ_BUFFER);
    let noise = publish("noise/x", &[b'n'; 100], QoS::AtMostOnce, false, None);
    let mut i = 0;
    while buf.len() + 200 < READ_BUFFER {
        if i == 100 {
            let id = (qos != QoS::AtMostOnce).then_some(1);
            let p = publish("q", payload, qos, false, id);
            codec::encode(&Packet::Publish(p), V4, &mut buf).unwrap();
        } else {
            codec::encode(&Packet::Publish(noise.clone()), V4, &mut buf).unwrap();
        }
        i += 1;
    }
    assert!(buf.capacity() == READ_BUFFER, "the buffer did not grow");
    buf
}

/// Feeds `buf` to the broker as one read of `conn`, then runs the iteration's output.
/// Returns whether the read buffer could be reused afterwards, i.e. whether nothing the
/// broker kept still refers to it.
fn read_and_check_released(h: &mut Harness, conn: ConnId, mut buf: BytesMut) -> bool {
    let now = h.now;
    h.broker.on_read(conn, &mut buf, now);
    assert!(buf.is_empty());
    h.drive();
    buf.try_reclaim(READ_BUFFER / 2)
}

fn footprint_of(payload: &'static [u8], qos: QoS) -> usize {
    let p = publish("q", payload, qos, false, Some(1));
    crate::session::Message::new(p, std::time::Instant::now(), None).footprint()
}

fn queued(b: &Broker) -> u64 {
    b.held_bytes().0
}

/// `released` (the read buffer was free after the iteration) and the sessions keep
/// exactly one detached 10-byte message, as `max_queued_bytes` counts it.
fn assert_keeps_one_small_message(h: &Harness, released: bool, what: &str) {
    assert!(
        released,
        "{what} 10-byte message pins the 64 KiB read buffer"
    );
    let footprint = footprint_of(b"0123456789", QoS::AtLeastOnce);
    assert_eq!(queued(&h.broker), footprint as u64);
    assert!(footprint < 1024);
}

#[test]
fn a_message_queued_for_an_offline_session_does_not_pin_the_read_buffer() {
    let mut h = Harness::new(Harness::default_config());
    let (s, _) = h.connect_with(connect("s", V4, false));
    h.subscribe(s, "q", QoS::AtLeastOnce);
    h.send(s, Packet::Disconnect(Default::default()));
    let p = h.connect("p", V4);
    assert_eq!(queued(&h.broker), 0);

    let released = read_and_check_released(&mut h, p, busy_read(b"0123456789", QoS::AtLeastOnce));
    assert_keeps_one_small_message(&h, released, "a queued");

    let (s, _) = h.connect_with(connect("s", V4, false));
    assert_eq!(&h.expect_publish(s).payload[..], b"0123456789");
}

#[test]
fn an_inflight_message_does_not_pin_the_read_buffer() {
    let mut h = Harness::new(Harness::default_config());
    let s = h.connect("s", V4);
    h.subscribe(s, "q", QoS::AtLeastOnce);
    let p = h.connect("p", V4);

    let released = read_and_check_released(&mut h, p, busy_read(b"0123456789", QoS::AtLeastOnce));
    // Sent, but kept in the window until the subscriber's PUBACK.
    let m = h.expect_publish(s);
    assert_eq!(&m.payload[..], b"0123456789");
    assert_keeps_one_small_message(&h, released, "an inflight");
    h.ack(s, codec::AckKind::PubAck, m.packet_id.unwrap());
    assert_eq!(queued(&h.broker), 0);
}

#[test]
fn a_frame_left_in_a_full_output_does_not_pin_the_read_buffer() {
    // QoS 0 to a subscriber whose socket takes nothing: the frame stays in its output
    // queue past the iteration. Its 600-byte payload is shared, not inlined, so without
    // compaction it would be a slice of the publisher's read buffer.
    const PAYLOAD: &[u8] = &[b'p'; 600];
    let mut h = Harness::new(Harness::default_config());
    let s = h.connect("s", V4);
    h.subscribe(s, "q", QoS::AtMostOnce);
    let p = h.connect("p", V4);
    h.stalled.insert(s);

    let released = read_and_check_released(&mut h, p, busy_read(PAYLOAD, QoS::AtMostOnce));
    assert!(
        released,
        "a 600-byte frame in a full output pins the 64 KiB read buffer"
    );
    // Counted as held: header and payload, two chunks.
    let (_, output) = h.broker.held_bytes();
    // Fixed header byte, two remaining-length bytes, topic length and "q", payload.
    let frame = 1 + 2 + 2 + 1 + PAYLOAD.len();
    assert_eq!(output as usize, frame + 2 * CHUNK_OVERHEAD);
    h.unstall(s);
    assert_eq!(&h.expect_publish(s).payload[..], PAYLOAD);
}

// --- retained versions across shards ------------------------------------------------------

/// N shards joined by FIFO queues per ordered pair, delivered in an order the test picks
/// (the `Mesh` of `shards.rs` delivers in rounds; races need single steps).
struct Wires {
    shards: Vec<Harness>,
    /// `queues[from][to]`
    queues: Vec<Vec<std::collections::VecDeque<crate::broker::ShardMsg>>>,
    /// The publishing client on each shard.
    clients: Vec<ConnId>,
}

impl Wires {
    fn new(n: usize) -> Self {
        let shards = Harness::new_shards(&Harness::default_config(), n);
        let queues = (0..n)
            .map(|_| (0..n).map(|_| Default::default()).collect())
            .collect();
        let mut w = Self {
            shards,
            queues,
            clients: Vec::new(),
        };
        for i in 0..n {
            let h = &mut w.shards[i];
            let conn = h.open(V4);
            h.send(
                conn,
                Packet::Connect(Box::new(connect(&format!("c{i}"), V4, true))),
            );
            w.settle();
            match w.shards[i].expect(conn) {
                Packet::ConnAck(a) => assert_eq!(a.reason.0, 0),
                other => panic!("expected CONNACK, got {other:?}"),
            }
            w.clients.push(conn);
        }
        w
    }

    /// Moves every shard's outgoing mail into the queues (what a shard sends itself is
    /// looped back at once, as the runtime does).
    fn collect(&mut self) {
        loop {
            let mut looped = false;
            for (from, h) in self.shards.iter_mut().enumerate() {
                h.drive();
                while let Some((to, msg)) = h.broker.poll_shard_message() {
                    if to == from {
                        let now = h.now;
                        h.broker.on_shard_message(from, msg, now);
                        looped = true;
                    } else {
                        self.queues[from][to].push_back(msg);
                    }
                }
            }
            if !looped {
                return;
            }
        }
    }

    /// Delivers the oldest message from `from` to `to`; false if there was none.
    fn deliver(&mut self, from: usize, to: usize) -> bool {
        let Some(msg) = self.queues[from][to].pop_front() else {
            return false;
        };
        let h = &mut self.shards[to];
        let now = h.now;
        h.broker.on_shard_message(from, msg, now);
        self.collect();
        true
    }

    /// Delivers everything, oldest queue first, until quiet.
    fn settle(&mut self) {
        self.collect();
        let n = self.shards.len();
        while (0..n * n).any(|k| self.deliver(k / n, k % n)) {}
    }

    /// A retained PUBLISH (empty payload: delete) by shard `shard`'s client.
    fn retain(&mut self, shard: usize, topic: &str, payload: &'static [u8]) {
        let conn = self.clients[shard];
        self.shards[shard].publish(conn, topic, payload, QoS::AtMostOnce, true, None);
        self.collect();
    }

    fn retained(&self, shard: usize, topic: &str) -> Option<Vec<u8>> {
        let store = self.shards[shard].broker.routing.retained();
        store.get(topic).map(|m| m.payload.to_vec())
    }

    fn versions(&self, shard: usize) -> (usize, usize) {
        self.shards[shard].broker.cross.retain_versions()
    }
}

#[test]
fn unique_retained_deletes_leave_no_versions_behind() {
    let mut w = Wires::new(2);
    let mut most = 0;
    for batch in 0..100 {
        // 1000 topics set then deleted, in one read of the shard's client (set and
        // delete on one shard: on two they would race, and either may win).
        let shard = batch % 2;
        let mut buf = BytesMut::new();
        for i in 0..1000 {
            let topic: &str = &format!("unique/{batch}/{i}");
            for payload in [&b"v"[..], b""] {
                let p = crate::codec::Publish {
                    retain: true,
                    topic: crate::codec::ByteStr::from(topic),
                    payload: bytes::Bytes::copy_from_slice(payload),
                    ..Default::default()
                };
                codec::encode(&Packet::Publish(p), V4, &mut buf).unwrap();
            }
        }
        let (conn, h) = (w.clients[shard], &mut w.shards[shard]);
        let now = h.now;
        h.broker.on_read(conn, &mut buf, now);
        w.settle();
        for s in 0..2 {
            most = most.max(w.versions(s).0);
        }
    }
    for s in 0..2 {
        assert_eq!(w.shards[s].broker.routing.retained_len(), 0);
        assert_eq!(
            w.versions(s),
            (0, 0),
            "shard {s} keeps versions of 100k deleted topics"
        );
    }
    // Between batches at most one batch's topics are remembered.
    assert!(most <= 1000, "{most} versions held at once");
}

/// A tiny deterministic generator (xorshift) for the interleavings below.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[test]
fn retained_sets_and_deletes_converge_in_every_delivery_order() {
    const TOPICS: [&str; 2] = ["race/a", "race/b"];
    const VALUES: [&[u8]; 4] = [b"", b"one", b"two", b""];
    for seed in 1..=300u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut w = Wires::new(3);
        for _ in 0..40 {
            if rng.below(3) == 0 {
                let (shard, topic) = (rng.below(3), TOPICS[rng.below(2)]);
                w.retain(shard, topic, VALUES[rng.below(4)]);
            } else {
                // One message along a random pair (FIFO per pair, as the rings are).
                let (from, to) = (rng.below(3), rng.below(3));
                w.deliver(from, to);
            }
        }
        w.settle();
        for topic in TOPICS {
            let first = w.retained(0, topic);
            for s in 1..3 {
                assert_eq!(w.retained(s, topic), first, "seed {seed}: {topic} diverged");
            }
        }
        let live = TOPICS.iter().filter(|t| w.retained(0, t).is_some()).count();
        for s in 0..3 {
            assert_eq!(
                w.versions(s),
                (live, 0),
                "seed {seed}: shard {s} keeps expired tombstones"
            );
        }
    }
}

// --- SUBSCRIBE to '#' over a large retained store -----------------------------------------

#[test]
fn subscribe_to_everything_over_100k_retained_is_budgeted_from_the_first_match() {
    use crate::broker::routing::{RETAINED_BATCH, RETAINED_VISITS};
    const N: usize = 100_000;
    let mut h = Harness::new(Harness::default_config());
    let topic = |i: usize| format!("r/{:03}/{:03}", i / 1000, i % 1000);
    for i in 0..N {
        h.broker
            .routing
            .set_retained(crate::retained::RetainedMessage {
                topic: crate::codec::ByteStr::from(topic(i)),
                payload: bytes::Bytes::from_static(b"v"),
                qos: QoS::AtMostOnce,
                properties: Default::default(),
                source: None,
                expires_at: None,
            });
    }
    let s = h.connect("s", V4);
    let mut buf = BytesMut::new();
    let subscribe = Packet::Subscribe(crate::codec::Subscribe {
        packet_id: 1,
        filters: smallvec::smallvec![(
            crate::codec::ByteStr::from("#"),
            crate::codec::SubscriptionOptions::default()
        )],
        properties: Default::default(),
    });
    codec::encode(&subscribe, V4, &mut buf).unwrap();
    let now = h.now;
    h.broker.on_read(s, &mut buf, now);
    // The SUBSCRIBE's own step: one batch, within the budget, nothing collected ahead.
    let visits = h.broker.routing.job_visits();
    assert_eq!(visits.len(), 1, "the rest is deferred");
    assert!(
        visits[0] <= RETAINED_VISITS,
        "first step visited {} nodes",
        visits[0]
    );
    let out = h.broker.output(s).unwrap().len();
    assert!(
        out <= 5 + RETAINED_BATCH * 16,
        "first step queued {out} bytes"
    );

    // Each later step of the loop is bounded the same way; all arrive, SUBACK first,
    // then every retained message once, in the store's order.
    let mut steps = 1;
    while h.broker.has_deferred_work() {
        let now = h.now;
        assert!(h.broker.run_deferred(now));
        for v in h.broker.routing.job_visits() {
            assert!(v <= RETAINED_VISITS, "a step visited {v} nodes");
        }
        h.drive_output();
        steps += 1;
    }
    h.drive();
    assert!(steps >= N / RETAINED_BATCH, "{N} messages in {steps} steps");
    assert!(matches!(h.expect(s), Packet::SubAck(_)));
    for i in 0..N {
        let p = h.expect_publish(s);
        assert!(p.retain);
        assert_eq!(p.topic.as_str(), topic(i), "out of order at {i}");
    }
    h.assert_idle(s);
}

// --- bounded queues -------------------------------------------------------------------------

#[test]
fn held_subacks_are_bounded_per_connection() {
    use crate::broker::cross::MAX_HELD_SUBACKS;
    let mut w = Wires::new(2);
    let conn = w.clients[0];
    let subscribe = |i: usize| {
        let mut buf = BytesMut::new();
        let p = Packet::Subscribe(crate::codec::Subscribe {
            packet_id: u16::try_from(i % 60_000 + 1).unwrap(),
            filters: smallvec::smallvec![(
                crate::codec::ByteStr::from(format!("held/{i}")),
                crate::codec::SubscriptionOptions::default()
            )],
            properties: Default::default(),
        });
        codec::encode(&p, V4, &mut buf).unwrap();
        buf
    };
    // Shard 1 answers nothing: every SUBACK waits for its interest acknowledgement. The
    // client pipelines SUBSCRIBEs as fast as the broker reads them (one per read here).
    let mut sent = 0;
    while sent < 2000 && {
        let now = w.shards[0].now;
        w.shards[0].broker.wants_read(conn, now)
    } {
        let h = &mut w.shards[0];
        let now = h.now;
        h.broker.on_read(conn, &mut subscribe(sent), now);
        w.collect();
        sent += 1;
    }
    assert_eq!(sent, MAX_HELD_SUBACKS, "reading stops at the bound");
    assert_eq!(
        w.shards[0].broker.cross.held_subacks_for(conn),
        MAX_HELD_SUBACKS
    );
    assert_eq!(w.shards[0].broker.shard_report().stats.subscribe_paused, 1);
    w.shards[0].assert_idle(conn);

    // Shard 1 answers: the SUBACKs leave in order and reading resumes.
    w.settle();
    let now = w.shards[0].now;
    assert!(w.shards[0].broker.wants_read(conn, now));
    for i in 0..sent {
        match w.shards[0].expect(conn) {
            Packet::SubAck(a) => assert_eq!(usize::from(a.packet_id), i + 1),
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }
}
