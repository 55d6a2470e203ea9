//! Fan-out as the runtime drives it, QoS 0 and QoS 1: a round is 4 PUBLISHes read from
//! one publisher at once, each matched to 1,000 MQTT 3.1.1 subscribers of one shard,
//! every subscriber's output written as by a `writev` that takes everything
//! (`io_slices` + `consume`, then `on_writable`), and at QoS 1 every subscriber's 4
//! PUBACKs read back in one buffer. So it covers the shared QoS 0 frame, the QoS 1
//! window, header template, output queue and acknowledgement path, not the sockets.
//!
//! `cargo bench --bench fanout_batch` (criterion, per delivery), or for instruction
//! counts under callgrind (independent of the load on the machine):
//! `valgrind --tool=callgrind target/release/deps/fanout_batch-HASH count qos1 N [shuffled]`
//! runs N rounds (`shuffled`: subscriptions made in an order unrelated to the sessions'); the cost of a delivery is the difference between two counts divided
//! by 4,000 times the difference in N (set-up cancels out). Every round checks what it
//! queued, so a broken acknowledgement path (a window that never reopens) fails loudly.
#![allow(clippy::unwrap_used)] // a benchmark: set-up failures should stop it

use std::hint::black_box;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use criterion::{criterion_group, Criterion, Throughput};
use shardmq::internals::broker::{Broker, ConnId};
use shardmq::internals::codec::{
    encode, ByteStr, Connect, Packet, Properties, ProtocolVersion, Publish, QoS, Subscribe,
    SubscriptionOptions,
};
use shardmq::Config;
use smallvec::smallvec;

const SUBSCRIBERS: usize = 1000;
/// PUBLISHes per round (read at once, as a publisher's pipelined messages are).
const BATCH: usize = 4;
const TOPIC: &str = "fan/out/topic";

struct Batch {
    broker: Broker,
    publisher: ConnId,
    qos: QoS,
    /// Messages each subscriber has received (its packet ids are 1, 2, ... in order).
    delivered: usize,
    /// The publisher's next packet id.
    next_pub_id: u16,
    now: Instant,
    acks: BytesMut,
}

fn packet_id(n: usize) -> u16 {
    // Ids run 1..=65535 and wrap to 1 (0 is never used).
    u16::try_from(n % 65535 + 1).unwrap()
}

impl Batch {
    /// `shuffled`: the subscribers subscribe in an order unrelated to their connection
    /// order, as 1,000 clients connecting at once do (the index then lists them out of
    /// session order); else in connection order.
    fn new(qos: QoS, shuffled: bool) -> Self {
        let now = Instant::now();
        let config = Config {
            sys_interval: Duration::ZERO,
            ..Config::default()
        };
        let mut broker = Broker::new(Arc::new(config), now);
        for conn in 0..=SUBSCRIBERS {
            let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
            broker.on_accept(conn, peer, 0, now);
            let mut buf = BytesMut::new();
            let connect = Packet::Connect(Box::new(Connect {
                protocol: ProtocolVersion::V311,
                clean_start: true,
                keep_alive: 0,
                client_id: ByteStr::from(format!("c{conn}")),
                will: None,
                username: None,
                password: None,
                properties: Properties::default(),
            }));
            encode(&connect, ProtocolVersion::V311, &mut buf).unwrap();
            broker.on_read(conn, &mut buf, now);
        }
        for i in 0..SUBSCRIBERS {
            // 337 is prime to 1,000: a permutation.
            let conn = if shuffled { i * 337 % SUBSCRIBERS } else { i };
            let options = SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            };
            let sub = Packet::Subscribe(Subscribe {
                packet_id: 1,
                filters: smallvec![(ByteStr::from(TOPIC), options)],
                properties: Properties::default(),
            });
            let mut buf = BytesMut::new();
            encode(&sub, ProtocolVersion::V311, &mut buf).unwrap();
            broker.on_read(conn, &mut buf, now);
        }
        let mut b = Self {
            broker,
            publisher: SUBSCRIBERS,
            qos,
            delivered: 0,
            next_pub_id: 0,
            now,
            acks: BytesMut::new(),
        };
        b.write_all();
        b
    }

    /// Writes every output as a `writev` that takes everything; returns the bytes
    /// written to subscribers.
    fn write_all(&mut self) -> usize {
        let mut total = 0;
        while let Some(conn) = self.broker.poll_transmit() {
            let Some(out) = self.broker.output(conn) else {
                continue;
            };
            let mut n = 0;
            while !out.is_empty() {
                let len = {
                    let mut iov = [IoSlice::new(&[]); 64];
                    let k = out.io_slices(&mut iov);
                    iov[..k].iter().map(|s| s.len()).sum::<usize>()
                };
                n += len;
                out.consume(len);
            }
            if conn != self.publisher {
                total += black_box(n);
            }
            self.broker.on_writable(conn, self.now);
        }
        total
    }

    /// One round; returns the bytes written to the subscribers.
    fn round(&mut self) -> usize {
        let mut buf = BytesMut::new();
        for i in 0..BATCH {
            let id = (self.qos != QoS::AtMostOnce).then(|| {
                self.next_pub_id = packet_id(usize::from(self.next_pub_id));
                self.next_pub_id
            });
            let p = Publish {
                dup: false,
                qos: self.qos,
                retain: false,
                topic: ByteStr::from(TOPIC),
                packet_id: id,
                properties: Properties::default(),
                payload: bytes::Bytes::from_static(&[b'x'; 16]),
            };
            black_box(i);
            encode(&Packet::Publish(p), ProtocolVersion::V311, &mut buf).unwrap();
        }
        let publisher = self.publisher;
        self.broker.on_read(publisher, &mut buf, self.now);
        let written = self.write_all();
        if self.qos != QoS::AtMostOnce {
            for conn in 0..SUBSCRIBERS {
                self.acks.clear();
                for k in 0..BATCH {
                    self.acks.put_slice(&[0x40, 0x02]);
                    self.acks.put_u16(packet_id(self.delivered + k));
                }
                self.broker.on_read(conn, &mut self.acks, self.now);
            }
            self.write_all(); // nothing for the subscribers, unless something is wrong
        }
        self.delivered += BATCH;
        written
    }
}

/// Bytes a round writes to the subscribers: 4 frames of (fixed header, topic, packet id
/// at QoS 1, payload) each.
fn expected(qos: QoS) -> usize {
    let id = if qos == QoS::AtMostOnce { 0 } else { 2 };
    SUBSCRIBERS * BATCH * (2 + 2 + TOPIC.len() + id + 16)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout_batch");
    g.throughput(Throughput::Elements((SUBSCRIBERS * BATCH) as u64));
    g.measurement_time(Duration::from_secs(3));
    let variants = [
        ("qos0", QoS::AtMostOnce, false),
        ("qos0_shuffled", QoS::AtMostOnce, true),
        ("qos1", QoS::AtLeastOnce, false),
        ("qos1_shuffled", QoS::AtLeastOnce, true),
    ];
    for (name, qos, shuffled) in variants {
        let mut b = Batch::new(qos, shuffled);
        assert_eq!(b.round(), expected(qos), "{name}: first round");
        g.bench_function(name, |bench| {
            bench.iter(|| assert_eq!(b.round(), expected(qos)));
        });
    }
    g.finish();
}

criterion_group!(benches, bench);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("count") {
        let qos = match args.get(2).map(String::as_str) {
            Some("qos1") => QoS::AtLeastOnce,
            _ => QoS::AtMostOnce,
        };
        let n: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
        let shuffled = args.get(4).map(String::as_str) == Some("shuffled");
        let mut b = Batch::new(qos, shuffled);
        for r in 0..n {
            assert_eq!(b.round(), expected(qos), "round {r}");
        }
        println!("{n} rounds of {BATCH} x {SUBSCRIBERS} deliveries");
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
