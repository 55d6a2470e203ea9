//! Fan-out of one QoS 0 PUBLISH to 1,000 subscribers of one shard (3.1.1 and a 5.0 mix):
//! match, one shared frame per (version, retain) class, output queues. Measured per
//! publish, i.e. per 1,000 deliveries.
//!
//! `cargo bench --bench fanout`

#![allow(clippy::unwrap_used)] // benchmark set-up: a failure should abort loudly

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardmq::internals::broker::{Broker, ConnId};
use shardmq::internals::codec::{
    encode, ByteStr, Connect, Packet, Properties, ProtocolVersion, Publish, QoS, Subscribe,
    SubscriptionOptions,
};
use shardmq::Config;
use smallvec::smallvec;

const SUBSCRIBERS: usize = 1000;

fn connect_and_subscribe(
    b: &mut Broker,
    conn: ConnId,
    version: ProtocolVersion,
    filter: &str,
    now: Instant,
) {
    let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
    b.on_accept(conn, peer, 0, now);
    let mut buf = BytesMut::new();
    let connect = Packet::Connect(Box::new(Connect {
        protocol: version,
        clean_start: true,
        keep_alive: 0,
        client_id: ByteStr::from(format!("c{conn}")),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    }));
    encode(&connect, version, &mut buf).unwrap();
    if !filter.is_empty() {
        let sub = Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: smallvec![(ByteStr::from(filter), SubscriptionOptions::default())],
            properties: Properties::default(),
        });
        encode(&sub, version, &mut buf).unwrap();
    }
    b.on_read(conn, &mut buf, now);
}

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

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout_1k");
    g.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    g.measurement_time(Duration::from_secs(3));
    for (name, v5_every) in [("v311", 0usize), ("v311_v5_mix", 2)] {
        let now = Instant::now();
        let config = Config {
            sys_interval: Duration::ZERO,
            ..Config::default()
        };
        let mut b = Broker::new(Arc::new(config), now);
        for conn in 0..SUBSCRIBERS {
            let version = if v5_every != 0 && conn % v5_every == 0 {
                ProtocolVersion::V5
            } else {
                ProtocolVersion::V311
            };
            // Half exact, half wildcard subscriptions.
            let filter = if conn % 2 == 0 {
                "fan/out/topic"
            } else {
                "fan/+/topic"
            };
            connect_and_subscribe(&mut b, conn, version, filter, now);
        }
        let publisher = SUBSCRIBERS;
        connect_and_subscribe(&mut b, publisher, ProtocolVersion::V311, "", now);
        drain(&mut b);
        let mut frame = BytesMut::new();
        let p = Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: ByteStr::from("fan/out/topic"),
            packet_id: None,
            properties: Properties::default(),
            payload: Bytes::from_static(b"0123456789abcdef"),
        };
        encode(&Packet::Publish(p), ProtocolVersion::V311, &mut frame).unwrap();
        g.bench_function(name, |bench| {
            bench.iter(|| {
                let mut buf = frame.clone();
                b.on_read(publisher, &mut buf, now);
                black_box(drain(&mut b));
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
