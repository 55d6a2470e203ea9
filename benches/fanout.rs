//! Fan-out of one QoS 0 PUBLISH to 1,000 subscribers of one shard (3.1.1 and a 5.0 mix):
//! match, one shared frame per (version, retain) class, output queues. Measured per
//! publish, i.e. per 1,000 deliveries. `v5` and `v5_topic_aliases` are 1,000 MQTT 5
//! subscribers without and with a Topic Alias Maximum: the bytes each publish queues
//! (printed first) show what outbound topic aliases save, the times what they cost.
//!
//! `cargo bench --bench fanout`, or for instruction counts under callgrind:
//! `valgrind --tool=callgrind target/release/deps/fanout-HASH count VARIANT N` publishes
//! N times (after the two that bind the alias); the cost of a publish is the difference
//! between two counts divided by the difference in N.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: bad arguments should stop it

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, Criterion, Throughput};

use common::{Fanout, SUBSCRIBERS};

const VARIANTS: [(&str, usize, Option<u16>); 4] = [
    ("v311", 0, None),
    ("v311_v5_mix", 2, None),
    ("v5", 1, None),
    ("v5_topic_aliases", 1, Some(10)),
];

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout_1k");
    g.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    g.measurement_time(Duration::from_secs(3));
    for (name, v5_every, aliases) in VARIANTS {
        let mut f = Fanout::with_topic_aliases(v5_every, aliases);
        // The first two deliveries of a topic carry it (the second binds the alias).
        for _ in 0..2 {
            f.publish_once();
        }
        println!(
            "fanout_1k/{name}: {} bytes queued per publish (topic {:?})",
            f.publish_once(),
            "fan/out/topic"
        );
        g.bench_function(name, |bench| {
            bench.iter(|| black_box(f.publish_once()));
        });
    }
    g.finish();
}

criterion_group!(benches, bench);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, mode, variant, n, ..] = &args[..] {
        if mode == "count" {
            let (_, v5_every, aliases) = VARIANTS
                .into_iter()
                .find(|v| v.0 == variant)
                .expect("variant: v311 | v311_v5_mix | v5 | v5_topic_aliases");
            let n: usize = n.parse().expect("N publishes");
            let mut f = Fanout::with_topic_aliases(v5_every, aliases);
            let mut bytes = 0;
            for _ in 0..n + 2 {
                bytes += f.publish_once();
            }
            println!("{variant}: {n} publishes, {bytes} bytes queued");
            return;
        }
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
