//! Fan-out of one QoS 0 PUBLISH to 1,000 subscribers of one shard (3.1.1 and a 5.0 mix):
//! match, one shared frame per (version, retain) class, output queues. Measured per
//! publish, i.e. per 1,000 deliveries. `v5` and `v5_topic_aliases` are 1,000 MQTT 5
//! subscribers without and with a Topic Alias Maximum: the bytes each publish queues
//! (printed first) show what outbound topic aliases save, the times what they cost.
//!
//! `cargo bench --bench fanout`

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use common::{Fanout, SUBSCRIBERS};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout_1k");
    g.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    g.measurement_time(Duration::from_secs(3));
    let variants = [
        ("v311", 0usize, None),
        ("v311_v5_mix", 2, None),
        ("v5", 1, None),
        ("v5_topic_aliases", 1, Some(10)),
    ];
    for (name, v5_every, aliases) in variants {
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
criterion_main!(benches);
