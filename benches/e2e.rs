//! In-process end to end through one shard: a publisher's PUBLISH frames go into the
//! sans-IO broker with `on_read`, are matched, encoded and queued for an in-memory
//! subscriber, whose output is drained as the runtime's writev would. No sockets, so this
//! measures the broker's per-message cost (decode, route, fan-out, output queue).
//!
//! `cargo bench --bench e2e`

#![allow(clippy::unwrap_used)] // benchmark set-up: a failure should abort loudly

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use shardmq::internals::broker::{Broker, ConnId};
use shardmq::internals::codec::{
    encode, ByteStr, Connect, Packet, Properties, ProtocolVersion, Publish, QoS, Subscribe,
    SubscriptionOptions,
};
use shardmq::Config;
use smallvec::smallvec;

const V4: ProtocolVersion = ProtocolVersion::V311;
const BATCH: usize = 1000;

fn bytes_of(packet: &Packet) -> BytesMut {
    let mut b = BytesMut::new();
    encode(packet, V4, &mut b).unwrap();
    b
}

/// Accepts `conn`, sends CONNECT (and SUBSCRIBE to `filter` at `qos`), drains output.
fn client(b: &mut Broker, conn: ConnId, id: &str, filter: Option<(&str, QoS)>, now: Instant) {
    let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
    b.on_accept(conn, peer, 0, now);
    let mut buf = bytes_of(&Packet::Connect(Box::new(Connect {
        protocol: V4,
        clean_start: true,
        keep_alive: 0,
        client_id: ByteStr::from(id),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    })));
    if let Some((f, qos)) = filter {
        buf.extend_from_slice(&bytes_of(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: smallvec![(
                ByteStr::from(f),
                SubscriptionOptions {
                    qos,
                    ..Default::default()
                }
            )],
            properties: Properties::default(),
        })));
    }
    b.on_read(conn, &mut buf, now);
    drain(b);
}

/// The runtime's transmit step with a socket that takes everything.
fn drain(b: &mut Broker) -> usize {
    let mut n = 0;
    while let Some(conn) = b.poll_transmit() {
        if let Some(out) = b.output(conn) {
            n += out.len();
            out.clear();
        }
    }
    n
}

fn frames(qos: QoS, payload: usize) -> BytesMut {
    let mut buf = BytesMut::new();
    for i in 0..BATCH {
        let p = Publish {
            dup: false,
            qos,
            retain: false,
            topic: ByteStr::from("sensors/building-7/floor-3/temp"),
            packet_id: (qos != QoS::AtMostOnce).then_some(u16::try_from(i % 60000 + 1).unwrap()),
            properties: Properties::default(),
            payload: Bytes::from(vec![0x5A; payload]),
        };
        encode(&Packet::Publish(p), V4, &mut buf).unwrap();
    }
    buf
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("e2e");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.measurement_time(Duration::from_secs(3));
    // (name, QoS, payload bytes, PUBLISH frames per `on_read`)
    for (name, qos, payload, per_read) in [
        ("qos0_16B", QoS::AtMostOnce, 16, BATCH),
        ("qos1_16B", QoS::AtLeastOnce, 16, BATCH),
        // A publisher with 20 messages in flight: each read carries about 20 PUBLISHes,
        // whose PUBACKs go out as one chunk.
        ("qos1_16B_reads_of_20", QoS::AtLeastOnce, 16, 20),
        // Payloads above 512 bytes are shared with the read buffer, not copied next to
        // their header: the output queue keeps them as message bodies.
        ("qos0_1KiB", QoS::AtMostOnce, 1024, BATCH),
    ] {
        let now = Instant::now();
        let config = Config {
            sys_interval: Duration::ZERO,
            max_queued_messages: 0, // unlimited: the bench drains in bulk
            max_inflight_messages: u16::MAX,
            ..Config::default()
        };
        let mut b = Broker::new(Arc::new(config), now);
        client(&mut b, 0, "sub", Some(("sensors/+/+/temp", qos)), now);
        client(&mut b, 1, "pub", None, now);
        let input = frames(qos, payload);
        // The subscriber's packet ids are consecutive (every earlier one was acknowledged).
        let mut next_id: u16 = 0;
        g.bench_function(name, |bench| {
            bench.iter_batched_ref(
                || input.clone(),
                |buf| {
                    let frame_len = buf.len() / BATCH;
                    while !buf.is_empty() {
                        let mut read = buf.split_to((per_read * frame_len).min(buf.len()));
                        b.on_read(1, &mut read, now);
                        black_box(drain(&mut b));
                    }
                    if qos != QoS::AtMostOnce {
                        // Complete the subscriber's inflight window so it never fills.
                        let mut acks = BytesMut::new();
                        for _ in 0..BATCH {
                            next_id = next_id.wrapping_add(1).max(1);
                            let [hi, lo] = next_id.to_be_bytes();
                            acks.extend_from_slice(&[0x40, 2, hi, lo]);
                        }
                        b.on_read(0, &mut acks, now);
                        drain(&mut b);
                    }
                },
                BatchSize::LargeInput,
            );
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
