//! Fan-out of one QoS 0 PUBLISH to 1,000 subscribers of one shard (3.1.1 and a 5.0 mix):
//! match, one shared frame per (version, retain) class, output queues. Measured per
//! publish, i.e. per 1,000 deliveries.
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
    for (name, v5_every) in [("v311", 0usize), ("v311_v5_mix", 2)] {
        let mut f = Fanout::new(v5_every);
        g.bench_function(name, |bench| {
            bench.iter(|| black_box(f.publish_once()));
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
