//! Codec micro-benchmarks: decode and encode of PUBLISH (16 B and 1 KiB payload, 3.1.1
//! and 5.0), CONNECT, PUBACK and SUBSCRIBE.
//!
//! Decode runs over a read buffer holding `BATCH` back-to-back frames, as the runtime
//! does after a socket read (the buffer fill is set-up, not measured); encode appends
//! into one reused `BytesMut`.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use shardmq::internals::codec::{
    decode, encode, Ack, AckKind, ByteStr, Connect, Packet, Properties, ProtocolVersion, Publish,
    QoS, ReasonCode, Subscribe, SubscriptionOptions,
};
use smallvec::smallvec;

const BATCH: usize = 1000;

fn publish(payload: usize) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: ByteStr::from("sensors/building-7/floor-3/temp"),
        packet_id: None,
        properties: Properties::default(),
        payload: Bytes::from(vec![0x5A; payload]),
    })
}

fn cases() -> Vec<(&'static str, Packet, ProtocolVersion)> {
    use ProtocolVersion::{V311, V5};
    let connect = Packet::Connect(Box::new(Connect {
        protocol: V311,
        clean_start: true,
        keep_alive: 60,
        client_id: ByteStr::from("loadgen-000123"),
        will: None,
        username: Some(ByteStr::from("user")),
        password: Some(Bytes::from_static(b"secret")),
        properties: Properties::default(),
    }));
    let puback = Packet::Ack(Ack {
        kind: AckKind::PubAck,
        packet_id: 4242,
        reason: ReasonCode::SUCCESS,
        properties: Properties::default(),
    });
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: 7,
        filters: smallvec![(
            ByteStr::from("sensors/+/floor-3/#"),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..SubscriptionOptions::default()
            }
        )],
        properties: Properties::default(),
    });
    vec![
        ("publish_16B_v311", publish(16), V311),
        ("publish_16B_v5", publish(16), V5),
        ("publish_1KiB_v311", publish(1024), V311),
        ("publish_1KiB_v5", publish(1024), V5),
        ("connect_v311", connect, V311),
        ("puback_v311", puback.clone(), V311),
        ("puback_v5", puback, V5),
        ("subscribe_v311", subscribe, V311),
    ]
}

fn bench_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for (name, packet, version) in cases() {
        let mut frame = BytesMut::new();
        encode(&packet, version, &mut frame).unwrap_or_else(|e| panic!("{name}: {e}"));
        let frames = frame.repeat(BATCH);
        g.throughput(Throughput::Elements(BATCH as u64));
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                || BytesMut::from(&frames[..]),
                |buf| {
                    while let Ok(Some(p)) = decode(buf, version, 0) {
                        black_box(p);
                    }
                },
                BatchSize::SmallInput,
            );
        });
    }
    g.finish();
}

fn bench_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    for (name, packet, version) in cases() {
        let mut out = BytesMut::with_capacity(4096);
        g.throughput(Throughput::Elements(1));
        g.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                let r = encode(black_box(&packet), version, &mut out);
                black_box((r, out.len()))
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bench_decode, bench_encode);
criterion_main!(benches);
